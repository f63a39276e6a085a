"""Identifiers: time-ordered, so the runs table read backwards is newest first."""

from __future__ import annotations

import os
import threading
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32: no I, L, O, U
#: Every pair of characters, indexed by the 10 bits they encode: half the lookups.
_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]
_lock = threading.Lock()
_last = 0


def new_id(prefix: str = "") -> str:
    """A 26-character ULID-style id: 48 bits of milliseconds, then 80 random bits.

    Within this process ids are strictly increasing, even within one millisecond or
    if the clock steps back (the previous id plus one wins). Across processes they are
    ordered to the millisecond, which costs no coordination.
    """
    global _last
    n = (time.time_ns() // 1_000_000) << 80 | int.from_bytes(os.urandom(10), "big")
    with _lock:
        if n <= _last:
            n = _last + 1
        _last = n
    # 26 characters of 5 bits, most significant first: 13 pairs of 10 bits.
    pairs = _PAIRS
    return prefix + "".join([pairs[(n >> shift) & 1023] for shift in range(120, -1, -10)])

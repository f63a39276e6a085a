"""Identifiers: time-ordered, so the runs table read backwards is newest first."""

from __future__ import annotations

import os
import threading
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32: no I, L, O, U
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
    chars = []
    for _ in range(26):
        chars.append(_ALPHABET[n & 31])
        n >>= 5
    return prefix + "".join(reversed(chars))

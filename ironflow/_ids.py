"""Identifiers: time-ordered, so the runs table read backwards is newest first."""

from __future__ import annotations

import os
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32: no I, L, O, U


def new_id(prefix: str = "") -> str:
    """A 26-character ULID-style id: 48 bits of milliseconds, then 80 random bits.

    Ids made later sort later (to the millisecond); within one millisecond their order
    is random, which is fine for listing and costs no coordination between processes.
    """
    n = (time.time_ns() // 1_000_000) << 80 | int.from_bytes(os.urandom(10), "big")
    chars = []
    for _ in range(26):
        chars.append(_ALPHABET[n & 31])
        n >>= 5
    return prefix + "".join(reversed(chars))

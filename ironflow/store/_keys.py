"""How the state machine lays out its keys: one function per kind of key.

Keys are bytes ordered as unsigned bytes (see ``_backend.py``). Numbers are big-endian,
so byte order is numeric order; ``\\0`` separates the parts of a composite key, which
is why no name or id may hold one. A name given by a user is checked (by ``_checks``)
as its key is made, for every backend: an id no run can have is simply not found.
"""

from __future__ import annotations

import functools

from ironflow.store import _checks as checks

__all__ = [
    "partition_key",
    "projection_key",
    "run_key",
    "sep",
    "step_key",
    "step_position",
    "steps_prefix",
    "stream_key",
    "u64",
]


def u64(n: int) -> bytes:
    return n.to_bytes(8, "big")


def sep(*parts: str) -> bytes:
    return b"\x00".join(p.encode() for p in parts)


def step_key(run_id: str, position: int) -> bytes:
    return steps_prefix(run_id) + position.to_bytes(4, "big")


def steps_prefix(run_id: str) -> bytes:
    """What the keys of a run's steps begin with: a scan of it reads them in order."""
    return run_id.encode() + b"\x00"


def step_position(key: bytes) -> int:
    """The position a step key names (``step_key``'s last four bytes)."""
    return int.from_bytes(key[-4:], "big")


def run_key(run_id: str) -> bytes:
    """The key of a run id given by a user; an id no run can have is simply not found."""
    return checks.run_id(run_id).encode()


@functools.lru_cache(maxsize=1024)  # every append makes it several times: a pure function
def stream_key(stream_id: str) -> bytes:
    return checks.stream_id(stream_id).encode()


def projection_key(name: str) -> bytes:
    """The key of a projection name given by a user; an impossible name is simply not found."""
    return checks.projection_name(name).encode()


def partition_key(name: str, partition: str) -> bytes:
    return name.encode() + b"\x00" + checks.partition(partition, name).encode()

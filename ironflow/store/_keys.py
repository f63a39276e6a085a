"""How the state machine lays out its keys: one function per kind of key.

Keys are bytes ordered as unsigned bytes (see ``_backend.py``). Numbers are big-endian,
so byte order is numeric order; ``\\0`` separates the parts of a composite key, which
is why no name or id may hold one. A name given by a user is checked here, once, for
every backend: an id no run can have is simply not found.
"""

from __future__ import annotations

import re

from ironflow.errors import InvalidInputError, ProjectionNotFoundError, RunNotFoundError

__all__ = [
    "MAX_KEY_BYTES",
    "MAX_PARTITION_BYTES",
    "NAME",
    "partition_key",
    "projection_key",
    "run_key",
    "sep",
    "step_key",
    "stream_key",
    "u64",
]

#: The longest id or name (in UTF-8 bytes) the store keys anything by.
MAX_KEY_BYTES = 200
#: A name of an agent, tool or model as code gives it: letters, digits, '.', '_' or '-',
#: starting with a letter or digit (``@agent``, ``@tool``, ``ctx.spawn`` and the store
#: all check this one pattern).
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
#: The longest partition key of a partitioned projection.
MAX_PARTITION_BYTES = 250


def u64(n: int) -> bytes:
    return n.to_bytes(8, "big")


def sep(*parts: str) -> bytes:
    return b"\x00".join(p.encode() for p in parts)


def step_key(run_id: str, position: int) -> bytes:
    return run_id.encode() + b"\x00" + position.to_bytes(4, "big")


def _usable(value: object, limit: int = MAX_KEY_BYTES) -> bytes | None:
    """``value`` as key bytes, or None if it is not a string that can be one."""
    if not isinstance(value, str):
        return None
    try:
        key = value.encode()
    except UnicodeEncodeError:
        return None
    if not key or len(key) > limit or b"\x00" in key:
        return None
    return key


def run_key(run_id: str) -> bytes:
    """The key of a run id given by a user; an id no run can have is simply not found."""
    key = _usable(run_id)
    if key is None:
        raise RunNotFoundError(str(run_id))
    return key


def stream_key(stream_id: str) -> bytes:
    key = _usable(stream_id)
    if key is None:
        raise InvalidInputError(
            f"a stream id must be a string of 1 to {MAX_KEY_BYTES} bytes without NUL, "
            f"not {stream_id!r}"
        )
    return key


def projection_key(name: str) -> bytes:
    """The key of a projection name given by a user; an impossible name is simply not found."""
    key = _usable(name)
    if key is None:
        raise ProjectionNotFoundError(str(name))
    return key


def partition_key(name: str, partition: str) -> bytes:
    part = _usable(partition, MAX_PARTITION_BYTES) if partition != "" else b""
    if part is None:
        raise InvalidInputError(
            f"projection {name!r}: a partition key must be a string of at most "
            f"{MAX_PARTITION_BYTES} bytes without NUL, not {partition!r}; make partition_by "
            "return such a string"
        )
    return name.encode() + b"\x00" + part

"""The indexes behind suspended runs: timers by wake-up time, waits by what ends them.

A suspended run lives only in the store. Two LMDB databases find it again cheaply:

- ``timers``: key ``wake-up time (µs, big-endian) + run id``. Sorted by time, so the
  due ones are a prefix: a worker's idle poll reads one key to know none is due.
- ``waits``: key ``e\\0 <event name> \\0 <run id>`` for a run waiting for an event, and
  ``c\\0 <child run id> \\0 <run id>`` for one waiting for a child run to finish. An
  emit looks up its event's name, a finishing run its own id: one range read each.

Every key is derived from the run's :class:`~ironflow.store.Suspension`, so removing a
run's entries needs nothing but the run record.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping
from typing import Any

from ironflow.store._records import Suspension

__all__ = [
    "child_wait_key",
    "data_matches",
    "event_wait_prefix",
    "index_keys",
    "micros",
    "name_key",
    "timer_key",
    "timer_micros",
]

#: The first time (in seconds) past what a timer key's 64 bits of µs can hold.
_LAST_MICRO = (2**64 - 1) / 1_000_000

#: Event names longer than this (in bytes) are keyed by their digest: LMDB keys are short.
_MAX_NAME_KEY = 256


@functools.lru_cache(maxsize=4096)  # every event makes it several times: a pure function
def name_key(name: str) -> bytes:
    """An event name as part of a key: its bytes, or a digest for a very long one.

    A digest can collide only in theory; readers compare the stored name anyway.
    """
    raw = name.encode("utf-8", "surrogatepass")
    if len(raw) <= _MAX_NAME_KEY and b"\x00" not in raw:
        return raw
    return b"#" + hashlib.sha256(raw).hexdigest().encode()


def micros(seconds: float) -> int:
    """A time on the timers' grid: whole microseconds, clamped to what a key can hold.

    Timers are due by comparing on this grid, never by turning a key back into a
    float: ``int(t * 1e6) / 1e6`` can come out a hair above ``t``, and a timer set for
    exactly ``t`` would then not fire at ``t`` (under a test's fake clock, never).
    """
    if not seconds < _LAST_MICRO:  # also NaN: int() of an infinity would raise
        return 2**64 - 1
    return max(0, min(int(seconds * 1_000_000), 2**64 - 1))


def timer_key(wakes_at: float, run_id: str) -> bytes:
    return micros(wakes_at).to_bytes(8, "big") + run_id.encode()


def timer_micros(key: bytes) -> int:
    """The wake-up time a timer key holds, on the grid of :func:`micros`."""
    return int.from_bytes(key[:8], "big")


def event_wait_prefix(name: str) -> bytes:
    return b"e\x00" + name_key(name) + b"\x00"


def child_wait_key(child_id: str, run_id: str) -> bytes:
    return b"c\x00" + child_id.encode() + b"\x00" + run_id.encode()


def index_keys(run_id: str, suspension: Suspension) -> tuple[bytes | None, bytes | None]:
    """The run's ``timers`` key and ``waits`` key while it is suspended (None: no entry)."""
    wakes_at = suspension.wakes_at
    timer = None if wakes_at is None else timer_key(wakes_at, run_id)
    wait = None
    if suspension.kind == "event" and suspension.event is not None:
        wait = event_wait_prefix(suspension.event) + run_id.encode()
    elif suspension.kind == "child" and suspension.child_id is not None:
        wait = child_wait_key(suspension.child_id, run_id)
    return timer, wait


def data_matches(data: Any, match: Mapping[str, Any] | None) -> bool:
    """Whether an event's data carries every field of ``match`` with an equal value.

    A key may be a dotted path into nested objects (``"user.id"``). No ``match`` (or an
    empty one) matches every event. Equality is JSON's: ``1`` equals ``1.0``, ``True``
    does not equal ``1``.
    """
    if not match:
        return True
    for path, want in match.items():
        value: Any = data
        for part in path.split("."):
            if not isinstance(value, Mapping) or part not in value:
                return False
            value = value[part]
        if not _json_equal(value, want):
            return False
    return True


def _json_equal(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    return bool(a == b)

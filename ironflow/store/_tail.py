"""Following the event log as it grows: where it ends now, and the events after a point.

Used by the server's event stream and by ``Client.events.tail`` on a local store.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from ironflow.errors import InvalidInputError
from ironflow.store._base import Store
from ironflow.store._records import Event
from ironflow.store._triggers import trigger_matches, validate_trigger

__all__ = ["check_pattern", "follow", "log_end"]

_PAGE = 1000
#: How long one idle wait lasts before the log is read again (a writer in another
#: process wakes nobody here).
_RECHECK = 0.1


def check_pattern(pattern: str | None) -> str | None:
    """``pattern`` if it is a valid event pattern (``order.*``, ``order.>``), else raise."""
    if pattern is None:
        return None
    why = validate_trigger(pattern)
    if why is not None:
        raise InvalidInputError(why.replace("trigger", "event pattern", 1))
    return pattern


def log_end(store: Store) -> int:
    """The position of the newest event of the log (0 for an empty log)."""
    from ironflow.store._machine import StoreMachine

    if isinstance(store, StoreMachine):
        from ironflow.store._browse import last_seq

        return last_seq(store)
    end = 0
    while page := store.events(after_seq=end, limit=_PAGE):
        end = page[-1].seq
    return end


def follow(
    store: Store,
    pattern: str | None = None,
    *,
    after_seq: int | None = None,
    timeout: float | None = None,
) -> Iterator[Event]:
    """Events after ``after_seq`` (default: from now on) whose name matches ``pattern``.

    Yields each as soon as it is read; waits between reads with ``store.wait_for_work``,
    which a write through this store ends at once. Stops after ``timeout`` seconds
    (None: never).
    """
    check_pattern(pattern)
    cursor = log_end(store) if after_seq is None else after_seq
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        page = store.events(after_seq=cursor, limit=_PAGE)
        for event in page:
            cursor = event.seq
            if pattern is None or trigger_matches(pattern, event.name):
                yield event
        if len(page) == _PAGE:
            continue
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            return
        store.wait_for_work(_RECHECK if remaining is None else min(remaining, _RECHECK))

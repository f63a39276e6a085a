"""The engine's stops: how it unwinds a handler at a step boundary.

Each is a ``BaseException`` so that no ``except Exception`` in user code can eat it,
and the first one raised is kept and raised again at every later step call (see
``Execution.halt``): what it is decides the run's outcome.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "_Abandon",
    "_Cancel",
    "_Drain",
    "_PastRecord",
    "_RunTimeout",
    "_Stop",
    "_Suspend",
]


class _Stop(BaseException):
    """Engine control flow. A BaseException so a tool's ``except Exception`` cannot eat it."""


class _Drain(_Stop):
    """The worker is shutting down: stop at this step boundary and give the run back."""


class _Cancel(_Stop):
    """The run was cancelled: stop at this step boundary."""


class _Abandon(_Stop):
    """Another worker owns the run now: stop and write nothing more."""


class _Suspend(_Stop):
    """The run now sleeps or waits in the store, which holds it: stop and write nothing."""


class _RunTimeout(_Stop):
    """The run's own timeout ran out: stop at this step boundary and fail the run."""


class _PastRecord(_Stop):
    """A read-only replay reached a step its record does not hold: stop, run nothing."""

    def __init__(self, position: int, step_id: str, input: Any) -> None:
        super().__init__(position, step_id, input)
        self.position = position
        self.step_id = step_id
        self.input = input

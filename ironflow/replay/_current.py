"""Where the calling code is: the run whose handler is executing, and the step.

Two context variables, set by the engine: a tool called inside a run becomes a step
(:func:`current_execution`), and a tool executing as a step can learn which one
(:func:`current_step`, public as ``ironflow.current_step``).
"""

from __future__ import annotations

import contextvars
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from ironflow.replay._engine import Execution

__all__ = ["StepInfo", "current_execution", "current_step"]


@attrs.frozen
class StepInfo:
    """The step now executing, as a tool sees it through :func:`ironflow.current_step`."""

    run_id: str
    step_id: str
    position: int
    #: The run's attempt: its Nth execution from the top (a takeover, a wake-up or a
    #: resume starts the next). Not the step's try: that is ``retry + 1``.
    attempt: int
    #: How many tries of this step failed before this one (a ``@tool(retries=...)``).
    retry: int = 0

    @property
    def idempotency_key(self) -> str:
        """``run_id/step_id``: the same on every execution of this step, for external APIs."""
        return f"{self.run_id}/{self.step_id}"


_execution: contextvars.ContextVar[Execution | None] = contextvars.ContextVar(
    "ironflow_execution", default=None
)
_step: contextvars.ContextVar[StepInfo | None] = contextvars.ContextVar(
    "ironflow_step", default=None
)


def current_execution() -> Execution | None:
    """The run whose handler is executing in this context, unless a step is executing."""
    if _step.get() is not None:
        return None  # inside a step, tools are ordinary calls: steps do not nest
    return _execution.get()


def current_step() -> StepInfo | None:
    """The step executing in this context, or None outside a step."""
    return _step.get()

"""Replay: run a handler against its recorded steps.

The engine sees storage only through the :class:`~ironflow.store.Store` protocol and
knows nothing of decorators; the DSL and the worker sit on top of it.
"""

from ironflow.replay._engine import (
    Execution,
    Outcome,
    RetryPolicy,
    StepInfo,
    current_execution,
    current_step,
    error_info,
)

__all__ = [
    "Execution",
    "Outcome",
    "RetryPolicy",
    "StepInfo",
    "current_execution",
    "current_step",
    "error_info",
]

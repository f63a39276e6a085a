"""How an execution ended, and an exception as the store keeps it."""

from __future__ import annotations

import traceback
from typing import Any

import attrs

from ironflow.errors import StepFailedError
from ironflow.store import ErrorInfo

__all__ = ["Outcome", "error_info", "format_tb"]


@attrs.frozen
class Outcome:
    """How an execution ended: the run's new status, or ``released``/``abandoned``/
    ``suspended`` (the store holds the run while it sleeps or waits), or, for a
    read-only replay, ``past_record`` (the handler called a step the record lacks)."""

    status: str
    output: Any = None
    error: ErrorInfo | None = None


def error_info(exc: BaseException, step_id: str | None = None) -> ErrorInfo:
    if isinstance(exc, StepFailedError):
        return ErrorInfo(
            type=exc.error_type,
            message=exc.message,
            traceback=format_tb(exc.__cause__) if exc.__cause__ else None,
            step_id=exc.step_id,
        )
    return ErrorInfo(
        type=type(exc).__name__, message=str(exc), traceback=format_tb(exc), step_id=step_id
    )


def format_tb(exc: BaseException) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))[-8000:]

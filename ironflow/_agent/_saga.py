"""Sagas: ``ctx.compensate(step, undo)`` and the undos a failed run takes back.

An undo is registered after its step completed. When the run fails for good (the
handler raised), the registered undos run newest first, each as the recorded step
``compensate.<step>``; an undo that raises is recorded as failed and the others still
run. The run then fails with its own error. Registration is not recorded: a replay
registers the same undos again as it passes the same points, so after a crash in the
middle of compensating, the undos already recorded replay and only the rest run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from ironflow.errors import DefinitionError, StepFailedError
from ironflow.replay._engine import Execution

__all__ = ["Saga"]

_log = logging.getLogger("ironflow.agent")


class Saga:
    """The undos a run registered, in registration order."""

    def __init__(self, execution: Execution) -> None:
        self._execution = execution
        self._undos: list[tuple[str, Callable[[], Any]]] = []

    def register(self, step_id: str, undo: Callable[[], Any]) -> None:
        """Register ``undo`` for the completed step ``step_id`` (e.g. ``"tool.charge"``)."""
        if not isinstance(step_id, str) or not step_id:
            raise DefinitionError(
                f"ctx.compensate needs the id of a completed step, such as 'tool.charge', "
                f"not {step_id!r}"
            )
        if not callable(undo):
            raise DefinitionError(
                f"ctx.compensate({step_id!r}, ...): the undo must be a callable taking no "
                f"arguments (lambda: refund(charge.id)), not {undo!r}"
            )
        recorded = self._execution.recorded.values()
        if not any(r.id == step_id and r.status == "completed" for r in recorded):
            raise DefinitionError(
                f"ctx.compensate({step_id!r}, ...): run {self._execution.run_id} has no "
                f"completed step {step_id!r}; register the undo after its step returned, "
                "naming the step by its id (a tool's is 'tool.<name>', its second call "
                "'tool.<name>#2')"
            )
        self._undos.append((step_id, undo))
        self._execution.on_failure = self.compensate

    def compensate(self, failure: BaseException) -> Any:
        """Run the undos newest first: at once in a sync run, as an awaitable in an async."""
        if self._execution.is_async:
            return self._compensate_async()
        for step_id, undo in reversed(self._undos):
            try:
                self._execution.step(f"compensate.{step_id}", None, undo)
            except StepFailedError as exc:
                _log.warning("run %s: undo of %s failed: %s", self._execution.run_id, step_id, exc)
        return None

    async def _compensate_async(self) -> None:
        for step_id, undo in reversed(self._undos):
            try:
                await self._execution.step(f"compensate.{step_id}", None, undo)
            except StepFailedError as exc:
                _log.warning("run %s: undo of %s failed: %s", self._execution.run_id, step_id, exc)

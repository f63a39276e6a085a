"""What the framework integrations share: one step awaited inside a framework's loop.

A framework drives its own event loop (``run_sync`` makes one on the handler's thread;
``await`` runs on the worker's). Its model requests and tool calls are awaited there,
so each becomes a step through :func:`durable_step`, which takes the step's position
when called (program order, as the engine requires) and awaits the body on whatever
loop is running. The value returned is the recorded JSON on both paths, first
execution and replay, so the code above never sees a difference between them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import attrs

from ironflow.llm import LlmRequest, LlmResponse
from ironflow.llm._call import step_name
from ironflow.replay._engine import Execution, current_execution
from ironflow.store._codec import converter, to_json_value

__all__ = [
    "PendingStep",
    "StepResult",
    "current_execution",
    "durable_step",
    "json_input",
    "llm_input",
    "llm_output",
    "llm_step_id",
    "raise_stop",
]


@attrs.frozen
class StepResult:
    """A step's recorded output, and whether it came from the record (a replay)."""

    output: Any
    replayed: bool


def json_input(value: Any, step_id: str) -> Any:
    """``value`` as the JSON a step records as its input (lists, never tuples), so a
    replay compares equal to what was stored."""
    return to_json_value(value, f"step {step_id!r} input", "input")


class PendingStep:
    """A step whose position is taken (at construction), to be run or replayed later.

    For a body that must start in another task (a stream read while it is recorded):
    the position belongs to the call, in program order, not to when the task starts.
    """

    def __init__(self, execution: Execution, step_id: str, input: Any) -> None:
        self._execution = execution
        self._slot = execution.begin(step_id, input)
        #: True if the record holds this step: :meth:`run` returns it without running.
        self.replayed: bool = self._slot.entry is not None

    async def run(self, body: Callable[[], Awaitable[Any]]) -> StepResult:
        """Run ``body`` as the step and record it, or return the recorded output."""
        output = await self._execution.run_async(self._slot, body, (), {}, Any)
        return StepResult(output, self.replayed)


async def durable_step(
    execution: Execution, step_id: str, input: Any, body: Callable[[], Awaitable[Any]]
) -> StepResult:
    """Run ``body`` as the recorded step ``step_id`` (``#2`` and on for repeats).

    Recorded before this returns; a recorded step returns its output without running
    ``body``. Works in ``def`` and ``async def`` runs alike: only the awaiting happens
    on the running loop, the position is taken at the call.
    """
    return await PendingStep(execution, step_id, input).run(body)


def llm_step_id(model_name: str) -> str:
    """``llm.<model>``: the id ``ctx.llm`` gives a call to this model (one naming rule)."""
    return f"llm.{step_name(model_name, None)}"


def llm_output(response: LlmResponse, framework: str, native: Any) -> dict[str, Any]:
    """An ``llm.<model>`` step's output: the :class:`LlmResponse` ``ctx.llm`` records
    (text, tool calls, usage), plus the framework's own response under ``framework``,
    which a replay rebuilds exactly (readers of ``LlmResponse`` ignore the extra key)."""
    output: dict[str, Any] = converter.unstructure(response)
    output[framework] = native
    return output


def llm_input(request: LlmRequest, step_id: str) -> Any:
    """An ``llm.<model>`` step's input, as ``ctx.llm`` records it."""
    return json_input(converter.unstructure(request), step_id)


def raise_stop(group: BaseExceptionGroup[Any]) -> None:
    """Raise the engine's stop (a drain, a lost lease, a suspension) if a framework's
    task group wrapped it in an exception group; the engine only knows it bare."""
    for exc in _leaves(group):
        if not isinstance(exc, Exception):
            raise exc


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in _leaves(sub)]
    return [exc]

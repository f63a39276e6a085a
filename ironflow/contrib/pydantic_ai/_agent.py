"""IronflowAgent: a Pydantic AI agent whose model requests and tool calls are steps."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from typing import Any, Literal

from pydantic_ai import AbstractToolset, FunctionToolset
from pydantic_ai.agent import AbstractAgent, AgentRun, EventStreamHandler, WrapperAgent
from pydantic_ai.messages import AgentStreamEvent
from pydantic_ai.models import Model
from pydantic_ai.output import OutputDataT
from pydantic_ai.tools import AgentDepsT, RunContext

from ironflow.contrib._steps import current_execution, raise_stop
from ironflow.contrib.pydantic_ai._model import IronflowModel, stream_handler
from ironflow.contrib.pydantic_ai._toolset import (
    MCPStepToolset,
    ToolStepToolset,
    delivered_call_ids,
)
from ironflow.errors import DefinitionError
from ironflow.replay._engine import Execution

__all__ = ["IronflowAgent", "ToolCallMode"]

#: How tool calls of one model response run in a durable run. Both keep the events in
#: the order of the calls, so a replay delivers the same ones; "parallel" (Pydantic AI's
#: default outside) is not offered because its event order is the order calls finish in.
ToolCallMode = Literal["parallel_ordered_events", "sequential"]

_run_handler: ContextVar[EventStreamHandler[Any] | None] = ContextVar(
    "ironflow_pydantic_ai_run_handler", default=None
)
_delivered_calls: ContextVar[frozenset[str]] = ContextVar(
    "ironflow_pydantic_ai_delivered_calls", default=frozenset()
)


def _durable_toolset(toolset: AbstractToolset[Any]) -> AbstractToolset[Any]:
    if isinstance(toolset, FunctionToolset):
        return ToolStepToolset(toolset)
    try:
        from pydantic_ai.mcp import MCPToolset
    except ImportError:  # MCP is an extra of pydantic-ai-slim; without it there is none
        return toolset
    if isinstance(toolset, MCPToolset):
        server_id = toolset.id
        if not server_id:
            raise DefinitionError(
                f"IronflowAgent: the MCP toolset {toolset.label!r} has no id; its calls are "
                "steps named after it, so give it one: MCPToolset(..., id='docs')"
            )
        return MCPStepToolset(toolset, server_id)
    return toolset


def _wrap_model(model: Model | str) -> IronflowModel:
    return model if isinstance(model, IronflowModel) else IronflowModel(model)


class IronflowAgent(WrapperAgent[AgentDepsT, OutputDataT]):
    """A Pydantic AI agent made durable: ``IronflowAgent(agent)``.

    Inside an Ironflow run (an ``@agent`` handler), ``await durable.run(...)``,
    ``durable.run_sync(...)``, ``durable.run_stream(...)`` and ``durable.iter(...)`` make
    every model request the recorded step ``llm.<model>`` (the request, the response
    and its token usage, as ``ctx.llm`` records them), every function tool call the
    step ``tool.<name>``, and every MCP server call the step ``mcp.<server id>.<tool>``
    (and ``mcp.<server id>.list_tools``). After a crash the run replays them from the
    record: only the request or tool call in flight runs again, and the output is the
    same as an uncrashed run's.

    Streaming: an ``event_stream_handler`` receives a model request's events live,
    inside its step, so a replayed request does not deliver them again; the events of
    replayed tool calls are not delivered again once the model request after them is
    recorded (a crash in between delivers them once more, as a request in flight).

    Outside a run, every method behaves as the wrapped agent's.

    What stays outside the record: the agent's own code between steps (instructions
    functions, output validators, output functions) runs again on a replay and must
    give the same answers; a changed prompt or tool list is caught as a
    :class:`~ironflow.NonDeterminismError` at the request it changes.
    """

    def __init__(
        self,
        wrapped: AbstractAgent[AgentDepsT, OutputDataT],
        *,
        tool_calls: ToolCallMode = "parallel_ordered_events",
    ) -> None:
        super().__init__(wrapped)
        if tool_calls not in ("parallel_ordered_events", "sequential"):
            raise DefinitionError(
                f"IronflowAgent(tool_calls={tool_calls!r}): use 'parallel_ordered_events' "
                "or 'sequential'"
            )
        self._tool_calls: ToolCallMode = tool_calls
        model = wrapped.model
        self._model = None if model is None else _wrap_model(model)
        self._toolsets = [ts.visit_and_replace(_durable_toolset) for ts in wrapped.toolsets]

    @property
    def event_stream_handler(self) -> EventStreamHandler[AgentDepsT] | None:
        handler = _run_handler.get() or super().event_stream_handler
        if handler is None or current_execution() is None:
            return handler
        return self._handle_tool_events

    async def _handle_tool_events(
        self, ctx: RunContext[AgentDepsT], stream: AsyncIterable[AgentStreamEvent]
    ) -> None:
        """The run's handler, minus the events of tool calls an earlier execution delivered.

        Model-request events never reach here in a run: the request's step hands them
        to the handler itself (see ``IronflowModel.request_stream``).
        """
        handler = _run_handler.get() or super().event_stream_handler
        assert handler is not None
        delivered = _delivered_calls.get()

        async def fresh() -> AsyncIterator[AgentStreamEvent]:
            async for event in stream:
                if _call_id(event) not in delivered:
                    yield event

        await handler(ctx, fresh())

    async def run(self, *args: Any, **kwargs: Any) -> Any:
        """As ``Agent.run``; inside a run, each model request and tool call is a step."""
        if current_execution() is None:
            return await super().run(*args, **kwargs)
        handler = kwargs.pop("event_stream_handler", None)
        token = _run_handler.set(handler)
        try:
            return await super().run(*args, **kwargs)
        finally:
            _run_handler.reset(token)

    def run_sync(self, *args: Any, **kwargs: Any) -> Any:
        """As ``Agent.run_sync``; inside a run, each model request and tool call is a step.

        In a run it drives the agent on an event loop of its own, closed when the agent
        is done, so a ``def`` handler's thread is left with no loop behind.
        """
        if current_execution() is None:
            return super().run_sync(*args, **kwargs)
        import asyncio

        return asyncio.run(self.run(*args, **kwargs))

    @asynccontextmanager
    async def iter(self, *args: Any, **kwargs: Any) -> AsyncIterator[AgentRun[AgentDepsT, Any]]:
        """As ``Agent.iter``; inside a run, each model request and tool call is a step."""
        execution = current_execution()
        if execution is None:
            async with super().iter(*args, **kwargs) as agent_run:
                yield agent_run
            return
        if kwargs.get("model") is not None:
            kwargs["model"] = _wrap_model(kwargs["model"])
        elif self._model is None:
            raise DefinitionError(
                "IronflowAgent: the agent has no model; give the wrapped Agent one, or pass "
                "model= to the run"
            )
        extra = kwargs.pop("toolsets", None) or ()
        try:
            with self._durable(execution, extra):
                async with super().iter(*args, **kwargs) as agent_run:
                    yield agent_run
        except BaseExceptionGroup as group:
            raise_stop(group)
            raise

    @contextmanager
    def _durable(
        self, execution: Execution, extra: Sequence[AbstractToolset[AgentDepsT]]
    ) -> Iterator[None]:
        toolsets = [*self._toolsets, *(ts.visit_and_replace(_durable_toolset) for ts in extra)]
        token = stream_handler.set(_run_handler.get() or super().event_stream_handler)
        delivered = _delivered_calls.set(delivered_call_ids(execution.recorded.values()))
        try:
            overrides: dict[str, Any] = {"toolsets": toolsets, "tools": []}
            if self._model is not None:
                overrides["model"] = self._model
            with (
                super().override(**overrides),
                self.parallel_tool_call_execution_mode(self._tool_calls),
            ):
                yield
        finally:
            _delivered_calls.reset(delivered)
            stream_handler.reset(token)


def _call_id(event: Any) -> str | None:
    call_id = getattr(event, "tool_call_id", None)
    if call_id is None:
        part = getattr(event, "part", None)
        call_id = getattr(part, "tool_call_id", None)
    return call_id if isinstance(call_id, str) else None

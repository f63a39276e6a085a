"""Toolsets whose calls are steps in a run: ``tool.<name>`` and ``mcp.<server>.<tool>``.

A tool's outcome is recorded as data, control-flow signals included: ``ModelRetry``
(the model is asked to try again), ``CallDeferred`` and ``ApprovalRequired`` are
Pydantic AI's answers, not failures, so a replay raises them again from the record
instead of failing the run. Any other exception fails the step like a raising
``@tool``. Results are stored with Pydantic's JSON serialization and re-validated as
the same content types (text, structured data, multimodal parts, ``ToolReturn``), so
the model is told the same thing on a replay.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter
from pydantic_ai import ToolsetTool, WrapperToolset
from pydantic_ai.exceptions import ApprovalRequired, CallDeferred, ModelRetry
from pydantic_ai.messages import ToolReturn, ToolReturnContent
from pydantic_ai.tools import AgentDepsT, RunContext, ToolDefinition
from pydantic_core import PydanticSerializationError, to_jsonable_python

from ironflow.contrib._steps import current_execution, durable_step, json_input
from ironflow.errors import NotSerializableError
from ironflow.store import StepRecord

__all__ = ["MCPStepToolset", "ToolStepToolset", "delivered_call_ids"]

_CONTENT: TypeAdapter[Any] = TypeAdapter(ToolReturnContent)
_TOOL_RETURN: TypeAdapter[ToolReturn] = TypeAdapter(ToolReturn)
_TOOL_DEFS: TypeAdapter[dict[str, ToolDefinition]] = TypeAdapter(dict[str, ToolDefinition])


async def _outcome(step_id: str, call: Awaitable[Any]) -> dict[str, Any]:
    try:
        result = await call
    except ModelRetry as retry:
        return {"raise": "ModelRetry", "message": retry.message}
    except ApprovalRequired as approval:
        return {"raise": "ApprovalRequired", "metadata": _meta(approval.metadata)}
    except CallDeferred as deferred:
        return {"raise": "CallDeferred", "metadata": _meta(deferred.metadata)}
    try:
        if isinstance(result, ToolReturn):
            return {"tool_return": _TOOL_RETURN.dump_python(result, mode="json")}
        return {"return": _CONTENT.dump_python(result, mode="json")}
    except PydanticSerializationError as exc:
        raise NotSerializableError(f"step {step_id!r} output", "output", str(exc)) from exc


def _meta(metadata: Any) -> Any:
    return to_jsonable_python(metadata)


def _result(output: dict[str, Any]) -> Any:
    kind = output.get("raise")
    if kind == "ModelRetry":
        raise ModelRetry(output["message"])
    if kind == "ApprovalRequired":
        raise ApprovalRequired(metadata=output["metadata"])
    if kind == "CallDeferred":
        raise CallDeferred(metadata=output["metadata"])
    if "tool_return" in output:
        return _TOOL_RETURN.validate_python(output["tool_return"])
    return _CONTENT.validate_python(output["return"])


def delivered_call_ids(recorded: Iterable[StepRecord]) -> frozenset[str]:
    """The tool calls whose events an earlier execution of the run has delivered.

    A batch of tool calls hands its events to the stream handler before the agent makes
    its next model request; so a tool call followed in the record by a model request
    had its events delivered, and a replay must not deliver them again. (A crash in
    between delivers them once more: at least once, as the model's own events.)
    """
    records = list(recorded)
    last_llm = max((r.position for r in records if r.id.startswith("llm.")), default=-1)
    ids = set()
    for record in records:
        data = record.input
        if (
            record.position < last_llm
            and record.id.startswith(("tool.", "mcp."))
            and isinstance(data, dict)
            and isinstance(data.get("call_id"), str)
        ):
            ids.add(data["call_id"])
    return frozenset(ids)


async def _tool_step(
    step_id: str,
    name: str,
    tool_args: dict[str, Any],
    ctx: RunContext[Any],
    call: Callable[[], Awaitable[Any]],
) -> Any:
    execution = current_execution()
    if execution is None:
        return await call()
    args = to_jsonable_python(tool_args, fallback=lambda v: f"<{type(v).__name__}>")
    recorded_input = json_input({"args": args, "call_id": ctx.tool_call_id}, step_id)
    result = await durable_step(
        execution, step_id, recorded_input, lambda: _outcome(step_id, call())
    )
    return _result(result.output)


class ToolStepToolset(WrapperToolset[AgentDepsT]):
    """Each call of one of the wrapped toolset's tools is the step ``tool.<name>`` in a run."""

    async def call_tool(
        self,
        name: str,
        tool_args: dict[str, Any],
        ctx: RunContext[AgentDepsT],
        tool: ToolsetTool[AgentDepsT],
    ) -> Any:
        return await _tool_step(
            f"tool.{name}",
            name,
            tool_args,
            ctx,
            lambda: self.wrapped.call_tool(name, tool_args, ctx, tool),
        )


@dataclass
class MCPStepToolset(WrapperToolset[AgentDepsT]):
    """An MCP server whose calls are steps in a run: ``mcp.<id>.list_tools`` for the tool
    list (so a replay offers the model the tools it was offered) and ``mcp.<id>.<tool>``
    for each tool call."""

    server_id: str = ""

    async def get_tools(self, ctx: RunContext[AgentDepsT]) -> dict[str, ToolsetTool[AgentDepsT]]:
        execution = current_execution()
        if execution is None:
            return await super().get_tools(ctx)
        step_id = f"mcp.{self.server_id}.list_tools"

        async def listed() -> Any:
            tools = await self.wrapped.get_tools(ctx)
            return _TOOL_DEFS.dump_python(
                {name: tool.tool_def for name, tool in tools.items()}, mode="json"
            )

        result = await durable_step(execution, step_id, None, listed)
        defs = _TOOL_DEFS.validate_python(result.output)
        # MCPToolset's own way to turn a definition back into a callable tool.
        build: Callable[..., ToolsetTool[AgentDepsT]] = self.wrapped.tool_for_tool_def  # type: ignore[attr-defined]
        return {name: build(d, ctx=ctx) for name, d in defs.items()}

    async def call_tool(
        self,
        name: str,
        tool_args: dict[str, Any],
        ctx: RunContext[AgentDepsT],
        tool: ToolsetTool[AgentDepsT],
    ) -> Any:
        return await _tool_step(
            f"mcp.{self.server_id}.{name}",
            name,
            tool_args,
            ctx,
            lambda: self.wrapped.call_tool(name, tool_args, ctx, tool),
        )

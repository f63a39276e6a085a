"""An agent loop: the model asks for tools, the tools run as steps, until it answers.

Nothing here is a step of its own: each model call is an ``llm.<name>`` step and each
tool call a ``tool.<name>`` step, so a crash mid-loop resumes at the call in flight,
and the conversation is rebuilt from the records on replay.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import enum
import json
import typing
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Literal

import attrs

from ironflow._agent._dsl import ToolDefinition
from ironflow._pure._validate import Mismatch, check_value
from ironflow.errors import DefinitionError, StepFailedError, ToolInputError, ToolLoopLimitError
from ironflow.llm._call import MessagesInput, build_request
from ironflow.llm._provider import Provider
from ironflow.llm._types import LlmResponse, Message, ToolCall, Usage
from ironflow.store._codec import structure, to_json_value

if TYPE_CHECKING:
    from ironflow._agent._context import AgentContext

__all__ = ["ToolsLoopResult", "run_tools_loop"]

OnToolError = Literal["reply", "raise"]


@attrs.frozen
class ToolsLoopResult:
    """How a tools loop ended: the model's final answer and the whole conversation."""

    #: The last model answer, the one that asked for no tool.
    response: LlmResponse
    #: The conversation: the messages given, then every answer and tool result.
    messages: tuple[Message, ...]
    #: Model calls made.
    turns: int
    #: Tokens over all the loop's model calls.
    usage: Usage

    @property
    def text(self) -> str:
        """The final answer's text."""
        return self.response.text


def run_tools_loop(
    ctx: AgentContext,
    *,
    model: str,
    messages: MessagesInput,
    tools: Iterable[Callable[..., Any]],
    max_turns: int = 10,
    name: str | None = None,
    provider: Provider | None = None,
    on_tool_error: OnToolError = "reply",
    **params: Any,
) -> Any:
    """Let the model call ``tools`` until it answers without one; return a :class:`ToolsLoopResult`.

    Each model call is the step ``llm.<name>`` (via ``ctx.llm``) and each tool call the
    step ``tool.<tool name>``, in the order the model asked for them; in an ``async
    def`` agent this returns an awaitable, and the tool calls of one answer run
    concurrently (their positions still follow the model's order).

    A tool that raises, arguments that do not fit the tool's hints, or a tool name
    that does not exist are told to the model as an ``error: ...`` tool result when
    ``on_tool_error="reply"`` (the default), so it can correct itself; with
    ``"raise"`` the :class:`~ironflow.errors.StepFailedError` or
    :class:`~ironflow.errors.ToolInputError` propagates. Any other error (a
    non-determinism error, a provider failure) always propagates. After ``max_turns``
    model calls that still ask for tools it raises
    :class:`~ironflow.errors.ToolLoopLimitError` without running those tools.
    """
    if max_turns < 1:
        raise DefinitionError(f"run_tools_loop(max_turns={max_turns!r}) must be at least 1")
    if on_tool_error not in ("reply", "raise"):
        raise DefinitionError(
            f"run_tools_loop(on_tool_error={on_tool_error!r}) must be 'reply' or 'raise'"
        )
    loop = _Loop(ctx, model, messages, tools, name, provider, on_tool_error, params)
    if ctx.agent.is_async:
        return loop.run_async(max_turns)
    return loop.run_sync(max_turns)


class _Loop:
    def __init__(
        self,
        ctx: AgentContext,
        model: str,
        messages: MessagesInput,
        tools: Iterable[Callable[..., Any]],
        name: str | None,
        provider: Provider | None,
        on_tool_error: OnToolError,
        params: Mapping[str, Any],
    ) -> None:
        self.ctx = ctx
        self.model = model
        self.name = name
        self.provider = provider
        self.on_tool_error = on_tool_error
        self.params = dict(params)
        self.tools = list(tools)
        self.by_name: dict[str, Callable[..., Any]] = {}
        for fn in self.tools:
            defn = ToolDefinition.must_from_fn(fn)
            if defn.name in self.by_name:
                raise DefinitionError(
                    f"run_tools_loop: two tools are named {defn.name!r}; tool names must be "
                    "unique, since the model calls them by name"
                )
            self.by_name[defn.name] = fn
        # Normalized once, so the history holds Message objects only.
        self.history: list[Message] = list(build_request(model, messages, None, {}).messages)
        self.usage = Usage()

    def _ask(self) -> Any:
        return self.ctx.llm(
            model=self.model,
            messages=self.history,
            tools=self.tools,
            name=self.name,
            provider=self.provider,
            **self.params,
        )

    def _answered(self, response: LlmResponse, turn: int, max_turns: int) -> bool:
        self.history.append(response.message)
        self.usage = self.usage + response.usage
        if not response.tool_calls:
            return True
        if turn == max_turns:
            raise ToolLoopLimitError(max_turns, [c.name for c in response.tool_calls])
        return False

    def _result(self, response: LlmResponse, turns: int) -> ToolsLoopResult:
        return ToolsLoopResult(response, tuple(self.history), turns, self.usage)

    def _start(self, call: ToolCall) -> Any:
        """Call the tool (taking its step position now); an error text if it cannot start."""
        fn = self.by_name.get(call.name)
        if fn is None:
            known = ", ".join(sorted(self.by_name)) or "none"
            return _Text(f"error: there is no tool named {call.name!r}; the tools are: {known}")
        defn = ToolDefinition.must_from_fn(fn)
        try:
            return fn(**_coerce(defn, call.arguments))
        except ToolInputError as exc:
            if self.on_tool_error == "raise":
                raise
            return _Text(f"error: {exc}")

    def _content(self, outcome: Any) -> str:
        if isinstance(outcome, _Text):
            return outcome.text
        if isinstance(outcome, StepFailedError):
            if self.on_tool_error == "raise":
                raise outcome
            return f"error: {outcome.error_type}: {outcome.message}"
        if isinstance(outcome, str):
            return outcome
        return json.dumps(to_json_value(outcome, "tool result"), ensure_ascii=False)

    def run_sync(self, max_turns: int) -> ToolsLoopResult:
        for turn in range(1, max_turns + 1):
            response: LlmResponse = self._ask()
            if self._answered(response, turn, max_turns):
                return self._result(response, turn)
            for call in response.tool_calls:
                try:
                    outcome = self._start(call)
                except StepFailedError as exc:
                    outcome = exc
                self.history.append(Message.tool(call.id, self._content(outcome), name=call.name))
        raise AssertionError("unreachable")  # _answered raises on the last turn

    async def run_async(self, max_turns: int) -> ToolsLoopResult:
        import asyncio

        for turn in range(1, max_turns + 1):
            response: LlmResponse = await self._ask()
            if self._answered(response, turn, max_turns):
                return self._result(response, turn)
            # Started in the model's order (that fixes the step positions), awaited together.
            started: list[Any] = []
            try:
                for call in response.tool_calls:
                    started.append(self._start(call))
            except BaseException:
                for s in started:
                    if asyncio.iscoroutine(s):
                        s.close()  # never awaited: close it rather than leak a warning
                raise
            waiting = [s for s in started if not isinstance(s, _Text)]
            finished = iter(await asyncio.gather(*map(_awaited, waiting), return_exceptions=True))
            outcomes = [s if isinstance(s, _Text) else next(finished) for s in started]
            for outcome in outcomes:
                if isinstance(outcome, BaseException) and not isinstance(outcome, StepFailedError):
                    raise outcome  # engine control flow, non-determinism: never the model's
            for call, outcome in zip(response.tool_calls, outcomes, strict=True):
                self.history.append(Message.tool(call.id, self._content(outcome), name=call.name))
        raise AssertionError("unreachable")


@attrs.frozen
class _Text:
    """A tool result decided without running the tool (an unknown tool, bad arguments)."""

    text: str


async def _awaited(value: Awaitable[Any] | Any) -> Any:
    if isinstance(value, Awaitable):
        return await value
    return value


def _coerce(defn: ToolDefinition, arguments: Mapping[str, Any]) -> dict[str, Any]:
    """Re-type JSON arguments whose hint names a class (attrs, Enum, datetime, ...).

    Only those: a model's ``"5"`` for an ``int`` stays a str and is reported to it,
    rather than silently converted.
    """
    out = dict(arguments)
    for pname, value in arguments.items():
        hint = defn.hints.get(pname)
        if hint is None or not _names_a_class(hint):
            continue
        try:
            check_value(value, hint, pname)
        except Mismatch:
            # If it cannot be re-typed it is left as it is: the tool's check reports it.
            with contextlib.suppress(Exception):
                out[pname] = structure(value, hint)
    return out


def _names_a_class(hint: Any) -> bool:
    if isinstance(hint, type):
        return (
            attrs.has(hint)
            or dataclasses.is_dataclass(hint)
            or issubclass(hint, enum.Enum | _dt.date | _dt.time | uuid.UUID)
            or hasattr(hint, "model_validate")
        )
    return any(_names_a_class(a) for a in typing.get_args(hint))

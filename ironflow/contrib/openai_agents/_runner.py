"""IronflowRunner: ``Runner.run`` with model calls, tools, handoffs and guardrails as steps."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

from agents import (
    Agent,
    FunctionTool,
    GuardrailFunctionOutput,
    Handoff,
    InputGuardrail,
    OutputGuardrail,
    RunConfig,
    Runner,
    handoff,
)
from agents.models.interface import Model
from agents.models.multi_provider import MultiProvider
from agents.result import RunResult, RunResultStreaming
from pydantic_core import to_jsonable_python

from ironflow.contrib._steps import current_execution, durable_step, json_input, raise_stop
from ironflow.contrib.openai_agents._model import StepModel, StepModelProvider, model_name_of
from ironflow.errors import NotSerializableError

__all__ = ["IronflowRunner"]


def _jsonable(value: Any, what: str) -> Any:
    try:
        return to_jsonable_python(value)
    except Exception as exc:
        raise NotSerializableError(what, "output", str(exc)) from exc


def _model_facing(tool: FunctionTool, output: Any) -> Any:
    """What a tool's result is recorded as: the value the runner turns into the text the
    model reads, in a form that gives the same text on a replay."""
    if isinstance(output, str | int | float | bool) or output is None:
        return output
    if tool.output_json_schema is not None:
        return _jsonable(output, f"tool {tool.name!r} output")  # validated by its schema again
    if isinstance(output, dict | list):
        plain = _jsonable(output, f"tool {tool.name!r} output")
        if plain == output:
            return plain  # JSON already: str() of it is what the model was shown
    structured = getattr(output, "type", None)
    if structured in ("text", "image", "file"):  # ToolOutputText / Image / FileContent
        return _jsonable(output, f"tool {tool.name!r} output")
    return str(output)  # what the runner would show the model


class _Durable:
    """One run's durable copy of an agent graph: each agent cloned once, with its model,
    tools, handoffs and guardrails wrapped; handoffs lead to the clones."""

    def __init__(self) -> None:
        self._clones: dict[int, Agent[Any]] = {}
        self._by_name: dict[str, Agent[Any]] = {}

    def agent(self, original: Agent[Any]) -> Agent[Any]:
        known = self._clones.get(id(original))
        if known is not None:
            return known
        model = original.model
        clone = original.clone(
            model=StepModel(model, model_name_of(model)) if isinstance(model, Model) else model,
            tools=[self._tool(t) for t in original.tools],
            input_guardrails=[self._input_guardrail(g) for g in original.input_guardrails],
            output_guardrails=[self._output_guardrail(g) for g in original.output_guardrails],
        )
        self._clones[id(original)] = clone
        self._by_name.setdefault(original.name, clone)
        # After registering the clone, so a handoff back to this agent finds it.
        clone.handoffs = [self._handoff(h) for h in original.handoffs]
        return clone

    def _tool(self, tool: Any) -> Any:
        if not isinstance(tool, FunctionTool):
            return tool  # hosted tools run at the provider: part of the model's response
        invoke = tool.on_invoke_tool

        async def on_invoke_tool(ctx: Any, arguments: str) -> Any:
            execution = current_execution()
            if execution is None:
                return await invoke(ctx, arguments)
            step_id = f"tool.{tool.name}"
            call_id = getattr(ctx, "tool_call_id", None)
            recorded = json_input({"arguments": arguments, "call_id": call_id}, step_id)

            async def call() -> Any:
                return _model_facing(tool, await invoke(ctx, arguments))

            return (await durable_step(execution, step_id, recorded, call)).output

        return dataclasses.replace(tool, on_invoke_tool=on_invoke_tool)

    def _handoff(self, item: Agent[Any] | Handoff[Any, Any]) -> Handoff[Any, Any]:
        original = item if isinstance(item, Handoff) else handoff(item)
        ref = getattr(original, "_agent_ref", None)
        target = ref() if ref is not None else None
        if isinstance(target, Agent):
            self.agent(target)  # known before any replay needs it by name
        invoke = original.on_invoke_handoff

        async def on_invoke_handoff(ctx: Any, arguments: str) -> Agent[Any]:
            execution = current_execution()
            if execution is None:
                return self.agent(await invoke(ctx, arguments))
            step_id = f"handoff.{original.tool_name}"

            async def call() -> dict[str, str]:
                return {"agent": self.agent(await invoke(ctx, arguments)).name}

            result = await durable_step(execution, step_id, json_input(arguments, step_id), call)
            return self._by_name[result.output["agent"]]

        return dataclasses.replace(original, on_invoke_handoff=on_invoke_handoff)

    def _input_guardrail(self, guardrail: InputGuardrail[Any]) -> InputGuardrail[Any]:
        check = guardrail.guardrail_function
        name = guardrail.get_name()

        async def guardrail_function(
            ctx: Any, agent: Agent[Any], input: Any
        ) -> GuardrailFunctionOutput:
            return await _guardrail_step(name, input, lambda: check(ctx, agent, input))

        return dataclasses.replace(guardrail, guardrail_function=guardrail_function, name=name)

    def _output_guardrail(self, guardrail: OutputGuardrail[Any]) -> OutputGuardrail[Any]:
        check = guardrail.guardrail_function
        name = guardrail.get_name()

        async def guardrail_function(
            ctx: Any, agent: Agent[Any], output: Any
        ) -> GuardrailFunctionOutput:
            return await _guardrail_step(name, output, lambda: check(ctx, agent, output))

        return dataclasses.replace(guardrail, guardrail_function=guardrail_function, name=name)

    def run_config(self, given: RunConfig | dict[str, Any] | None) -> RunConfig:
        config = given if isinstance(given, RunConfig) else RunConfig(**(given or {}))
        model = config.model
        return dataclasses.replace(
            config,
            model=StepModel(model, model_name_of(model)) if isinstance(model, Model) else model,
            model_provider=StepModelProvider(config.model_provider or MultiProvider()),
        )


async def _guardrail_step(
    name: str, subject: Any, check: Callable[[], Any]
) -> GuardrailFunctionOutput:
    """A guardrail's verdict as the step ``guardrail.<name>``; its ``output_info`` is
    returned as recorded (JSON), on the first execution as on a replay."""
    execution = current_execution()

    async def call() -> dict[str, Any]:
        verdict = check()
        if isinstance(verdict, Awaitable):
            verdict = await verdict
        assert isinstance(verdict, GuardrailFunctionOutput)
        return {
            "output_info": _jsonable(verdict.output_info, f"guardrail {name!r} output_info"),
            "tripwire_triggered": verdict.tripwire_triggered,
        }

    if execution is None:
        raw = check()
        return await raw if isinstance(raw, Awaitable) else raw  # type: ignore[no-any-return]
    step_id = f"guardrail.{name}"
    subject_json = to_jsonable_python(subject, fallback=lambda v: f"<{type(v).__name__}>")
    result = await durable_step(execution, step_id, json_input(subject_json, step_id), call)
    return GuardrailFunctionOutput(
        output_info=result.output["output_info"],
        tripwire_triggered=result.output["tripwire_triggered"],
    )


class IronflowRunner:
    """``Runner`` made durable: ``await IronflowRunner.run(agent, input)`` in an ``@agent``.

    Inside an Ironflow run every model call is the recorded step ``llm.<model>`` (the
    request, the response and its token usage, as ``ctx.llm`` records them), every
    function tool call ``tool.<name>``, every handoff ``handoff.<tool name>`` and every
    guardrail check ``guardrail.<name>``. After a crash the run replays them from the
    record: only the call in flight runs again, and the result is the same as an
    uncrashed run's. The agents given are not changed: the run uses durable clones.

    A tool's result is recorded as what the model is shown (its text, or its JSON when
    it has an output schema or is a structured tool output), and returned so on both
    paths. A guardrail's ``output_info`` is returned as its recorded JSON.

    Outside a run, each method is ``Runner``'s own.
    """

    @classmethod
    async def run(cls, starting_agent: Agent[Any], input: Any, **kwargs: Any) -> RunResult:
        """As ``Runner.run``."""
        if current_execution() is None:
            return await Runner.run(starting_agent, input, **kwargs)
        durable = _Durable()
        kwargs["run_config"] = durable.run_config(kwargs.get("run_config"))
        try:
            return await Runner.run(durable.agent(starting_agent), input, **kwargs)
        except BaseExceptionGroup as group:
            raise_stop(group)
            raise

    @classmethod
    def run_sync(cls, starting_agent: Agent[Any], input: Any, **kwargs: Any) -> RunResult:
        """As ``Runner.run_sync``; in a ``def`` handler, on an event loop of its own."""
        if current_execution() is None:
            return Runner.run_sync(starting_agent, input, **kwargs)
        import asyncio

        return asyncio.run(cls.run(starting_agent, input, **kwargs))

    @classmethod
    def run_streamed(
        cls, starting_agent: Agent[Any], input: Any, **kwargs: Any
    ) -> RunResultStreaming:
        """As ``Runner.run_streamed`` (from an ``async def`` handler): model events stream
        live while a call runs; a replayed call yields its recorded response at once."""
        if current_execution() is None:
            return Runner.run_streamed(starting_agent, input, **kwargs)
        durable = _Durable()
        kwargs["run_config"] = durable.run_config(kwargs.get("run_config"))
        result = Runner.run_streamed(durable.agent(starting_agent), input, **kwargs)
        if result.run_loop_task is not None:
            result.run_loop_task.add_done_callback(lambda _: _end_stream(result))
        return result


def _end_stream(result: RunResultStreaming) -> None:
    """End the stream of a run loop that ended without ending it, so ``stream_events``
    raises what stopped the loop instead of waiting forever for another event.

    The SDK ends the stream in its run loop's cleanup, after waiting for the input
    guardrails still running. When the engine stops both the loop and such a guardrail
    (a lost lease or a failed write: every step in flight raises the stop, which is a
    ``BaseException``), the guardrail's stop, raised in that wait, skips the rest of the
    cleanup. ``cancel()`` is the SDK's way to end a stream and wake its reader, which
    then raises the loop's exception, the engine's stop.
    """
    if not result.is_complete:
        result.cancel()

"""A multi-agent Agents SDK workflow on an offline scripted model, reporting to the World.

``PlannerModel`` is a real ``Model`` implementation whose answer is a pure function of
the instructions and input it is given (so a resumed run gets the same answers from a
fresh process): the triage agent hands off to the weather agent, which asks for two
tools at once (``lookup``, ``forecast``), then ``convert``, then answers. An input
guardrail checks the request and an output guardrail the answer. Every model call,
tool body and guardrail reports to :func:`world`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from agents import (
    Agent,
    GuardrailFunctionOutput,
    ModelSettings,
    RunConfig,
    RunContextWrapper,
    function_tool,
    handoff,
    input_guardrail,
    output_guardrail,
    set_tracing_disabled,
)
from agents.items import ModelResponse, TResponseInputItem, TResponseStreamEvent
from agents.models.interface import Model, ModelTracing
from agents.usage import Usage
from openai.types.responses import (
    Response,
    ResponseCompletedEvent,
    ResponseFunctionToolCall,
    ResponseOutputItemDoneEvent,
    ResponseOutputMessage,
    ResponseOutputText,
    ResponseTextDeltaEvent,
    ResponseUsage,
)
from openai.types.responses.response_usage import InputTokensDetails, OutputTokensDetails

from ironflow import AgentContext, agent
from ironflow.contrib.openai_agents import IronflowRunner
from tests.property._world import world

set_tracing_disabled(True)

Plan = Callable[[str | None, list[dict[str, Any]]], list[Any]]


def _items(input: str | list[TResponseInputItem]) -> list[dict[str, Any]]:
    if isinstance(input, str):
        return [{"role": "user", "content": input}]
    return [i if isinstance(i, dict) else i.model_dump(exclude_none=True) for i in input]  # type: ignore[misc]


def _call(name: str, args: dict[str, Any], call_id: str) -> ResponseFunctionToolCall:
    return ResponseFunctionToolCall(
        type="function_call", name=name, arguments=json.dumps(args), call_id=call_id, id=call_id
    )


def _say(text: str) -> ResponseOutputMessage:
    return ResponseOutputMessage(
        type="message",
        id="msg",
        role="assistant",
        status="completed",
        content=[ResponseOutputText(type="output_text", text=text, annotations=[])],
    )


def plan(instructions: str | None, items: list[dict[str, Any]]) -> list[Any]:
    """The model's next output items: a pure function of what it is given."""
    city = next(str(i["content"]) for i in items if i.get("role") == "user")
    outputs = {i["call_id"]: i["output"] for i in items if i.get("type") == "function_call_output"}
    if instructions and instructions.startswith("Triage"):
        return [_call("transfer_to_weather", {}, "call-handoff")]
    if "call-lookup" not in outputs:
        return [
            _call("lookup", {"city": city}, "call-lookup"),
            _call("forecast", {"city": city}, "call-forecast"),
        ]
    if "call-convert" not in outputs:
        celsius = json.loads(outputs["call-forecast"].replace("'", '"'))["celsius"]
        return [_call("convert", {"celsius": celsius}, "call-convert")]
    return [
        _say(json.dumps({"city": outputs["call-lookup"], "fahrenheit": outputs["call-convert"]}))
    ]


class PlannerModel(Model):
    """An offline model: ``plan(instructions, input)`` answers, streamed or not."""

    model = "planner"

    def __init__(self, answer: Plan = plan) -> None:
        self.answer = answer

    async def get_response(
        self,
        system_instructions: str | None,
        input: str | list[TResponseInputItem],
        model_settings: ModelSettings,
        tools: list[Any],
        output_schema: Any,
        handoffs: list[Any],
        tracing: ModelTracing,
        **kwargs: Any,
    ) -> ModelResponse:
        world().executed()
        usage = Usage(requests=1, input_tokens=40, output_tokens=8, total_tokens=48)
        return ModelResponse(
            output=self.answer(system_instructions, _items(input)), usage=usage, response_id=None
        )

    async def stream_response(  # type: ignore[override]
        self,
        system_instructions: str | None,
        input: str | list[TResponseInputItem],
        model_settings: ModelSettings,
        tools: list[Any],
        output_schema: Any,
        handoffs: list[Any],
        tracing: ModelTracing,
        **kwargs: Any,
    ) -> AsyncIterator[TResponseStreamEvent]:
        world().executed()
        output = self.answer(system_instructions, _items(input))
        for n, item in enumerate(output):
            if isinstance(item, ResponseOutputMessage):
                for word in item.content[0].text.split(" "):  # type: ignore[union-attr]
                    yield ResponseTextDeltaEvent(
                        type="response.output_text.delta", item_id=item.id, output_index=n,
                        content_index=0, delta=word + " ", logprobs=[], sequence_number=n,
                    )  # fmt: skip
            yield ResponseOutputItemDoneEvent(
                type="response.output_item.done", item=item, output_index=n, sequence_number=n
            )
        yield ResponseCompletedEvent(
            type="response.completed", response=_response(output), sequence_number=len(output)
        )


def _response(output: list[Any]) -> Response:
    return Response(
        id="resp", created_at=0, model="planner", object="response", output=output,
        parallel_tool_calls=True, tool_choice="auto", tools=[],
        usage=ResponseUsage(
            input_tokens=40, output_tokens=8, total_tokens=48,
            input_tokens_details=InputTokensDetails(cached_tokens=0, cache_write_tokens=0),
            output_tokens_details=OutputTokensDetails(reasoning_tokens=0),
        ),
    )  # fmt: skip


@function_tool
def lookup(city: str) -> str:
    """The city's proper name (a sync tool)."""
    world().executed()
    return city.title()


@function_tool
async def forecast(city: str) -> dict[str, Any]:
    """Today's temperature in Celsius (an async tool)."""
    world().executed()
    return {"city": city, "celsius": len(city) * 3}


@function_tool
def convert(celsius: int) -> float:
    """Celsius to Fahrenheit."""
    world().executed()
    return celsius * 9 / 5 + 32


@input_guardrail
async def polite(
    ctx: RunContextWrapper[None], agent: Agent[None], input: Any
) -> GuardrailFunctionOutput:
    world().executed()
    return GuardrailFunctionOutput(output_info={"checked": str(input)}, tripwire_triggered=False)


@output_guardrail
def fahrenheit_only(
    ctx: RunContextWrapper[None], agent: Agent[None], output: Any
) -> GuardrailFunctionOutput:
    world().executed()
    return GuardrailFunctionOutput(
        output_info={"ok": "fahrenheit" in str(output)}, tripwire_triggered=False
    )


def _handed_over(ctx: RunContextWrapper[None]) -> None:
    world().executed()


weather = Agent(
    name="weather",
    instructions="Answer with the city's name and its temperature in Fahrenheit.",
    model=PlannerModel(),
    tools=[lookup, forecast, convert],
    output_guardrails=[fahrenheit_only],
)
triage = Agent(
    name="triage",
    instructions="Triage: hand weather questions to the weather agent.",
    model=PlannerModel(),
    handoffs=[handoff(weather, on_handoff=_handed_over)],
    input_guardrails=[polite],
)
CONFIG = RunConfig(tracing_disabled=True)

#: Events the streaming agent read, per run: a replayed model call streams no deltas.
streamed: list[str] = []


@agent(id="oa-sync", triggers=["oa.sync"])
def weather_sync(ctx: AgentContext) -> Any:
    return IronflowRunner.run_sync(triage, ctx.event.data["city"], run_config=CONFIG).final_output


@agent(id="oa-async", triggers=["oa.async"])
async def weather_async(ctx: AgentContext) -> Any:
    result = await IronflowRunner.run(triage, ctx.event.data["city"], run_config=CONFIG)
    return result.final_output


@agent(id="oa-stream", triggers=["oa.stream"])
async def weather_stream(ctx: AgentContext) -> Any:
    result = IronflowRunner.run_streamed(triage, ctx.event.data["city"], run_config=CONFIG)
    async for event in result.stream_events():
        data = getattr(event, "data", None)
        if getattr(data, "type", None) == "response.output_text.delta":
            streamed.append(data.delta)  # type: ignore[union-attr]
    return result.final_output

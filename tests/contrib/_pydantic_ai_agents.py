"""A multi-tool Pydantic AI agent on an offline FunctionModel, reporting to the crash World.

The model is a plain function of the conversation: first it asks for two tools at
once (``lookup`` and ``forecast``), then for ``convert`` on what they returned, then it
answers. Every model call and every tool body reports to :func:`world` (a side effect
to count, and where a "during" crash fires), so the tests can tell "replayed from the
record" from "ran again".
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from pydantic_ai import Agent, RunContext
from pydantic_ai.messages import (
    AgentStreamEvent,
    ModelMessage,
    ModelRequest,
    ModelResponse,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
)
from pydantic_ai.models.function import AgentInfo, DeltaToolCall, DeltaToolCalls, FunctionModel

from ironflow import AgentContext, agent
from ironflow.contrib.pydantic_ai import IronflowAgent
from tests.property._world import world


def _results(messages: list[ModelMessage]) -> dict[str, Any]:
    return {
        part.tool_name: part.content
        for message in messages
        if isinstance(message, ModelRequest)
        for part in message.parts
        if isinstance(part, ToolReturnPart)
    }


def _prompt(messages: list[ModelMessage]) -> str:
    first = messages[0]
    assert isinstance(first, ModelRequest)
    return str(first.parts[-1].content)


def plan(messages: list[ModelMessage]) -> list[TextPart | ToolCallPart]:
    """The model's next answer, a pure function of the conversation so far."""
    city = _prompt(messages)
    done = _results(messages)
    if "lookup" not in done:
        return [
            ToolCallPart("lookup", {"city": city}, tool_call_id=f"call-lookup-{city}"),
            ToolCallPart("forecast", {"city": city}, tool_call_id=f"call-forecast-{city}"),
        ]
    if "convert" not in done:
        celsius = done["forecast"]["celsius"]
        return [ToolCallPart("convert", {"celsius": celsius}, tool_call_id=f"call-convert-{city}")]
    return [TextPart(json.dumps({"city": done["lookup"], "fahrenheit": done["convert"]}))]


def model_call(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    world().executed()
    return ModelResponse(parts=plan(messages))


async def model_stream(
    messages: list[ModelMessage], info: AgentInfo
) -> AsyncIterator[str | DeltaToolCalls]:
    world().executed()
    for i, part in enumerate(plan(messages)):
        if isinstance(part, TextPart):
            for word in part.content.split(" "):
                yield word + " "
        else:
            yield {
                i: DeltaToolCall(
                    part.tool_name, json.dumps(part.args), tool_call_id=part.tool_call_id
                )
            }


assistant = Agent(
    FunctionModel(model_call, stream_function=model_stream, model_name="planner"),
    instructions="Answer with the city's name and its temperature in Fahrenheit.",
    name="weather",
)


@assistant.tool_plain
def lookup(city: str) -> str:
    """A sync tool (Pydantic AI runs it on a thread)."""
    world().executed()
    return city.title()


@assistant.tool
async def forecast(ctx: RunContext[None], city: str) -> dict[str, Any]:
    """An async tool with the run context."""
    world().executed()
    return {"city": city, "celsius": len(city) * 3}


@assistant.tool_plain
def convert(celsius: int) -> float:
    world().executed()
    return celsius * 9 / 5 + 32


durable = IronflowAgent(assistant)

#: Model events the streaming agent's handler received, per run: a replayed request
#: must not deliver its events again.
delivered: list[tuple[str, str]] = []


async def record_events(ctx: RunContext[None], stream: AsyncIterator[AgentStreamEvent]) -> None:
    async for event in stream:
        delivered.append((type(event).__name__, _event_key(event)))


def _event_key(event: Any) -> str:
    part = getattr(event, "part", None)
    return str(getattr(event, "tool_call_id", None) or getattr(part, "tool_call_id", "") or "")


@agent(id="pa-sync", triggers=["pa.sync"])
def weather_sync(ctx: AgentContext) -> Any:
    return durable.run_sync(ctx.event.data["city"]).output


@agent(id="pa-async", triggers=["pa.async"])
async def weather_async(ctx: AgentContext) -> Any:
    return (await durable.run(ctx.event.data["city"])).output


@agent(id="pa-stream", triggers=["pa.stream"])
async def weather_stream(ctx: AgentContext) -> Any:
    result = await durable.run(ctx.event.data["city"], event_stream_handler=record_events)
    return result.output

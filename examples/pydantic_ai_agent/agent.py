"""A Pydantic AI weather agent, made durable with one wrap: ``IronflowAgent(assistant)``.

The Pydantic AI agent below is ordinary Pydantic AI code: a model, three tools. The
model is an offline ``FunctionModel`` (no network, no key): it asks for ``lookup`` and
``forecast`` at once, then ``convert``, then answers. Start a worker with
``python -m ironflow.run worker examples.pydantic_ai_agent.agent`` and emit
``ironflow emit weather.asked --data '{"city": "oslo"}'``.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic_ai import Agent
from pydantic_ai.messages import (
    ModelMessage,
    ModelRequest,
    ModelResponse,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
)
from pydantic_ai.models.function import AgentInfo, FunctionModel

from examples._gate import wait_for_gate
from ironflow import AgentContext, agent
from ironflow.contrib.pydantic_ai import IronflowAgent


def offline_model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    """What a real model would answer here, as a function of the conversation."""
    first = messages[0]
    assert isinstance(first, ModelRequest)
    city = str(first.parts[-1].content)
    done = {
        p.tool_name: p.content
        for m in messages
        if isinstance(m, ModelRequest)
        for p in m.parts
        if isinstance(p, ToolReturnPart)
    }
    print(
        f"[model] request {len([m for m in messages if isinstance(m, ModelRequest)])}", flush=True
    )
    if "lookup" not in done:
        return ModelResponse(
            parts=[
                ToolCallPart("lookup", {"city": city}, tool_call_id="lookup-1"),
                ToolCallPart("forecast", {"city": city}, tool_call_id="forecast-1"),
            ]
        )
    if "convert" not in done:
        celsius = done["forecast"]["celsius"]
        return ModelResponse(
            parts=[ToolCallPart("convert", {"celsius": celsius}, tool_call_id="convert-1")]
        )
    answer = {"city": done["lookup"], "fahrenheit": done["convert"]}
    return ModelResponse(parts=[TextPart(json.dumps(answer))])


# -- ordinary Pydantic AI code ----------------------------------------------------------
assistant = Agent(
    FunctionModel(offline_model, model_name="weather-model"),
    instructions="Answer with the city's name and its temperature in Fahrenheit.",
    name="weather",
)


@assistant.tool_plain
def lookup(city: str) -> str:
    print(f"[lookup] {city}", flush=True)
    return city.title()


@assistant.tool_plain
def forecast(city: str) -> dict[str, Any]:
    print(f"[forecast] {city}", flush=True)
    return {"city": city, "celsius": len(city) * 3}


@assistant.tool_plain
def convert(celsius: int) -> float:
    print(f"[convert] start {celsius}°C", flush=True)
    wait_for_gate()  # the demo kills the worker here, between model requests
    return celsius * 9 / 5 + 32


# -- the wrap, and the Ironflow agent that runs it ----------------------------------------
durable = IronflowAgent(assistant)


@agent(id="pydantic-ai-weather", triggers=["weather.asked"])
async def weather(ctx: AgentContext) -> Any:
    result = await durable.run(ctx.event.data["city"])
    return json.loads(result.output)

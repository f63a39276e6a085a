"""An OpenAI Agents SDK workflow, made durable by running it with ``IronflowRunner``.

Ordinary Agents SDK code: a triage agent hands off to a weather agent with three tools.
The model is ``OfflineModel``, a real ``Model`` implementation that answers from the
conversation without any network (swap in ``model="gpt-5"`` for a real one). Start a
worker with ``python -m ironflow.run worker examples.openai_agents_agent.agent`` and
emit ``ironflow emit weather.requested --data '{"city": "oslo"}'``.
"""

from __future__ import annotations

import json
from typing import Any

from agents import Agent, ModelResponse, RunConfig, function_tool
from agents.models.interface import Model
from agents.usage import Usage
from openai.types.responses import (
    ResponseFunctionToolCall,
    ResponseOutputMessage,
    ResponseOutputText,
)

from examples._gate import wait_for_gate
from ironflow import AgentContext, agent
from ironflow.contrib.openai_agents import IronflowRunner


def _call(name: str, args: dict[str, Any], call_id: str) -> ResponseFunctionToolCall:
    return ResponseFunctionToolCall(
        type="function_call", name=name, arguments=json.dumps(args), call_id=call_id, id=call_id
    )


class OfflineModel(Model):
    """What a real model would answer here, as a function of the instructions and input."""

    model = "weather-model"

    async def get_response(
        self, system_instructions: Any, input: Any, *args: Any, **kwargs: Any
    ) -> ModelResponse:
        items = [i if isinstance(i, dict) else i.model_dump() for i in input]
        outputs = {
            i["call_id"]: i["output"] for i in items if i.get("type") == "function_call_output"
        }
        city = next(str(i["content"]) for i in items if i.get("role") == "user")
        print(f"[model] request as {str(system_instructions).split(':')[0]}", flush=True)
        if str(system_instructions).startswith("Triage"):
            output: list[Any] = [_call("transfer_to_weather", {}, "handoff-1")]
        elif "lookup-1" not in outputs:
            output = [
                _call("lookup", {"city": city}, "lookup-1"),
                _call("forecast", {"city": city}, "forecast-1"),
            ]
        elif "convert-1" not in outputs:
            celsius = json.loads(outputs["forecast-1"])["celsius"]
            output = [_call("convert", {"celsius": celsius}, "convert-1")]
        else:
            text = json.dumps(
                {"city": outputs["lookup-1"], "fahrenheit": float(outputs["convert-1"])}
            )
            content = [ResponseOutputText(type="output_text", text=text, annotations=[])]
            output = [
                ResponseOutputMessage(
                    type="message", id="m", role="assistant", status="completed", content=content
                )
            ]
        return ModelResponse(
            output=output,
            usage=Usage(requests=1, input_tokens=50, output_tokens=10, total_tokens=60),
            response_id=None,
        )

    async def stream_response(self, *args: Any, **kwargs: Any) -> Any:  # pragma: no cover
        raise NotImplementedError("this example does not stream")


# -- ordinary Agents SDK code -----------------------------------------------------------
@function_tool
def lookup(city: str) -> str:
    """The city's proper name."""
    print(f"[lookup] {city}", flush=True)
    return city.title()


@function_tool
def forecast(city: str) -> str:
    """Today's temperature in Celsius, as JSON."""
    print(f"[forecast] {city}", flush=True)
    return json.dumps({"city": city, "celsius": len(city) * 3})


@function_tool
def convert(celsius: int) -> float:
    """Celsius to Fahrenheit."""
    print(f"[convert] start {celsius}°C", flush=True)
    wait_for_gate()  # the demo kills the worker here, between model requests
    return celsius * 9 / 5 + 32


weather_agent = Agent(
    name="weather",
    instructions="Weather: answer with the city's name and its temperature in Fahrenheit.",
    model=OfflineModel(),
    tools=[lookup, forecast, convert],
)
triage = Agent(
    name="triage",
    instructions="Triage: hand weather questions to the weather agent.",
    model=OfflineModel(),
    handoffs=[weather_agent],
)


# -- the Ironflow agent that runs it: Runner.run becomes IronflowRunner.run ----------------
@agent(id="openai-agents-weather", triggers=["weather.requested"])
async def weather(ctx: AgentContext) -> Any:
    result = await IronflowRunner.run(
        triage, ctx.event.data["city"], run_config=RunConfig(tracing_disabled=True)
    )
    return json.loads(result.final_output)

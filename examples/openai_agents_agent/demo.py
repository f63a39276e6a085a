"""``make demo-openai-agents``: the Agents SDK workflow, killed with ``kill -9`` and resumed."""

from __future__ import annotations

import sys

from examples._kill9 import DemoFailed, run_demo
from examples.openai_agents_agent.agent import weather

STEPS = [
    "llm.weather-model",
    "handoff.transfer_to_weather",
    "llm.weather-model#2",
    "tool.lookup",
    "tool.forecast",
    "llm.weather-model#3",
    "tool.convert",
    "llm.weather-model#4",
]


def main() -> dict[str, object]:
    return run_demo(
        module="examples.openai_agents_agent.agent",
        agent=weather,
        event="weather.requested",
        data={"city": "oslo"},
        expected_steps=STEPS,
    )


if __name__ == "__main__":
    try:
        print(main())
    except DemoFailed as failed:
        sys.exit(f"demo failed: {failed}")

"""``make demo-pydantic-ai``: the Pydantic AI agent, killed with ``kill -9`` and resumed."""

from __future__ import annotations

import sys

from examples._kill9 import DemoFailed, run_demo
from examples.pydantic_ai_agent.agent import weather

STEPS = [
    "llm.weather-model",
    "tool.lookup",
    "tool.forecast",
    "llm.weather-model#2",
    "tool.convert",
    "llm.weather-model#3",
]


def main() -> dict[str, object]:
    return run_demo(
        module="examples.pydantic_ai_agent.agent",
        agent=weather,
        event="weather.asked",
        data={"city": "oslo"},
        expected_steps=STEPS,
    )


if __name__ == "__main__":
    try:
        print(main())
    except DemoFailed as failed:
        sys.exit(f"demo failed: {failed}")

"""The agent the PostgreSQL process tests serve: two steps and a memory-free finish."""

from __future__ import annotations

from typing import Any

from ironflow import AgentContext, agent, tool


@tool
def shout(text: str) -> str:
    return text.upper()


@tool
def count(text: str) -> int:
    return len(text)


@agent(id="greet", triggers=["greet"])
def greet(ctx: AgentContext) -> dict[str, Any]:
    loud = shout(text=ctx.event.data["name"])
    return {"loud": loud, "chars": count(text=loud)}

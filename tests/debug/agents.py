"""Agents for the debug kit's tests: tools, a retried tool, a child run, memory, a sleep."""

from __future__ import annotations

from typing import Any

from ironflow import AgentContext, Event, Memory, agent, projection, tool

#: How many times each tool body ran, by tool name (the tests reset it).
CALLS: dict[str, int] = {}


def _count(name: str) -> None:
    CALLS[name] = CALLS.get(name, 0) + 1


@tool
def fetch(url: str) -> dict[str, Any]:
    _count("fetch")
    return {"url": url, "words": len(url)}


@tool(retries=2, backoff="10ms")
def flaky(key: str) -> str:
    """Fails on its first try of each run, then succeeds."""
    _count("flaky")
    if CALLS["flaky"] % 2 == 1:
        raise ConnectionError(f"{key}: connection reset")
    return key.upper()


@tool
def double(n: int) -> int:
    _count("double")
    return 2 * n


@agent(id="debug-child", triggers=["debug.child"])
def child(ctx: AgentContext) -> dict[str, int]:
    return {"doubled": double(n=ctx.event.data["n"])}


@projection(name="debug-notes", events=["note.added"], initial_state={})
def notes(state: dict[str, Any], event: Event) -> dict[str, Any]:
    return {**state, event.data["key"]: event.data["value"]}


@agent(
    id="debug-parent",
    triggers=["debug.parent"],
    memory=Memory(stream="debug-notes", projection="debug-notes"),
)
def parent(ctx: AgentContext) -> dict[str, Any]:
    page = fetch(url=ctx.event.data["url"])
    shout = flaky(key="k")
    ctx.memory.append("note.added", {"key": "first", "value": page["words"]})
    kid = ctx.spawn(child, {"n": page["words"]}).result()
    ctx.memory.append("note.added", {"key": "second", "value": kid["doubled"]})
    return {"words": page["words"], "shout": shout, "doubled": kid["doubled"]}

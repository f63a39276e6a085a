"""Agents the server tests run in worker processes.

Each tool appends a line to the file named by the event's ``log`` field every time it
*executes* (not when it replays), so a test counts executions by counting lines.
"""

from __future__ import annotations

import time
from typing import Any

from ironflow import AgentContext, Event, Memory, agent, projection, tool


def _note(log: str, line: str) -> None:
    with open(log, "a") as f:
        f.write(line + "\n")
        f.flush()


@tool(description="Record that step `name` executed, after sleeping `seconds`")
def work(log: str, name: str, seconds: float) -> dict[str, str]:
    _note(log, f"start {name}")
    time.sleep(seconds)
    _note(log, f"done {name}")
    return {"step": name}


@projection(name="pipeline-memory", events=["pipeline.done"], initial_state={})
def pipeline_memory(state: dict[str, Any], event: Event) -> dict[str, Any]:
    """Which steps each finished pipeline ran, by its key."""
    return {**state, event.data["key"]: event.data["done"]}


@agent(
    id="pipeline",
    triggers=["pipeline.go"],
    memory=Memory(stream="pipelines", projection="pipeline-memory"),
)
def pipeline(ctx: AgentContext) -> dict[str, Any]:
    """Steps a, b, c, ... in order (the event's ``slow`` one sleeps), then a memory append."""
    data = ctx.event.data
    done = []
    for name in data["steps"]:
        seconds = data["sleep"] if name == data.get("slow") else 0.0
        done.append(work(log=data["log"], name=name, seconds=seconds)["step"])
    ctx.memory.append("pipeline.done", {"key": data["key"], "done": done})
    return {"done": done}


@agent(id="counter", triggers=["counter.go"])
def counter(ctx: AgentContext) -> int:
    """``n`` trivial ``ctx.step`` calls: a run that measures the cost of a step."""
    n = ctx.event.data["n"]
    for i in range(n):
        ctx.step("tick", lambda i=i: i)
    return int(n)

"""Agents the server tests run in worker processes.

Each tool appends a line to the file named by the event's ``log`` field every time it
*executes* (not when it replays), so a test counts executions by counting lines. The
event's ``slow`` step blocks until the file named by its ``gate`` field exists, so a test
decides when it may finish (a kill window that no scheduling delay can close early).
"""

from __future__ import annotations

import os
import time
from typing import Any

from ironflow import AgentContext, Event, Memory, agent, projection, tool


def _note(log: str, line: str) -> None:
    with open(log, "a") as f:
        f.write(line + "\n")
        f.flush()


@tool(description="Record that step `name` executed, after the file `gate` exists")
def work(log: str, name: str, gate: str | None) -> dict[str, str]:
    _note(log, f"start {name}")
    deadline = time.monotonic() + 120  # a test that never opens the gate fails elsewhere
    while gate is not None and not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.01)
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
    """Steps a, b, c, ... in order (the ``slow`` one waits for its gate), then a memory append."""
    data = ctx.event.data
    done = []
    for name in data["steps"]:
        gate = data["gate"] if name == data.get("slow") else None
        done.append(work(log=data["log"], name=name, gate=gate)["step"])
    ctx.memory.append("pipeline.done", {"key": data["key"], "done": done})
    return {"done": done}


@agent(id="counter", triggers=["counter.go"])
def counter(ctx: AgentContext) -> int:
    """``n`` trivial ``ctx.step`` calls: a run that measures the cost of a step."""
    n = ctx.event.data["n"]
    for i in range(n):
        ctx.step("tick", lambda i=i: i)
    return int(n)

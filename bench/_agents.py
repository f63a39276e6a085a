"""The agents the Ironflow workloads run: no-op tools returning small dicts.

This is also the worker module of the resume workload
(``python -m ironflow.run worker bench._agents``), so it imports nothing but ironflow.
"""

from __future__ import annotations

import os
import time
from typing import Any

from ironflow import AgentContext, agent, current_step, tool

__all__ = ["first", "hold", "k_steps", "noop", "resume", "sleeper", "three_steps"]


@tool
def noop(i: int) -> dict[str, int]:
    """A step that does nothing: what is left to measure is the engine and the disk."""
    return {"i": i, "ok": 1}


@agent(id="bench-three", triggers=["bench.three"])
def three_steps(ctx: AgentContext) -> dict[str, int]:
    """The 3-step agent of the runs/s and concurrency workloads."""
    a = noop(i=1)
    b = noop(i=2)
    c = noop(i=3)
    return {"sum": a["i"] + b["i"] + c["i"]}


@agent(id="bench-steps", triggers=["bench.steps"])
def k_steps(ctx: AgentContext) -> int:
    """``data["n"]`` no-op steps in a row: the per-step and replay workloads."""
    n = int(ctx.event.data["n"])
    for i in range(n):
        noop(i=i)
    return n


def _say(line: str) -> None:
    # One write per line, so two workers' lines never interleave mid-line.
    os.write(1, (line + "\n").encode())


@tool
def hold(tag: str) -> dict[str, bool]:
    """Step 2 of the resume agent: says when it begins; on attempt 1 it waits to be killed."""
    info = current_step()
    attempt = info.attempt if info is not None else 0
    _say(f"HOLD_BEGIN attempt={attempt} t={time.time():.6f}")
    if attempt == 1:
        # Bounded, so a worker orphaned by a dead benchmark does not live forever.
        time.sleep(120)
    return {"held": True}


@tool
def first(tag: str) -> dict[str, Any]:
    """Step 1 of the resume agent: says when it runs, so a re-run after resume shows."""
    _say(f"FIRST_RAN pid={os.getpid()}")
    return {"tag": tag}


@agent(id="bench-resume", triggers=["bench.resume"])
def resume(ctx: AgentContext) -> str:
    """Three steps; the worker is killed with kill -9 while step 2 runs."""
    tag = str(ctx.event.data["tag"])
    first(tag=tag)
    hold(tag=tag)
    noop(i=3)
    return tag


@agent(id="bench-sleeper", triggers=["bench.sleep"])
def sleeper(ctx: AgentContext) -> str:
    """Sleeps an hour: the sleeping-runs workload measures what the worker holds meanwhile."""
    ctx.sleep("1h")
    return "woke"

"""The agent and projection a real worker subprocess serves in ``test_kill_memory.py``.

With ``IRONFLOW_TEST_BLOCK_FOLD`` set the projection's fold fails, so a run waits in
``memory.append.wait`` until the test kills the worker there.
"""

from __future__ import annotations

import os
from typing import Any

from ironflow import AgentContext, Event, Memory, agent, projection


@projection(name="kill-memory", events=["kill.noted"], initial_state={})
def kill_memory(state: dict[str, Any], event: Event) -> dict[str, Any]:
    if os.environ.get("IRONFLOW_TEST_BLOCK_FOLD"):
        raise RuntimeError("fold blocked by the test")
    return {**state, event.data["id"]: event.version}


@agent(
    id="kill-memory-agent",
    triggers=["kill.requested"],
    memory=Memory(stream="kill-stream", projection="kill-memory"),
)
def kill_memory_agent(ctx: AgentContext) -> Any:
    ctx.memory.append("kill.noted", {"id": ctx.event.data["id"]}, timeout=120)
    return ctx.memory.state()

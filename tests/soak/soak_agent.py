"""The agent the soak's worker processes serve (``python -m ironflow.run worker``).

Each tool, when it executes, appends one line ``X run_id step_id pid nonce time .`` to
a file of its own process under ``IRONFLOW_SOAK_LOG_DIR`` and returns the same pid and
nonce in its output, so the harness can count executions across processes and tell
which execution produced the recorded output. A line is one ``write(2)`` to a file
opened with ``O_APPEND``, and the reader takes only lines that end in `` .``: a process
killed in the middle cannot make a partial line count.

Tools then sleep a little (the window a ``kill -9`` lands in). The memory append puts
one ``soak.done`` event per run on the ``soak-memory`` stream; the ``soak-count``
projection, partitioned by run id, counts them.
"""

from __future__ import annotations

import os
import random
import secrets
import threading
import time
from typing import Any

from ironflow import AgentContext, Event, Memory, agent, current_step, projection, tool

STREAM = "soak-memory"
PROJECTION = "soak-count"
#: The step ids every run records, in position order.
STEP_IDS = (
    "tool.fetch",
    "tool.transform",
    "tool.score",
    "memory.append",
    "memory.append.wait",
    "tool.publish",
)
TOOL_STEPS = tuple(s for s in STEP_IDS if s.startswith("tool."))

_fd_lock = threading.Lock()
_fd: int | None = None


def _log_fd() -> int:
    global _fd
    with _fd_lock:
        if _fd is None:
            path = os.path.join(os.environ["IRONFLOW_SOAK_LOG_DIR"], f"exec-{os.getpid()}.log")
            _fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        return _fd


def _execute() -> dict[str, Any]:
    """Log this execution, then work for a moment; return who executed it."""
    step = current_step()
    assert step is not None, "soak tools run only inside a run"
    pid, nonce = os.getpid(), secrets.token_hex(6)
    line = f"X {step.run_id} {step.step_id} {pid} {nonce} {time.time():.6f} .\n"
    os.write(_log_fd(), line.encode())
    time.sleep(random.uniform(0.005, float(os.environ.get("IRONFLOW_SOAK_TOOL_SLEEP", "0.06"))))
    return {"pid": pid, "nonce": nonce}


@tool
def fetch(n: int) -> dict[str, Any]:
    return {"value": n * 2, "exec": _execute()}


@tool
def transform(value: int) -> dict[str, Any]:
    return {"value": value + 1, "exec": _execute()}


@tool
def score(value: int) -> dict[str, Any]:
    return {"value": value % 97, "exec": _execute()}


@tool
def publish(run: str, score: int) -> dict[str, Any]:
    return {"published": True, "exec": _execute()}


@agent(
    id="soak",
    triggers=["soak.job"],
    memory=Memory(stream=STREAM, projection=PROJECTION),
)
def soak(ctx: AgentContext) -> dict[str, Any]:
    n = int(ctx.event.data["n"])
    fetched = fetch(n=n)
    transformed = transform(value=fetched["value"])
    scored = score(value=transformed["value"])
    ctx.memory.append("soak.done", {"run": ctx.run_id, "n": n, "score": scored["value"]})
    publish(run=ctx.run_id, score=scored["value"])
    return {"n": n, "score": scored["value"]}


@projection(name=PROJECTION, events=["soak.done"], partition_by=lambda e: str(e.data["run"]))
def soak_count(state: dict[str, Any], event: Event) -> dict[str, Any]:
    # Partitioned by run: each run's count must end at exactly 1.
    return {"count": int(state.get("count", 0)) + 1, "n": event.data["n"]}

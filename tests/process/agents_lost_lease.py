"""The agent of ``test_lost_lease.py``: four tools, the second held at a gate file.

Each tool appends ``what run_id step_id attempt pid`` to the file named by
``IRONFLOW_TEST_LOG`` (one ``write(2)`` on an ``O_APPEND`` file), so the test knows which
process executed which step. ``tool.hold`` waits at the file named by
``IRONFLOW_TEST_GATE`` in the run's first attempt, and at ``IRONFLOW_TEST_GATE2`` (if
set) in its second: the windows in which the test freezes one worker and lets another
take the run over.
"""

from __future__ import annotations

import os
import time
from typing import Any

from ironflow import AgentContext, agent, current_step, tool


def _mark(what: str) -> None:
    step = current_step()
    assert step is not None, "these tools run only inside a run"
    line = f"{what} {step.run_id} {step.step_id} {step.attempt} {os.getpid()}\n"
    fd = os.open(os.environ["IRONFLOW_TEST_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def _gate(name: str) -> None:
    gate = os.environ.get(name)
    deadline = time.monotonic() + 120  # a test that never opens the gate fails elsewhere
    while gate and not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.01)


@tool
def take(doc: str) -> str:
    _mark("run")
    return f"<{doc}>"


@tool
def hold(text: str) -> str:
    _mark("start")
    step = current_step()
    assert step is not None
    if step.attempt == 1:
        _gate("IRONFLOW_TEST_GATE")
    elif step.attempt == 2:
        _gate("IRONFLOW_TEST_GATE2")
    _mark("end")
    return text.upper()


@tool
def extend(text: str) -> str:
    _mark("run")
    return f"{text}!"


@tool
def publish(text: str) -> dict[str, Any]:
    _mark("run")
    return {"published": text}


@agent(id="lease-race", triggers=["lease.race"])
def race(ctx: AgentContext) -> dict[str, Any]:
    taken = take(doc=ctx.event.data["doc"])
    held = hold(text=taken)
    extended = extend(text=held)
    receipt = publish(text=extended)
    # Which process finished the run: only the lease holder's finish may be written.
    return {"receipt": receipt, "finished_by": os.getpid()}

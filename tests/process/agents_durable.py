"""The agent of ``test_durability.py``: three tools, each creating a marker file.

Creating ``marker-<position>`` in the directory named by ``IRONFLOW_TEST_MARKERS`` is an
``openat`` system call that a trace of the worker shows in order with the commits'
``fdatasync`` calls: the point where the handler went on to the next step.
"""

from __future__ import annotations

import os

from ironflow import AgentContext, agent, current_step, tool


def _marker() -> None:
    step = current_step()
    assert step is not None, "these tools run only inside a run"
    path = os.path.join(os.environ["IRONFLOW_TEST_MARKERS"], f"marker-{step.position}")
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o644))


@tool
def one(n: int) -> int:
    _marker()
    return n + 1


@tool
def two(n: int) -> int:
    _marker()
    return n * 2


@tool
def three(n: int) -> int:
    _marker()
    return n - 3


@agent(id="durable", triggers=["durable.go"])
def durable(ctx: AgentContext) -> int:
    return three(n=two(n=one(n=int(ctx.event.data["n"]))))

"""The agent a real worker subprocess serves in ``test_kill9.py``.

Each tool appends a line to the file named by ``IRONFLOW_TEST_LOG`` when it starts and
when it ends, flushed at once, so the test can count executions across processes and
see a step in flight before it kills the worker. The middle step waits until the file
named by ``IRONFLOW_TEST_GATE`` exists: the kill window, held open until the test has
sent its signal, however slowly the machine schedules either process.
"""

from __future__ import annotations

import os
import time
from typing import Any

from ironflow import AgentContext, agent, current_step, tool


def _mark(what: str) -> None:
    step = current_step()
    where = f"{step.run_id} {step.step_id} attempt={step.attempt}" if step else "outside a run"
    with open(os.environ["IRONFLOW_TEST_LOG"], "a", encoding="utf-8") as log:
        log.write(f"{what} {where}\n")
        log.flush()


@tool
def extract(doc: str) -> dict[str, Any]:
    _mark("start")
    text = f"text of {doc}"
    _mark("end")
    return {"text": text, "chars": len(text)}


@tool
def classify(text: str) -> str:
    _mark("start")
    gate = os.environ.get("IRONFLOW_TEST_GATE")
    deadline = time.monotonic() + 120  # a test that never opens the gate fails elsewhere
    while gate and not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.01)
    _mark("end")
    return "invoice" if "invoice" in text else "other"


@tool
def publish(doc: str, category: str) -> dict[str, Any]:
    _mark("start")
    _mark("end")
    return {"published": True, "channel": category}


@agent(id="kill9-pipeline", triggers=["kill9.doc"])
def pipeline(ctx: AgentContext) -> dict[str, Any]:
    doc = ctx.event.data["doc"]
    extracted = extract(doc=doc)
    category = classify(text=extracted["text"])
    receipt = publish(doc=doc, category=category)
    return {"doc": doc, "chars": extracted["chars"], "category": category, "receipt": receipt}

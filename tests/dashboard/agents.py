"""Agents the dashboard's browser tests run in a worker process.

``steps`` runs ``n`` small tool steps; its first one waits until the file named by the
event's ``gate`` exists, so a test decides when the run may go from running to
completed. The others cover what a run's page shows: an LLM step with tool calls,
an approval, a long sleep, a child run, a compensation and a failure with a traceback.
"""

from __future__ import annotations

import os
import time
from typing import Any

from ironflow import AgentContext, agent, tool
from ironflow.llm import ScriptedProvider, ToolCall


@tool(description="Wait for the gate file, if any, then say which step this is")
def step(i: int, gate: str | None = None) -> dict[str, Any]:
    deadline = time.monotonic() + 120  # a test that never opens the gate fails elsewhere
    while gate is not None and not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.01)
    return {"step": i, "square": i * i}


@tool
def charge(amount: int) -> dict[str, Any]:
    return {"charge_id": f"ch_{amount}", "amount": amount}


@tool
def refund(charge_id: str) -> dict[str, Any]:
    return {"refunded": charge_id}


@tool
def ship(order: str) -> dict[str, Any]:
    raise RuntimeError(f"the carrier refused order {order}")


@agent(id="steps", triggers=["dash.steps"])
def steps(ctx: AgentContext) -> dict[str, Any]:
    data = ctx.event.data
    total = 0
    for i in range(int(data.get("n", 3))):
        total += step(i=i, gate=data.get("gate") if i == 0 else None)["square"]
    return {"total": total}


PROVIDER = ScriptedProvider(
    [ToolCall("lookup", {"city": "Paris"}), "It is sunny in Paris, 21 degrees."]
)


@agent(id="assistant", triggers=["dash.ask"])
def assistant(ctx: AgentContext) -> dict[str, Any]:
    question = ctx.event.data["question"]
    first = ctx.llm(model="scripted", name="plan", messages=question, provider=PROVIDER)
    answer = ctx.llm(
        model="scripted",
        name="answer",
        messages=[{"role": "user", "content": question}, first],
        provider=PROVIDER,
    )
    return {"answer": answer.text}


@agent(id="gatekeeper", triggers=["dash.approve"])
def gatekeeper(ctx: AgentContext) -> dict[str, Any]:
    decision = ctx.approve("ship", {"order": ctx.event.data["order"]}, ttl="1d")
    return {"approved": decision.approved, "reason": decision.reason}


@agent(id="sleeper", triggers=["dash.sleep"])
def sleeper(ctx: AgentContext) -> str:
    ctx.sleep("1h")
    return "woke"


@agent(id="child", triggers=[])
def child(ctx: AgentContext) -> dict[str, Any]:
    return {"doubled": ctx.event.data["n"] * 2}


@agent(id="parent", triggers=["dash.parent"])
def parent(ctx: AgentContext) -> dict[str, Any]:
    return ctx.spawn(child, {"n": 21}).result()


@agent(id="checkout", triggers=["dash.checkout"])
def checkout(ctx: AgentContext) -> dict[str, Any]:
    paid = charge(amount=ctx.event.data["amount"])
    ctx.compensate("tool.charge", lambda: refund(charge_id=paid["charge_id"]))
    ship(order=ctx.event.data["order"])
    return paid


@tool(retries=2, backoff=0.01)
def flaky(marker: str) -> str:
    """Fails its first try (the marker file does not exist yet), then succeeds."""
    if not os.path.exists(marker):
        open(marker, "w").close()
        raise ConnectionError("the service hung up")
    return "ok"


@agent(id="retrier", triggers=["dash.retry"])
def retrier(ctx: AgentContext) -> str:
    return flaky(marker=ctx.event.data["marker"])

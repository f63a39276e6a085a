"""Today's code for the golden histories: each agent here replays its recorded runs.

Change an agent here and its golden histories must still replay (that is the point);
if a change is meant to break old runs, it belongs behind ``ctx.patched``. The code
that recorded the old-code histories (``patched`` before the patch, ``diverged``
before its change) lives in ``record.py``, not here.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import attrs

from ironflow import AgentContext, Event, Memory, agent, projection, tool
from ironflow.llm import Message

# -- plain tools, re-typed outputs, deterministic values --------------------------------


@attrs.frozen
class Page:
    url: str
    words: int


@tool
def fetch(url: str) -> Page:
    return Page(url=url, words=len(url))


@tool
def add(x: int, y: int) -> int:
    return x + y


@tool
def double(n: int) -> int:
    return 2 * n


@agent(id="golden-tools", triggers=["golden.tools"])
def tools(ctx: AgentContext) -> dict[str, Any]:
    page = fetch(url=ctx.event.data["url"])
    assert isinstance(page, Page)  # re-typed from the record on replay too
    total = add(x=page.words, y=1)
    again = add(x=total, y=1)
    stamp = ctx.now()
    ident = ctx.uuid()
    roll = ctx.random()
    squared = ctx.step("square", lambda n: n * n, again)
    return {
        "words": page.words,
        "again": again,
        "squared": squared,
        "now": stamp.isoformat(),
        "uuid": str(ident),
        "random": roll,
    }


# -- durable time --------------------------------------------------------------------


@agent(id="golden-sleep", triggers=["golden.sleep"])
def sleeper(ctx: AgentContext) -> dict[str, Any]:
    before = add(x=1, y=1)
    ctx.sleep("2h")
    started = ctx.now()
    ctx.sleep_until(started + dt.timedelta(days=3))
    return {"before": before, "after": double(n=before)}


# -- approvals -----------------------------------------------------------------------


@agent(id="golden-approve", triggers=["golden.approve"])
def approver(ctx: AgentContext) -> dict[str, Any]:
    plan = fetch(url="https://example.com/plan")
    answer = ctx.approve("ship", {"words": plan.words}, ttl="1d")
    return {"approved": answer.approved, "approver": answer.approver}


# -- child runs ----------------------------------------------------------------------


@agent(id="golden-child", triggers=["golden.child"])
def child(ctx: AgentContext) -> dict[str, int]:
    return {"doubled": double(n=ctx.event.data["n"])}


@agent(id="golden-spawn", triggers=["golden.spawn"])
def spawner(ctx: AgentContext) -> dict[str, Any]:
    first = ctx.spawn(child, {"n": 4})
    second = ctx.spawn("golden-child", {"n": 5})
    return {"first": first.result()["doubled"], "second": second.result()["doubled"]}


# -- flow control: parallel branches, sagas, versioning -----------------------------


@agent(id="golden-parallel", triggers=["golden.parallel"])
def parallel(ctx: AgentContext) -> dict[str, Any]:
    pair = ctx.parallel("pair", [lambda: 1, lambda: 2])
    doubled = ctx.map("doubled", [3, 4, 5], lambda n: 2 * n, concurrency=2)
    return {"pair": pair, "doubled": doubled, "sum": add(x=sum(pair), y=sum(doubled))}


@tool
def charge(amount: int) -> str:
    return f"charge-{amount}"


@tool
def refund(charge_id: str) -> str:
    return f"refunded {charge_id}"


@tool
def ship(order: str) -> str:
    raise RuntimeError(f"no courier for {order}")


@agent(id="golden-saga", triggers=["golden.saga"])
def saga(ctx: AgentContext) -> str:
    made = charge(amount=30)
    ctx.compensate("tool.charge", lambda: refund(charge_id=made))
    again = charge(amount=12)
    ctx.compensate("tool.charge#2", lambda: refund(charge_id=again))
    return ship(order="o-1")  # fails: the run fails after both refunds ran


@agent(id="golden-patched", triggers=["golden.patched"])
def patched(ctx: AgentContext) -> int:
    a = add(x=1, y=2)
    if ctx.patched("double-it"):
        return double(n=a)  # type: ignore[no-any-return]
    return add(x=a, y=a)  # type: ignore[no-any-return]  # what runs recorded before did


@agent(id="golden-diverged", triggers=["golden.diverged"])
def diverged(ctx: AgentContext) -> int:
    a = add(x=1, y=2)
    return double(n=a)  # type: ignore[no-any-return]  # recorded: add(x=3, y=3), unpatched


# -- memory --------------------------------------------------------------------------

MEMORY = Memory(stream="golden-notes", projection="golden-notes")


@projection(name="golden-notes", events=["note.added"], initial_state={"notes": []})
def notes(state: dict[str, Any], event: Event) -> dict[str, Any]:
    return {"notes": [*state["notes"], event.data["text"]]}


@agent(id="golden-memory", triggers=["golden.memory"], memory=MEMORY)
def remembers(ctx: AgentContext) -> dict[str, Any]:
    ctx.memory.append("note.added", {"text": "first"})
    ctx.memory.append("note.added", {"text": "second"})
    return {"notes": ctx.memory.state()["notes"]}


# -- an LLM call (recorded with ironflow.llm.ScriptedProvider) ------------------------


@tool(description="Look up the weather in a city")
def weather(city: str) -> dict[str, Any]:
    return {"city": city, "celsius": 21}


@agent(id="golden-llm", triggers=["golden.llm"])
def assistant(ctx: AgentContext) -> str:
    question = Message.user(f"What is the weather in {ctx.event.data['city']}?")
    first = ctx.llm(model="scripted-1", messages=[question], tools=[weather])
    results = [
        Message.tool(call.id, str(weather(**call.arguments)), name=call.name)
        for call in first.tool_calls
    ]
    final = ctx.llm(model="scripted-1", messages=[question, first, *results], tools=[weather])
    return final.text  # type: ignore[no-any-return]


# -- an async agent: gathered steps and waits for events ------------------------------


@agent(id="golden-async", triggers=["golden.async"])
async def gathering(ctx: AgentContext) -> dict[str, Any]:
    pages = await asyncio.gather(fetch(url="https://a.example"), fetch(url="https://bb.example"))
    payments = await asyncio.gather(
        ctx.wait_for_event("payment", timeout="1d"), ctx.wait_for_event("payment", timeout="1d")
    )
    stamp = await ctx.now()
    return {
        "words": [p.words for p in pages],
        "amounts": sorted(e.data["amount"] for e in payments),
        "late": stamp.year > 2000,
    }


#: Every agent whose runs have golden histories, with the agents they spawn.
AGENTS = [
    tools,
    sleeper,
    approver,
    spawner,
    child,
    parallel,
    saga,
    patched,
    diverged,
    remembers,
    assistant,
    gathering,
]

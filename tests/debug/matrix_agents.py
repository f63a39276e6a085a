"""Agents for crash_matrix's tests: deterministic ones, and two it must catch."""

from __future__ import annotations

import asyncio
from typing import Any

from ironflow import AgentContext, Event, Memory, agent, projection, tool

#: Tool bodies run, by tool name (only counted: the matrix checks repeats itself).
RUNS: dict[str, int] = {}


def _ran(name: str) -> None:
    RUNS[name] = RUNS.get(name, 0) + 1


@tool
def book(trip: str) -> dict[str, str]:
    _ran("book")
    return {"booking": f"B-{trip}"}


@tool
def send(to: str, text: str) -> bool:
    _ran("send")
    return True


@agent(id="matrix-notify", triggers=["matrix.notify"])
def notify(ctx: AgentContext) -> dict[str, Any]:
    return {"sent": send(to=ctx.event.data["to"], text=ctx.event.data["text"])}


@projection(name="matrix-trips", events=["trip.booked"], initial_state={})
def trips(state: dict[str, Any], event: Event) -> dict[str, Any]:
    return {**state, event.data["trip"]: event.data["booking"]}


@agent(
    id="matrix-journey",
    triggers=["matrix.journey"],
    memory=Memory(stream="matrix-trips", projection="matrix-trips"),
)
def journey(ctx: AgentContext) -> dict[str, Any]:
    trip = ctx.event.data["trip"]
    booking = book(trip=trip)["booking"]
    ctx.sleep("2d")  # a fake clock skips it
    answer = ctx.approve("confirm", {"trip": trip, "booking": booking}, ttl="1d")
    note = ctx.spawn(notify, {"to": "ann", "text": f"{trip} {answer.approved}"}).result()
    ctx.memory.append("trip.booked", {"trip": trip, "booking": booking})
    return {"booking": booking, "approved": answer.approved, "notified": note["sent"]}


@tool
async def lookup(city: str) -> int:
    _ran("lookup")
    await asyncio.sleep(0)
    return len(city)


@agent(id="matrix-gather", triggers=["matrix.gather"])
async def gather(ctx: AgentContext) -> list[int]:
    sizes = await asyncio.gather(*(lookup(city=c) for c in ctx.event.data["cities"]))
    await ctx.sleep("1h")
    return list(sizes)


#: How many times the drifting handler started: what it must not branch on.
STARTS: list[int] = []


@agent(id="matrix-drift", triggers=["matrix.drift"])
def drift(ctx: AgentContext) -> str:
    STARTS.append(1)
    first = book(trip="a")["booking"]
    # A bug the matrix finds: a branch on process state, not on the record.
    if len(STARTS) % 2 == 0:
        return first
    return first + send(to="x", text=first).__repr__()

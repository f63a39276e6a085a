"""ctx.compensate: a failed run takes back its completed steps, newest first, each a step."""

from __future__ import annotations

from typing import Any

import pytest

from ironflow import AgentContext, agent, tool
from ironflow.store import LmdbStore
from tests.flow._helpers import replay, run_agent

calls: list[str] = []


@pytest.fixture(autouse=True)
def _reset() -> None:
    calls.clear()


@tool
def book(what: str) -> str:
    calls.append(f"book:{what}")
    return f"{what}-1"


@tool
def cancel(booking: str) -> None:
    calls.append(f"cancel:{booking}")
    if booking.startswith("car"):
        raise RuntimeError("the car company is down")


@tool
def pay(amount: int) -> None:
    calls.append("pay")
    if amount > 100:
        raise ValueError("card declined")


@agent(id="trip", triggers=["trip.booked"])
def trip(ctx: AgentContext) -> Any:
    flight = book(what="flight")
    ctx.compensate("tool.book", lambda: cancel(booking=flight))
    car = book(what="car")
    ctx.compensate("tool.book#2", lambda: cancel(booking=car))
    hotel = book(what="hotel")
    ctx.compensate("tool.book#3", lambda: cancel(booking=hotel))
    pay(amount=ctx.event.data["amount"])
    return [flight, car, hotel]


def test_a_failed_run_runs_its_undos_newest_first_each_a_step(store: LmdbStore) -> None:
    """Undos run in reverse, recorded as compensate.<step>; the run fails with its own error."""
    run = run_agent(store, trip, {"amount": 500})
    assert run.status == "failed"
    assert run.error is not None and run.error.type == "ValueError"
    assert "card declined" in run.error.message
    assert calls[-3:] == ["cancel:hotel-1", "cancel:car-1", "cancel:flight-1"]
    steps = store.get_steps(run.id)
    assert [(s.id, s.status) for s in steps] == [
        ("tool.book", "completed"),
        ("tool.book#2", "completed"),
        ("tool.book#3", "completed"),
        ("tool.pay", "failed"),
        ("compensate.tool.book#3", "completed"),
        ("compensate.tool.book#2", "failed"),  # the car undo raised...
        ("compensate.tool.book", "completed"),  # ...and the flight's still ran
    ]


def test_a_completed_run_runs_no_undo(store: LmdbStore) -> None:
    """Registered undos are dropped when the handler returns."""
    run = run_agent(store, trip, {"amount": 5})
    assert run.status == "completed", run.error
    assert not any(c.startswith("cancel") for c in calls)


def test_replaying_a_compensated_run_runs_no_undo_again(store: LmdbStore) -> None:
    """The undos' records replay: re-executing the failed run calls nothing."""
    run = run_agent(store, trip, {"amount": 500})
    calls.clear()
    outcome = replay(store, run.id, trip)
    assert outcome.status == "failed"
    assert calls == []


@agent(id="typo", triggers=["typo"])
def typo(ctx: AgentContext) -> Any:
    book(what="x")
    ctx.compensate("tool.bok", lambda: None)


def test_an_undo_for_a_step_that_did_not_complete_is_refused(store: LmdbStore) -> None:
    """Naming a step the run has not completed fails the run with a message naming it."""
    run = run_agent(store, typo, {})
    assert run.status == "failed"
    assert run.error is not None and "no completed step 'tool.bok'" in run.error.message


@agent(id="async-trip", triggers=["async.trip"])
async def async_trip(ctx: AgentContext) -> Any:
    flight = await book(what="flight")

    async def undo_flight() -> None:
        await cancel(booking=flight)

    ctx.compensate("tool.book", undo_flight)
    hotel = await book(what="hotel")
    ctx.compensate("tool.book#2", lambda: cancel(booking=hotel))
    await pay(amount=1000)


def test_async_agents_compensate_too(store: LmdbStore) -> None:
    """An async run awaits its undos, sync or async, newest first."""
    run = run_agent(store, async_trip, {})
    assert run.status == "failed"
    assert calls[-2:] == ["cancel:hotel-1", "cancel:flight-1"]
    assert [s.id for s in store.get_steps(run.id)][-2:] == [
        "compensate.tool.book#2",
        "compensate.tool.book",
    ]

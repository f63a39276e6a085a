"""ctx.wait_for_event: matched in the emit's own transaction, past events count, timeouts."""

from __future__ import annotations

from typing import Any

import pytest

from ironflow import AgentContext, Event, Worker, agent
from ironflow._agent._dsl import AgentDefinition
from ironflow.store import LmdbStore
from ironflow.testing import FakeClock
from tests.primitives.conftest import emit, register, serving, wait_status


@agent(id="payee", triggers=["order.placed"])
def payee(ctx: AgentContext) -> dict[str, Any]:
    order = ctx.event.data["order"]
    paid = ctx.wait_for_event("payment.received", match={"order": order}, timeout="1d")
    if paid is None:
        return {"order": order, "paid": None}
    assert isinstance(paid, Event)
    return {"order": order, "paid": paid.data["amount"], "seq": paid.seq}


@agent(id="twice", triggers=["twice"])
def twice(ctx: AgentContext) -> list[Any]:
    first = ctx.wait_for_event("tick")
    second = ctx.wait_for_event("tick")
    return [first.data["n"], second.data["n"]]


@agent(id="nested", triggers=["nested"])
async def nested(ctx: AgentContext) -> Any:
    event = await ctx.wait_for_event("user.updated", match={"user.id": 7})
    return event.data["user"]["name"]


def test_a_waiting_run_takes_the_matching_event(store: LmdbStore) -> None:
    """The run waits (no lease); an event for another order leaves it; the right one ends it."""
    run_id = emit(store, "order.placed", {"order": "A"}, payee)
    with serving(store, [payee]):
        run = wait_status(store, run_id, "waiting")
        assert store.get_lease(run_id) is None
        assert run.suspension is not None and run.suspension.event == "payment.received"
        store.emit("payment.received", {"order": "B", "amount": 1})
        store.emit("other.event", {"order": "A"})
        assert store.get_run(run_id).status == "waiting"
        store.emit("payment.received", {"order": "A", "amount": 42})
        run = wait_status(store, run_id, "completed")
    assert run.output["paid"] == 42
    step = store.get_steps(run_id)[0]
    assert step.id == "wait.payment.received"
    assert step.input == {"event": "payment.received", "match": {"order": "A"}, "timeout": 86400.0}
    store.check_valid()


def test_an_event_emitted_after_the_run_started_but_before_the_wait_counts(
    store: LmdbStore,
) -> None:
    """Emitted between the run's start and its wait, the event is found; no suspension."""
    store.emit("payment.received", {"order": "C", "amount": 1})  # before the run: ignored
    run_id = emit(store, "order.placed", {"order": "C"}, payee)
    store.emit("payment.received", {"order": "C", "amount": 9})
    Worker([payee], store=store).run(until_idle=True, ready_message=False)
    run = store.get_run(run_id)
    assert run.status == "completed" and run.output["paid"] == 9
    assert run.attempt == 1, "the wait was over before it began: no suspension"


def test_a_wait_times_out_with_none(timed_store: LmdbStore, clock: FakeClock) -> None:
    """No matching event within the timeout: the wait returns None, recorded as such."""
    run_id = emit(timed_store, "order.placed", {"order": "D"}, payee)
    with serving(timed_store, [payee]):
        wait_status(timed_store, run_id, "waiting")
        clock.advance("1d")
        run = wait_status(timed_store, run_id, "completed")
    assert run.output == {"order": "D", "paid": None}
    # A late event finds nothing waiting and changes nothing.
    timed_store.emit("payment.received", {"order": "D", "amount": 5})
    assert timed_store.get_steps(run_id)[0].output is None
    timed_store.check_valid()


def test_two_waits_for_one_name_take_two_different_events(store: LmdbStore) -> None:
    """Each event is taken by one wait of a run: the second wait gets the next event."""
    register(store, twice)
    run_id = store.emit("twice", {}).run_ids[0]
    store.emit("tick", {"n": 1})
    store.emit("tick", {"n": 2})
    Worker([twice], store=store).run(until_idle=True, ready_message=False)
    assert store.get_run(run_id).output == [1, 2]


@agent(id="gathered", triggers=["gathered"])
async def gathered(ctx: AgentContext) -> list[Any]:
    import asyncio

    events = await asyncio.gather(ctx.wait_for_event("tick"), ctx.wait_for_event("tick"))
    return [e.data["n"] for e in events]


@agent(id="backwards", triggers=["backwards"])
async def backwards(ctx: AgentContext) -> list[Any]:
    first = ctx.wait_for_event("tick")  # position 0
    second = ctx.wait_for_event("tick")  # position 1, awaited first: takes the first tick
    later = await second
    earlier = await first
    return [earlier.data["n"], later.data["n"]]


@pytest.mark.parametrize("handler", [gathered, backwards], ids=["gather", "out-of-order"])
def test_concurrent_waits_for_one_name_take_two_different_events(
    store: LmdbStore, handler: Any
) -> None:
    """Two waits in flight at once never take the same event, whichever goes first (the
    events to skip are computed under the lock that takes them, from every other wait)."""
    register(store, handler)
    run_id = store.emit(AgentDefinition.must_from_fn(handler).triggers[0], {}).run_ids[0]
    store.emit("tick", {"n": 1})
    store.emit("tick", {"n": 2})
    Worker([handler], store=store).run(until_idle=True, ready_message=False)
    run = store.get_run(run_id)
    assert run.status == "completed", run.error
    assert sorted(run.output) == [1, 2]
    taken = [s.output["seq"] for s in store.get_steps(run_id)]
    assert len(set(taken)) == 2


def test_concurrent_waits_that_suspend_take_the_events_in_turn(store: LmdbStore) -> None:
    """With no tick yet, the gathered waits suspend; each later tick ends one of them."""
    run_id = emit(store, "gathered", {}, gathered)
    with serving(store, [gathered]):
        wait_status(store, run_id, "waiting")
        store.emit("tick", {"n": 1})
        wait_status(store, run_id, "waiting")
        assert len(store.get_steps(run_id)) == 1
        store.emit("tick", {"n": 2})
        run = wait_status(store, run_id, "completed")
    assert run.output == [1, 2]


def test_match_paths_reach_into_nested_data_in_an_async_agent(store: LmdbStore) -> None:
    """A dotted match key compares a nested field; an async agent awaits the wait."""
    run_id = emit(store, "nested", {}, nested)
    with serving(store, [nested]):
        wait_status(store, run_id, "waiting")
        store.emit("user.updated", {"user": {"id": 8, "name": "not me"}})
        store.emit("user.updated", {"user": {"id": 7, "name": "ada"}})
        run = wait_status(store, run_id, "completed")
    assert run.output == "ada"


def test_an_entity_stream_append_also_ends_a_wait(store: LmdbStore) -> None:
    """Stream events enter the same log, so they end waits just as emits do."""
    run_id = emit(store, "order.placed", {"order": "E"}, payee)
    with serving(store, [payee]):
        wait_status(store, run_id, "waiting")
        store.append_to_stream("payments", "payment.received", {"order": "E", "amount": 3})
        run = wait_status(store, run_id, "completed")
    assert run.output["paid"] == 3

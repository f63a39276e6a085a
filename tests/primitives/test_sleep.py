"""ctx.sleep / ctx.sleep_until: durable timers in the store, no worker held meanwhile."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from ironflow import AgentContext, Worker, agent, tool
from ironflow._worker._identity import this_worker
from ironflow.errors import InvalidInputError
from ironflow.store import LmdbStore
from ironflow.testing import FakeClock
from tests.primitives.conftest import emit, serving, wait_status, wait_until

effects: list[str] = []


@tool
def mark(label: str) -> str:
    effects.append(label)
    return label


@agent(id="napper", triggers=["nap"])
def napper(ctx: AgentContext) -> dict[str, Any]:
    mark(label=f"before-{ctx.event.data['n']}")
    ctx.sleep(ctx.event.data.get("for", "1h"))
    mark(label=f"after-{ctx.event.data['n']}")
    return {"n": ctx.event.data["n"]}


@agent(id="async-napper", triggers=["async.nap"])
async def async_napper(ctx: AgentContext) -> str:
    await ctx.sleep("2d")
    return str(await mark(label="async-after"))


@agent(id="until", triggers=["until"])
def until_agent(ctx: AgentContext) -> str:
    ctx.sleep_until(dt.datetime.fromisoformat(ctx.event.data["at"]))
    return "woke"


def test_a_sleeping_run_holds_no_lease_and_wakes_when_its_time_comes(
    timed_store: LmdbStore, clock: FakeClock
) -> None:
    """The run is `sleeping` with no lease or worker slot, then finishes once the clock passes."""
    effects.clear()
    run_id = emit(timed_store, "nap", {"n": 1}, napper)
    with serving(timed_store, [napper]) as worker:
        run = wait_status(timed_store, run_id, "sleeping")
        assert timed_store.get_lease(run_id) is None
        assert run.suspension is not None and run.suspension.step_id == "sleep"
        assert run.suspension.wake_at == pytest.approx(run.suspension.since + 3600)
        wait_until(lambda: not worker._active, what="the worker to let go of the run")
        clock.advance("59m")
        assert timed_store.get_run(run_id).status == "sleeping"
        clock.advance("1m")
        run = wait_status(timed_store, run_id, "completed")
    assert run.output == {"n": 1}
    assert effects == ["before-1", "after-1"]
    steps = timed_store.get_steps(run_id)
    assert [s.id for s in steps] == ["tool.mark", "sleep", "tool.mark#2"]
    assert steps[1].input == {"seconds": 3600.0} and steps[1].output is None
    timed_store.check_valid()


def test_a_durable_timer_fires_after_a_restart(tmp_path: Path) -> None:
    """A run put to sleep by one worker and store is woken by a new store and worker later."""
    clock = FakeClock()
    first = LmdbStore(tmp_path / "data", sync=False, clock=clock)
    run_id = emit(first, "nap", {"n": 2, "for": "30m"}, napper)
    with serving(first, [napper]):
        wait_status(first, run_id, "sleeping")
    first.close()
    clock.advance("31m")
    second = LmdbStore(tmp_path / "data", sync=False, clock=clock)
    try:
        with serving(second, [napper]):
            run = wait_status(second, run_id, "completed")
        assert run.output == {"n": 2}
    finally:
        second.close()


def test_a_zero_sleep_does_not_suspend(store: LmdbStore) -> None:
    """A sleep that is already over is recorded at once; the run never leaves the worker."""
    run_id = emit(store, "nap", {"n": 3, "for": 0}, napper)
    Worker([napper], store=store).run(until_idle=True, ready_message=False)
    run = store.get_run(run_id)
    assert run.status == "completed" and run.attempt == 1 and run.suspension is None


def test_an_async_agent_sleeps_the_same_way(timed_store: LmdbStore, clock: FakeClock) -> None:
    """`await ctx.sleep(...)` suspends an async run; it completes once the time has come."""
    run_id = emit(timed_store, "async.nap", {}, async_napper)
    with serving(timed_store, [async_napper]):
        wait_status(timed_store, run_id, "sleeping")
        clock.advance("2d")
        run = wait_status(timed_store, run_id, "completed")
    assert run.output == "async-after"


def test_sleep_until_wakes_at_the_given_time(timed_store: LmdbStore, clock: FakeClock) -> None:
    """sleep_until records the UTC time as input and wakes when the store's clock reaches it."""
    at = dt.datetime.fromtimestamp(clock() + 90, dt.UTC)
    run_id = emit(timed_store, "until", {"at": at.isoformat()}, until_agent)
    with serving(timed_store, [until_agent]):
        run = wait_status(timed_store, run_id, "sleeping")
        assert run.suspension is not None
        assert run.suspension.wake_at == pytest.approx(at.timestamp())
        clock.advance(91)
        wait_status(timed_store, run_id, "completed")
    assert timed_store.get_steps(run_id)[0].input == {"until": at.isoformat()}


def test_bad_durations_fail_the_run_before_anything_is_recorded(store: LmdbStore) -> None:
    """ctx.sleep("soon") and a naive datetime fail the run with InvalidInputError, no step."""
    bad = emit(store, "nap", {"n": 4, "for": "soon"}, napper)
    naive = emit(store, "until", {"at": "2030-01-01T00:00:00"}, until_agent)
    Worker([napper, until_agent], store=store).run(until_idle=True, ready_message=False)
    for run_id, message in ((bad, "not a duration"), (naive, "timezone-aware")):
        run = store.get_run(run_id)
        assert run.status == "failed" and run.error is not None
        assert run.error.type == InvalidInputError.__name__ and message in run.error.message
        assert [s.id for s in store.get_steps(run_id)] in (["tool.mark"], [])


def test_sleeps_past_a_hundred_years_fail_the_run_clearly_and_listing_still_works(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """ctx.sleep(1e12) and a sleep_until in the year 9000 fail with the limit named; no
    run sleeps with a wake-up no date can show, so run list and inspect still work."""
    from ironflow._cli._main import main

    store = LmdbStore(tmp_path / "data", sync=False)
    long = emit(store, "nap", {"n": 5, "for": 1e12}, napper)
    far = emit(store, "until", {"at": "9000-01-01T00:00:00+00:00"}, until_agent)
    Worker([napper, until_agent], store=store).run(until_idle=True, ready_message=False)
    for run_id, message in (
        (long, "ctx.sleep: 1000000000000.0 is longer than 100 years"),
        (far, "ctx.sleep_until: 9000-01-01 00:00:00+00:00 is more than 100 years ahead"),
    ):
        run = store.get_run(run_id)
        assert run.status == "failed" and run.error is not None, run.status
        assert run.error.type == InvalidInputError.__name__ and message in run.error.message
    store.close()
    data_dir = str(tmp_path / "data")
    assert main(["run", "list", "--data-dir", data_dir]) == 0
    assert main(["inspect", long, "--data-dir", data_dir]) == 0
    assert "100 years" in capsys.readouterr().out


@pytest.mark.parametrize("option", ["ttl", "timeout"])
def test_waits_past_a_hundred_years_are_refused_where_given(store: LmdbStore, option: str) -> None:
    """An approval's ttl and an event wait's timeout have the same bound."""

    @agent(id=f"far-{option}", triggers=[f"far.{option}"])
    def far_wait(ctx: AgentContext) -> Any:
        if option == "ttl":
            return ctx.approve("deploy", ttl="40000d")
        return ctx.wait_for_event("never", timeout=dt.timedelta(days=40000))

    run_id = emit(store, f"far.{option}", {}, far_wait)
    Worker([far_wait], store=store).run(until_idle=True, ready_message=False)
    run = store.get_run(run_id)
    assert run.status == "failed" and run.error is not None
    assert "longer than 100 years" in run.error.message
    assert store.get_steps(run_id) == []


def test_many_sleeping_runs_cost_the_worker_nothing(
    timed_store: LmdbStore, clock: FakeClock
) -> None:
    """Five hundred sleepers: none held by a worker, an idle lease writes nothing, all wake."""
    ids = [emit(timed_store, "nap", {"n": i, "for": "1d"}, napper) for i in range(500)]
    Worker([napper], store=timed_store, concurrency=16).run(until_idle=True, ready_message=False)
    assert {r.status for r in timed_store.list_runs(limit=1000)} == {"sleeping"}
    timed_store.check_valid()
    # Nothing is due: a lease poll is a read, and hands out nothing.
    assert timed_store.lease_runs(this_worker(), ["napper"], limit=8, ttl=10) == []
    clock.advance("1d")
    Worker([napper], store=timed_store, concurrency=16).run(until_idle=True, ready_message=False)
    assert all(timed_store.get_run(r).status == "completed" for r in ids)
    timed_store.check_valid()


def test_a_sleep_ends_when_the_clock_reaches_it_exactly(tmp_path: Path) -> None:
    """A clock moved by exactly the sleep's length wakes the run, whatever the start time.

    The start below is one where the timer key's microseconds, read back as a float,
    land a hair after the wake-up time: comparing that float with the clock left the
    run asleep for ever under a fake clock (about one start time in 200 did this).
    """
    start = 1795838510.0342839
    assert int((start + 600) * 1_000_000) / 1_000_000 > start + 600  # the awkward case
    clock = FakeClock(start=start)
    store = LmdbStore(tmp_path / "data", sync=False, clock=clock)
    try:
        run_id = emit(store, "nap", {"n": 1, "for": "10m"}, napper)
        Worker([napper], store=store).run(until_idle=True, ready_message=False)
        assert store.get_run(run_id).status == "sleeping"
        clock.advance("10m")
        Worker([napper], store=store).run(until_idle=True, ready_message=False)
        assert store.get_run(run_id).status == "completed"
    finally:
        store.close()

"""The store's flow control: filters, versions, concurrency slots, cancel-on, debounce,
cron ticks, pause and resume, re-running from a step."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ironflow._worker._identity import this_worker
from ironflow.errors import InvalidInputError
from ironflow.store import AgentSpec, LmdbStore, WorkerInfo
from ironflow.store._flowspec import (
    CancelOn,
    ConcurrencyLimit,
    CronTrigger,
    Debounce,
    FlowSpec,
)
from tests.helpers import completed_step


class Clock:
    """The store's timer clock, moved by hand."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def fstore(tmp_path: Path, clock: Clock) -> Iterator[LmdbStore]:
    s = LmdbStore(tmp_path / "data", sync=False, clock=clock)
    yield s
    s.check_valid()
    s.close()


ME = this_worker()


def register(store: LmdbStore, agent: str, triggers: tuple[str, ...] = (), **flow: Any) -> None:
    store.register_agents([AgentSpec(id=agent, triggers=triggers, flow=FlowSpec(**flow))])


def lease(store: LmdbStore, agent: str, worker: WorkerInfo = ME, limit: int = 10) -> list[str]:
    return [lr.run.id for lr in store.lease_runs(worker, [agent], limit=limit, ttl=60)]


def test_a_filter_decides_at_emit_and_a_version_is_stamped(fstore: LmdbStore) -> None:
    """An event the filter rejects starts no run; a run carries the agent's version."""
    register(fstore, "gold", ("order.*",), filter='data.tier == "gold"', version="v7")
    assert fstore.emit("order.created", {"tier": "silver"}).run_ids == ()
    (run_id,) = fstore.emit("order.created", {"tier": "gold"}).run_ids
    assert fstore.get_run(run_id).version == "v7"


def test_concurrency_holds_n_runs_per_key_and_starts_the_rest_in_order(
    fstore: LmdbStore,
) -> None:
    """Limit 1 per customer: one run per key leases; the next starts when it finishes."""
    register(fstore, "c", ("job",), concurrency=ConcurrencyLimit(1, "data.customer"))
    a1, a2, a3 = (fstore.emit("job", {"customer": "a", "n": n}).run_ids[0] for n in range(3))
    (b1,) = fstore.emit("job", {"customer": "b"}).run_ids
    assert fstore.get_run(a2).status == "queued"
    assert sorted(lease(fstore, "c")) == sorted([a1, b1])
    assert lease(fstore, "c") == []
    fstore.finish_run(ME, a1, status="completed", attempt=1)
    assert lease(fstore, "c") == [a2]
    fstore.release_run(ME, a2, attempt=1)  # handed back: it frees its slot, and comes back first
    assert lease(fstore, "c") == [a2]
    fstore.finish_run(ME, a2, status="failed", attempt=2)
    assert lease(fstore, "c") == [a3]


def test_cancel_on_cancels_runs_whose_trigger_matches(fstore: LmdbStore) -> None:
    """order.cancelled for order 1 cancels order 1's run, pending or running, not order 2's."""
    register(
        fstore,
        "ship",
        ("order.created",),
        cancel_on=(CancelOn("order.cancelled", "data.orderId"),),
    )
    (r1,) = fstore.emit("order.created", {"orderId": 1}).run_ids
    (r2,) = fstore.emit("order.created", {"orderId": 2}).run_ids
    (r3,) = fstore.emit("order.created", {"orderId": 3}).run_ids
    assert sorted(lease(fstore, "ship", limit=1)) == [r1]
    fstore.emit("order.cancelled", {"orderId": 1})
    fstore.emit("order.cancelled", {"orderId": 2})
    assert fstore.get_run(r1).cancel_requested  # running: stops at its next step boundary
    assert fstore.get_run(r2).status == "cancelled"
    assert fstore.get_run(r3).status == "pending"


def test_debounce_starts_one_run_per_burst_with_the_last_event(
    fstore: LmdbStore, clock: Clock
) -> None:
    """Events 1 s apart with a 5 s period make one run, due 5 s after the last."""
    register(fstore, "d", ("ping",), debounce=Debounce(5.0, "data.user", 60.0))
    ids = set()
    for n in range(4):
        ids.update(fstore.emit("ping", {"user": "u", "n": n}).run_ids)
        clock.now += 1
    (run_id,) = ids
    assert fstore.get_run(run_id).status == "queued"
    assert lease(fstore, "d") == []
    clock.now += 4.5
    run = fstore.lease_runs(ME, ["d"], limit=10, ttl=60)
    assert [lr.run.id for lr in run] == [run_id]
    assert run[0].run.event.data == {"user": "u", "n": 3}
    (next_burst,) = fstore.emit("ping", {"user": "u", "n": 9}).run_ids
    assert next_burst != run_id


def test_debounce_max_wait_starts_a_run_that_never_goes_quiet(
    fstore: LmdbStore, clock: Clock
) -> None:
    """A burst that keeps going starts its run at max_wait after its first event."""
    register(fstore, "d", ("ping",), debounce=Debounce(5.0, None, 12.0))
    started: list[str] = []
    for n in range(20):
        fstore.emit("ping", {"n": n})
        started += lease(fstore, "d")
        clock.now += 1
    assert len(started) == 1


def test_cron_fires_once_per_tick_and_once_after_downtime(fstore: LmdbStore, clock: Clock) -> None:
    """Three workers polling fire each tick once; ten missed ticks fire once."""
    clock.now = 1_800_000_000.0 - 1_800_000_000.0 % 60  # on a minute
    register(fstore, "tick", crons=(CronTrigger("* * * * *"),))
    workers = [this_worker(f"w{i}") for i in range(3)]
    runs: list[str] = []
    for _ in range(3):
        clock.now += 60
        for w in workers:
            runs += lease(fstore, "tick", w)
    assert len(runs) == 3
    ticks = [fstore.get_run(r).event.data["tick"] for r in runs]
    assert len(set(ticks)) == 3
    clock.now += 600  # ten ticks missed while no worker ran
    assert len(lease(fstore, "tick", workers[1]) + lease(fstore, "tick", workers[2])) == 1


def test_cron_catch_up_fires_every_missed_tick(fstore: LmdbStore, clock: Clock) -> None:
    """With catch_up, each missed tick gets its own run."""
    clock.now = 1_800_000_000.0 - 1_800_000_000.0 % 60
    register(fstore, "tick", crons=(CronTrigger("* * * * *", catch_up=True),))
    clock.now += 600
    assert len(lease(fstore, "tick", limit=100)) == 10


def test_pause_holds_a_run_and_resume_lets_it_go(fstore: LmdbStore) -> None:
    """A paused pending run is not leased; a running one is told at its next step."""
    register(fstore, "p", ("go",))
    (pending,) = fstore.emit("go", {}).run_ids
    assert fstore.pause_run(pending).status == "paused"
    assert lease(fstore, "p") == []
    (running,) = fstore.emit("go", {}).run_ids
    assert lease(fstore, "p") == [running]
    fstore.pause_run(running)
    assert fstore.record_step(ME, completed_step(running, 0)).pause_requested
    fstore.release_run(ME, running, attempt=1)  # the engine stops at the boundary and hands it back
    assert fstore.get_run(running).status == "paused"
    assert fstore.resume_run(pending).status == "pending"
    assert fstore.resume_run(running).status == "pending"
    assert sorted(lease(fstore, "p")) == sorted([pending, running])


def test_resume_from_step_reruns_a_finished_run_keeping_earlier_records(
    fstore: LmdbStore,
) -> None:
    """From step s1: s0 stays, s1 and later are dropped, the run is pending again."""
    register(fstore, "r", ("go",))
    (run_id,) = fstore.emit("go", {}).run_ids
    lease(fstore, "r")
    for p in range(3):
        fstore.record_step(ME, completed_step(run_id, p))
    fstore.finish_run(ME, run_id, status="failed", attempt=1)
    with pytest.raises(InvalidInputError, match="no step 'nope'"):
        fstore.resume_run(run_id, from_step="nope")
    # Without a step, a finished run is refused (it used to return it unchanged, and
    # `ironflow run resume` said "run ... is failed" and exited 0), naming the steps.
    with pytest.raises(InvalidInputError, match=r"has finished \(failed\).*s0, s1, s2"):
        fstore.resume_run(run_id)
    run = fstore.resume_run(run_id, from_step="s1")
    assert run.status == "pending"
    assert [s.id for s in fstore.get_steps(run_id)] == ["s0"]
    assert [(r.from_step, r.position, r.previous_status) for r in run.reruns] == [
        ("s1", 1, "failed")
    ]
    with pytest.raises(InvalidInputError, match="is pending"):
        fstore.resume_run(run_id, from_step="s0")


def test_a_paused_sleeping_run_stays_paused_when_it_wakes(fstore: LmdbStore, clock: Clock) -> None:
    """Paused while asleep: when the sleep ends it is paused, not leased, until resumed."""
    from ironflow.store import Suspension

    register(fstore, "s", ("go",))
    (run_id,) = fstore.emit("go", {}).run_ids
    lease(fstore, "s")
    sleep = Suspension(kind="sleep", position=0, step_id="sleep", wake_in=5)
    fstore.suspend_run(ME, run_id, sleep, attempt=1)
    assert fstore.pause_run(run_id).status == "sleeping"
    clock.now += 10
    assert lease(fstore, "s") == []
    assert fstore.get_run(run_id).status == "paused"
    assert [s.id for s in fstore.get_steps(run_id)] == ["sleep"]
    fstore.resume_run(run_id)
    assert lease(fstore, "s") == [run_id]


def test_queued_status_counts_only_unfinished_runs(fstore: LmdbStore) -> None:
    """A run cancelled while queued frees its place in line for the next new run."""
    register(fstore, "c", ("job",), concurrency=ConcurrencyLimit(1))
    (first,) = fstore.emit("job", {}).run_ids
    (second,) = fstore.emit("job", {}).run_ids
    assert fstore.get_run(second).status == "queued"
    fstore.request_cancel(first)
    fstore.request_cancel(second)
    (third,) = fstore.emit("job", {}).run_ids
    assert fstore.get_run(third).status == "pending"


def test_a_paused_debounced_run_is_paused_when_its_burst_ends(
    fstore: LmdbStore, clock: Clock
) -> None:
    """Paused during its burst, a debounced run does not start when the burst ends."""
    register(fstore, "d", ("ping",), debounce=Debounce(5.0))
    (run_id,) = fstore.emit("ping", {}).run_ids
    fstore.pause_run(run_id)
    clock.now += 6
    assert lease(fstore, "d") == []
    assert fstore.get_run(run_id).status == "paused"
    fstore.resume_run(run_id)
    assert lease(fstore, "d") == [run_id]

"""Cancelling sleeping and waiting runs: at once, their timers gone, no step ever again."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ironflow import AgentContext, Worker, agent, tool
from ironflow._cli._main import main
from ironflow._worker._identity import this_worker
from ironflow.store import LmdbStore, Suspension
from ironflow.testing import FakeClock
from tests.primitives.conftest import emit, register, serving, wait_status

after: list[str] = []


@tool
def after_wake(label: str) -> str:
    after.append(label)
    return label


@agent(id="dozer", triggers=["doze"])
def dozer(ctx: AgentContext) -> Any:
    ctx.sleep("1h")
    return after_wake(label=ctx.run_id)


@agent(id="listener", triggers=["listen"])
def listener(ctx: AgentContext) -> Any:
    ctx.wait_for_event("never.mind")
    return after_wake(label=ctx.run_id)


@agent(id="worker-bee", triggers=[])
def worker_bee(ctx: AgentContext) -> Any:
    ctx.sleep("1d")
    return after_wake(label=ctx.run_id)


@agent(id="queen", triggers=["hive"])
def queen(ctx: AgentContext) -> Any:
    return ctx.spawn(worker_bee, {}).result()


def test_cancelling_a_sleeping_run_ends_it_now_and_it_never_steps_again(
    timed_store: LmdbStore, clock: FakeClock
) -> None:
    """The sleeper is cancelled at once; past its wake-up time nothing of it runs."""
    after.clear()
    run_id = emit(timed_store, "doze", {}, dozer)
    with serving(timed_store, [dozer]):
        wait_status(timed_store, run_id, "sleeping")
        run = timed_store.request_cancel(run_id)
        assert run.status == "cancelled" and run.cancel_requested
        timed_store.check_valid()  # its timer is gone with it
        clock.advance("2h")
        # A lease poll past the wake-up time finds nothing to do for it.
        assert timed_store.lease_runs(this_worker(), ["dozer"], limit=5, ttl=10) == []
    assert timed_store.get_run(run_id).status == "cancelled"
    assert [s.id for s in timed_store.get_steps(run_id)] == []
    assert after == []


def test_cancelling_a_waiting_run_ends_it_and_a_late_event_does_nothing(
    store: LmdbStore,
) -> None:
    """A run waiting for an event is cancelled now; the event, when it comes, finds no one."""
    after.clear()
    run_id = emit(store, "listen", {}, listener)
    with serving(store, [listener]):
        wait_status(store, run_id, "waiting")
        store.request_cancel(run_id)
        store.emit("never.mind", {})
        store.check_valid()
    assert store.get_run(run_id).status == "cancelled"
    assert store.get_steps(run_id) == [] and after == []


def test_ironflow_run_cancel_on_a_sleeping_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`ironflow run cancel` says the sleeping run is cancelled, not 'at its next boundary'."""
    monkeypatch.delenv("IRONFLOW_URL", raising=False)
    path = tmp_path / "data"
    store = LmdbStore(path, sync=False)
    run_id = emit(store, "doze", {}, dozer)
    Worker([dozer], store=store).run(until_idle=True, ready_message=False)
    assert store.get_run(run_id).status == "sleeping"
    store.close()
    assert main(["run", "cancel", run_id, "--data-dir", str(path)]) == 0
    assert capsys.readouterr().out.strip() == f"run {run_id} cancelled"


def test_cancelling_a_parent_cancels_its_children(timed_store: LmdbStore) -> None:
    """The waiting parent and its sleeping child are both cancelled by one request."""
    run_id = emit(timed_store, "hive", {}, queen)
    with serving(timed_store, [queen, worker_bee]):
        parent = wait_status(timed_store, run_id, "waiting")
        assert parent.suspension is not None and parent.suspension.child_id is not None
        child_id = parent.suspension.child_id
        wait_status(timed_store, child_id, "sleeping")
        timed_store.request_cancel(run_id)
    assert timed_store.get_run(run_id).status == "cancelled"
    assert timed_store.get_run(child_id).status == "cancelled"
    timed_store.check_valid()


def test_cancelling_a_child_fails_the_parents_wait(timed_store: LmdbStore) -> None:
    """A cancelled child ends its parent's wait with a failure naming the cancellation."""
    run_id = emit(timed_store, "hive", {}, queen)
    with serving(timed_store, [queen, worker_bee]):
        parent = wait_status(timed_store, run_id, "waiting")
        assert parent.suspension is not None and parent.suspension.child_id is not None
        wait_status(timed_store, parent.suspension.child_id, "sleeping")
        timed_store.request_cancel(parent.suspension.child_id)
        run = wait_status(timed_store, run_id, "failed")
    assert run.error is not None and run.error.type == "Cancelled"
    assert run.error.step_id == "spawn.worker-bee.result"
    assert "(worker-bee) cancelled" in run.error.message


def test_a_cancel_requested_while_running_stops_a_suspension(store: LmdbStore) -> None:
    """suspend_run on a run with a pending cancel writes nothing and says cancel instead."""
    register(store, dozer)
    run_id = store.emit("doze", {}).run_ids[0]
    worker = this_worker()
    store.lease_runs(worker, ["dozer"], limit=1, ttl=30)
    store.request_cancel(run_id)
    result = store.suspend_run(
        worker,
        run_id,
        Suspension(kind="sleep", position=0, step_id="sleep", wake_in=60),
        attempt=1,
    )
    assert result.cancel_requested and not result.suspended and result.step is None
    assert store.get_run(run_id).status == "running"
    store.check_valid()


def test_cancelling_a_paused_sleeping_run_leaves_no_pause_behind(tmp_path: Path) -> None:
    """A sleeping run paused then cancelled is finished everywhere: no pause entry stays."""

    @agent(id="nap", triggers=["nap"])
    def nap(ctx: AgentContext) -> None:
        ctx.sleep("1h")

    store = LmdbStore(tmp_path / "d", sync=False)
    try:
        worker = Worker([nap], store=store)
        run_id = store.emit("nap", {}).run_ids[0]
        worker.run(until_idle=True, ready_message=False)
        assert store.get_run(run_id).status == "sleeping"
        store.pause_run(run_id)
        assert store.request_cancel(run_id).status == "cancelled"
        with store.backend.read() as txn:
            assert txn.get("paused", run_id.encode()) is None
    finally:
        store.close()

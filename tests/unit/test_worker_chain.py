"""A sync worker's run thread leases its next run itself as a run ends (no hand-off).

What must hold however runs are handed between threads: every run executing is one the
worker holds as active (so it is heartbeated and drained), nothing is left marked
active once it ended, ``concurrency`` is never exceeded, and a stop leases nothing more.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest

from ironflow import AgentContext, LmdbStore, Worker, agent, current_step, tool

_seen: dict[str, Any] = {}
_lock = threading.Lock()


@tool
def look(i: int) -> dict[str, Any]:
    """Records, from inside the step, what the worker holds as active then."""
    info = current_step()
    assert info is not None
    worker: Worker = _seen["worker"]
    with worker._lock:
        active = set(worker._active)
    with _lock:
        _seen.setdefault("active", []).append((info.run_id, active))
        _seen.setdefault("threads", set()).add(threading.get_ident())
    if i == _seen.get("stop_at"):
        worker.stop()
    return {"i": i}


@agent(id="chain-look", triggers=["chain.look"])
def looker(ctx: AgentContext) -> int:
    look(i=int(ctx.event.data["i"]))
    look(i=-1)
    return int(ctx.event.data["i"])


def _serve(store: LmdbStore, runs: int, concurrency: int, **seen: Any) -> tuple[Worker, list[str]]:
    """Emit ``runs`` runs, then serve them until idle; the worker and the run ids."""
    _seen.clear()
    _seen.update(seen)
    worker = Worker([looker], store=store, concurrency=concurrency)
    _seen["worker"] = worker
    ids = [store.emit("chain.look", {"i": i}).run_ids[0] for i in range(runs)]
    worker.run(until_idle=True, ready_message=False)
    return worker, ids


def test_each_run_of_a_backlog_is_held_active_while_it_executes_and_none_after(
    store: LmdbStore,
) -> None:
    """Ten runs, concurrency 1: each step sees exactly its own run active; all complete."""
    worker, ids = _serve(store, 10, 1)
    assert [store.get_run(r).status for r in ids] == ["completed"] * 10
    for run_id, active in _seen["active"]:
        assert active == {run_id}
    assert worker._active == {}


def test_concurrency_bounds_the_runs_held_at_once(store: LmdbStore) -> None:
    """Concurrency 2 over twenty runs: never more than two active, every step's own among them."""
    worker, ids = _serve(store, 20, 2)
    assert {store.get_run(r).status for r in ids} == {"completed"}
    for run_id, active in _seen["active"]:
        assert run_id in active
        assert len(active) <= 2
    assert worker._active == {}


def test_a_stop_during_a_backlog_leases_nothing_more(store: LmdbStore) -> None:
    """A stop in run 2's first step: that run is handed back, later runs stay pending."""
    worker, ids = _serve(store, 6, 1, stop_at=2)
    statuses = [store.get_run(r).status for r in ids]
    assert statuses[:2] == ["completed", "completed"]
    assert statuses[2:] == ["pending"] * 4
    assert worker._active == {}


def test_a_run_ended_while_its_thread_leases_the_next_is_not_called_lost(
    store: LmdbStore, caplog: pytest.LogCaptureFixture
) -> None:
    """Heartbeats every 10 ms over a backlog: none finds a finished run "lost"."""
    worker = Worker([looker], store=store, concurrency=1, lease_ttl=0.03)
    _seen.clear()
    _seen["worker"] = worker
    ids = [store.emit("chain.look", {"i": i}).run_ids[0] for i in range(300)]
    with caplog.at_level(logging.WARNING, logger="ironflow.worker"):
        worker.run(until_idle=True, ready_message=False)
    assert {store.get_run(r).status for r in ids} == {"completed"}
    assert [r.getMessage() for r in caplog.records if "lease lost" in r.getMessage()] == []

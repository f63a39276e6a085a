"""finish_and_lease: a run's finish and the lease of the next, in one transaction.

A worker with a backlog ends a run and takes its next for one durable commit, not two
(issue 13 target 4). The rules are the finish's and the lease's own, so the combined
call must answer as finish_run then lease_runs would, commit once, and write nothing
when the finish is refused.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ironflow import AgentContext, Worker, agent, tool
from ironflow.errors import LeaseLostError
from ironflow.store import AgentSpec, LmdbStore
from ironflow.store._flowspec import ConcurrencyLimit, FlowSpec
from ironflow.store._machine import StoreMachine
from ironflow.testing import StandInWorker

AGENTS = [
    AgentSpec("plain", ("go",)),
    AgentSpec("limited", ("one",), flow=FlowSpec(concurrency=ConcurrencyLimit(1, "data.k"))),
]


def test_one_commit_for_the_finish_and_the_next_lease(tmp_path: Path) -> None:
    store = LmdbStore(tmp_path / "data", sync=False)
    try:
        store.register_agents(AGENTS)
        for i in range(3):
            store.emit("go", {"i": i})
        with StandInWorker() as w:
            [first] = store.lease_runs(w.info, ["plain"], limit=1, ttl=60)
            commits: list[int] = []
            store.commit_observer = lambda seconds, n: commits.append(n)
            [second] = store.finish_and_lease(
                w.info,
                first.run.id,
                status="completed",
                output=1,
                attempt=first.run.attempt,
                agents=["plain"],
                limit=1,
                ttl=60,
            )
            assert len(commits) == 1  # two separate calls: two commits
            assert store.get_run(first.run.id).status == "completed"
            assert store.get_run(first.run.id).output == 1
            assert store.get_lease(first.run.id) is None
            assert second.run.status == "running" and second.run.id != first.run.id
            lease = store.get_lease(second.run.id)
            assert lease is not None and lease.worker == w.info
            store.check_valid()
    finally:
        store.close()


def test_a_refused_finish_leases_nothing(machine: StoreMachine) -> None:
    """Fenced as finish_run is: a stale attempt writes neither the finish nor a lease."""
    machine.register_agents(AGENTS)
    machine.emit("go", {})
    machine.emit("go", {})
    with StandInWorker() as w:
        [first] = machine.lease_runs(w.info, ["plain"], limit=1, ttl=60)
        with pytest.raises(LeaseLostError):
            machine.finish_and_lease(
                w.info,
                first.run.id,
                status="completed",
                attempt=first.run.attempt - 1,
                agents=["plain"],
                limit=1,
                ttl=60,
            )
        assert machine.get_run(first.run.id).status == "running"
        assert sorted(r.status for r in machine.list_runs()) == ["pending", "running"]
        machine.check_valid()


def test_the_lease_sees_the_slot_the_finish_freed(machine: StoreMachine) -> None:
    """Concurrency 1 per key: the next run of the key is taken in the finish's own
    transaction, as a lease right after the finish would take it."""
    machine.register_agents(AGENTS)
    machine.emit("one", {"k": "a"})
    machine.emit("one", {"k": "a"})
    with StandInWorker() as w:
        [first] = machine.lease_runs(w.info, ["limited"], limit=2, ttl=60)
        assert machine.lease_runs(w.info, ["limited"], limit=2, ttl=60) == []  # queued
        [second] = machine.finish_and_lease(
            w.info,
            first.run.id,
            status="completed",
            attempt=first.run.attempt,
            agents=["limited"],
            limit=2,
            ttl=60,
        )
        assert second.run.id != first.run.id
        machine.check_valid()


def test_a_paused_run_is_not_leased(machine: StoreMachine) -> None:
    machine.register_agents(AGENTS)
    machine.emit("go", {})
    waiting = machine.emit("go", {}).run_ids[0]
    with StandInWorker() as w:
        [first] = machine.lease_runs(w.info, ["plain"], limit=1, ttl=60)
        machine.pause_run(waiting)
        leased = machine.finish_and_lease(
            w.info,
            first.run.id,
            status="failed",
            attempt=first.run.attempt,
            agents=["plain"],
            limit=1,
            ttl=60,
        )
        assert leased == []
        assert machine.get_run(waiting).status == "paused"


@tool
def one_step(i: int) -> int:
    return i


@agent(id="finish-lease-chain", triggers=["chain.go"])
def chain_agent(ctx: AgentContext) -> int:
    return one_step(i=int(ctx.event.data["i"]))


def test_a_worker_with_a_backlog_commits_once_between_two_runs(tmp_path: Path) -> None:
    """A sequential worker working through a backlog: each run costs its emit, its step
    and one commit that finishes it and leases the next (the first run's lease aside):
    2 per run and 1, where finish then lease made it 3 per run and 1."""
    store = LmdbStore(tmp_path / "data", sync=False)
    try:
        # A long lease: no heartbeat commits within the test.
        worker = Worker([chain_agent], store=store, concurrency=1, lease_ttl=600)
        runs = 5
        for i in range(runs):
            store.emit("chain.go", {"i": i})
        commits: list[int] = []
        store.commit_observer = lambda seconds, n: commits.append(n)
        worker.run(until_idle=True)
        assert all(r.status == "completed" for r in store.list_runs())
        # The first lease, one step and one finish-and-lease per run: the last
        # finish leases nothing (then the idle look is a read, not a commit).
        assert len(commits) == 1 + 2 * runs
    finally:
        store.close()

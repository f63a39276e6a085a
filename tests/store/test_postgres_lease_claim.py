"""A lease's claim on PostgreSQL goes with its look for work.

A lease announces the claim it most likely makes (``_leasing.claiming``: the oldest
ready runs of its agents, not paused), and ``PgTxn.prefetch`` locks those rows, with
their records, in the query of the look for work: a claim that takes exactly them
asks nothing more. Whatever the guess, the claim is the rule's (``_leasing._candidates``):
a run the guess took that the rule refuses is left for later, and a run the guess
missed is claimed by a query of its own. Each test runs on a real PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ironflow.store import AgentSpec, PostgresStore
from ironflow.store._flowspec import ConcurrencyLimit, FlowSpec
from ironflow.testing import StandInWorker
from tests.store.pg_trips import round_trips


@pytest.fixture
def store(pg_url: str) -> Iterator[PostgresStore]:
    s = PostgresStore(pg_url)
    try:
        yield s
    finally:
        s.close()


def test_a_lease_through_a_backlog_claims_with_its_look_two_round_trips(
    store: PostgresStore,
) -> None:
    """lease_runs of a worker working through a backlog (no idle look first): its
    look, claim and the claimed run's records in one round trip, its writes and COMMIT
    with the steps' read in the second. It was three: the claim waited for the look."""
    store.register_agents([AgentSpec("a", ("go",))])
    emitted = [store.emit("go", {"i": i}).run_ids[0] for i in range(5)]
    counted = []
    taken = []
    with StandInWorker() as worker:
        taken += [r.run.id for r in store.lease_runs(worker.info, ["a"], limit=1, ttl=600)]
        for _ in range(3):
            with round_trips(store) as trips:
                leased = store.lease_runs(worker.info, ["a"], limit=1, ttl=600)
            counted += trips
            taken += [r.run.id for r in leased]
    assert taken == emitted[:4]
    # The fewest: a busy host may split one turn in two (tests/store/pg_trips.py).
    assert min(counted) == 2, counted


def test_a_run_the_guess_takes_and_the_rule_refuses_is_left_and_the_right_one_taken(
    store: PostgresStore,
) -> None:
    """The oldest ready run waits for its agent's one concurrency slot: the guess
    locks it, the rule refuses it, and the lease claims the next run (of another agent)
    with a query of its own. The refused run is leased once its slot is free."""
    limited = AgentSpec("a", ("go",), flow=FlowSpec(concurrency=ConcurrencyLimit(1)))
    store.register_agents([limited, AgentSpec("b", ("other",))])
    first = store.emit("go", {"i": 0}).run_ids[0]
    queued = store.emit("go", {"i": 1}).run_ids[0]
    other = store.emit("other", {}).run_ids[0]
    with StandInWorker() as one, StandInWorker() as two:
        [held] = store.lease_runs(one.info, ["a", "b"], limit=1, ttl=600)
        assert held.run.id == first
        [taken] = store.lease_runs(two.info, ["a", "b"], limit=1, ttl=600)
        assert taken.run.id == other
        assert store.get_run(queued).status in ("pending", "queued")
        assert store.get_lease(queued) is None
        [after] = store.finish_and_lease(
            one.info,
            first,
            status="completed",
            attempt=held.lease.attempt,
            agents=["a", "b"],
            limit=1,
            ttl=600,
        )
        assert after.run.id == queued and list(after.steps) == []
        assert store.get_lease(queued) is not None
        assert store.get_lease(queued).worker == one.info  # type: ignore[union-attr]


def test_a_finish_that_frees_a_slot_leases_the_run_waiting_for_it(
    store: PostgresStore,
) -> None:
    """The finished run frees its agent's slot in the same transaction: the run queued
    behind it (the guess's, refused by the rule before the finish) is taken by the
    lease that follows the finish."""
    limited = AgentSpec("a", ("go",), flow=FlowSpec(concurrency=ConcurrencyLimit(1)))
    store.register_agents([limited])
    runs = [store.emit("go", {"i": i}).run_ids[0] for i in range(4)]
    with StandInWorker() as worker, StandInWorker() as idle:
        [leased] = store.lease_runs(worker.info, ["a"], limit=1, ttl=600)
        taken = [leased.run.id]
        for _ in range(3):
            assert store.lease_runs(idle.info, ["a"], limit=1, ttl=600) == []
            [leased] = store.finish_and_lease(
                worker.info,
                leased.run.id,
                status="completed",
                attempt=leased.lease.attempt,
                agents=["a"],
                limit=1,
                ttl=600,
            )
            taken.append(leased.run.id)
    assert taken == runs

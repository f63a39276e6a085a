"""Speculative steps on PostgreSQL (``_pgspec.py``): one round trip on remembered rows,
and a guard that catches every row changed behind the store's back.

Each test runs two stores on one database, as two servers would: what one store
changes, the other's remembered rows do not know.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import attrs
import psycopg
import pytest

from ironflow.errors import LeaseLostError
from ironflow.store import AgentSpec, PostgresStore
from ironflow.store._pgspec import RowCache
from ironflow.store._records import LeasedRun, StepRecord
from ironflow.testing import StandInWorker
from tests.store.pg_trips import round_trips


def _step(leased: LeasedRun, position: int) -> StepRecord:
    run = leased.run
    return StepRecord(
        run.id, position, f"s{position}", "completed", None, position, 1.0, 2.0,
        attempt=leased.lease.attempt,
    )  # fmt: skip


@contextlib.contextmanager
def _two_stores(pg_url: str) -> Iterator[tuple[PostgresStore, PostgresStore]]:
    a, b = PostgresStore(pg_url), PostgresStore(pg_url)
    try:
        a.register_agents([AgentSpec("a", ("go",))])
        yield a, b
    finally:
        a.close()
        b.close()


def test_a_step_on_remembered_rows_is_one_round_trip(pg_url: str) -> None:
    with _two_stores(pg_url) as (a, _), StandInWorker() as worker:
        a.emit("go", {})
        # The lease writes the lease row: remembered; no cancel or pause: guessed absent.
        [leased] = a.lease_runs(worker.info, ["a"], limit=1, ttl=600)
        for position in range(3):
            with round_trips(a) as trips:
                ack = a.record_step(worker.info, _step(leased, position))
            assert trips == [1], f"step {position}: {trips[0]} round trips, not 1"
            assert not ack.cancel_requested and not ack.pause_requested
        assert a.backend.speculated == 3 and a.backend.stale == 0
        assert [s.position for s in a.get_steps(leased.run.id)] == [0, 1, 2]


def test_a_step_is_an_insert_guarded_by_the_lease_alone(pg_url: str) -> None:
    """The lease tells the run's cancel and pause requests (``_runs.py``): the step's
    one statement checks that row and no other, a plain insert with a WHERE."""
    with _two_stores(pg_url) as (a, _), StandInWorker() as worker:
        a.emit("go", {})
        [leased] = a.lease_runs(worker.info, ["a"], limit=1, ttl=600)
        backend: Any = a.backend
        run = backend.direct.run
        sent: list[bytes] = []

        def seen(conn: Any, sql: bytes, params: Any) -> int | None:
            sent.append(sql)
            return run(conn, sql, params)

        backend.direct.run = seen
        try:
            a.record_step(worker.info, _step(leased, 0))
        finally:
            del backend.direct.run
        [sql] = sent
        assert sql.startswith(b"INSERT INTO ironflow_steps (run, k, v) SELECT "), sql
        assert b" WHERE EXISTS (SELECT FROM ironflow_leases " in sql, sql
        assert sql.count(b"SELECT FROM") == 1 and b"ON CONFLICT" not in sql, sql
        assert a.backend.speculated == 1


def test_a_step_recorded_again_is_answered_the_normal_way(pg_url: str) -> None:
    """A retried step: its guarded insert finds the row there (a unique violation) and
    the normal way writes nothing; the first record stays."""
    with _two_stores(pg_url) as (a, _), StandInWorker() as worker:
        a.emit("go", {})
        [leased] = a.lease_runs(worker.info, ["a"], limit=1, ttl=600)
        first = _step(leased, 0)
        a.record_step(worker.info, first)
        ack = a.record_step(worker.info, attrs.evolve(first, output="again"))
        assert not ack.cancel_requested and not ack.pause_requested
        assert a.backend.speculated == 1 and a.backend.stale == 1
        assert a.get_steps(leased.run.id) == [first]


def test_a_step_whose_lease_another_store_took_over_is_refused(pg_url: str) -> None:
    """The lease expired (its holder died) and another store leased the run again: this
    store still remembers the old lease, so its guard must find the new one."""
    with _two_stores(pg_url) as (a, b), StandInWorker() as old, StandInWorker() as new:
        a.emit("go", {})
        [leased] = a.lease_runs(old.info, ["a"], limit=1, ttl=600)
        a.record_step(old.info, _step(leased, 0))
        old.kill()  # a dead holder: the next lease takes the run over at once
        [taken] = b.lease_runs(new.info, ["a"], limit=1, ttl=600)
        assert taken.run.id == leased.run.id and taken.lease.attempt == leased.lease.attempt + 1
        with pytest.raises(LeaseLostError, match="no longer holds run"):
            a.record_step(old.info, _step(leased, 1))
        assert a.backend.stale == 1, "the guard should have found the lease changed"
        assert [s.position for s in b.get_steps(leased.run.id)] == [0]
        # The run's new holder records on: its store's rows are its own.
        b.record_step(new.info, _step(taken, 1))
        assert [s.position for s in b.get_steps(leased.run.id)] == [0, 1]


@pytest.mark.parametrize("request_", ["cancel", "pause"])
def test_a_request_through_another_store_shows_in_the_next_step(pg_url: str, request_: str) -> None:
    with _two_stores(pg_url) as (a, b), StandInWorker() as worker:
        a.emit("go", {})
        [leased] = a.lease_runs(worker.info, ["a"], limit=1, ttl=600)
        ack = a.record_step(worker.info, _step(leased, 0))
        assert not ack.cancel_requested and not ack.pause_requested
        if request_ == "cancel":
            b.request_cancel(leased.run.id)
        else:
            b.pause_run(leased.run.id)
        ack = a.record_step(worker.info, _step(leased, 1))
        assert (ack.cancel_requested, ack.pause_requested) == (
            request_ == "cancel",
            request_ == "pause",
        )
        assert a.backend.stale == 1
        # Now remembered: the next step is speculative again, and still told.
        ack = a.record_step(worker.info, _step(leased, 2))
        assert (ack.cancel_requested, ack.pause_requested) == (
            request_ == "cancel",
            request_ == "pause",
        )
        assert a.backend.stale == 1 and a.backend.speculated == 2
        assert [s.position for s in a.get_steps(leased.run.id)] == [0, 1, 2]


def test_the_remembered_rows_stay_bounded(pg_url: str) -> None:
    with _two_stores(pg_url) as (a, _), StandInWorker() as worker:
        a.backend.rows = RowCache(size=8)
        for _ in range(6):
            a.emit("go", {})
        for leased in a.lease_runs(worker.info, ["a"], limit=6, ttl=600):
            a.record_step(worker.info, _step(leased, 0))
            assert len(a.backend.rows) <= 8
        # 6 runs' leases, cancels and pause requests were seen: 18 rows, 8 kept.
        assert len(a.backend.rows) == 8


def test_a_step_of_a_run_leased_elsewhere_is_recorded_the_normal_way(pg_url: str) -> None:
    """Nothing remembered of the lease: no guess, the normal two round trips, and from
    then on the lease is remembered."""
    with _two_stores(pg_url) as (a, b), StandInWorker() as worker:
        a.emit("go", {})
        [leased] = b.lease_runs(worker.info, ["a"], limit=1, ttl=600)
        with round_trips(a) as trips:
            a.record_step(worker.info, _step(leased, 0))
        assert trips == [2] and a.backend.speculated == 0
        with round_trips(a) as trips:
            a.record_step(worker.info, _step(leased, 1))
        assert trips == [1] and a.backend.speculated == 1


@contextlib.contextmanager
def _answer_lost(store: PostgresStore, *, sent: bool) -> Iterator[list[int]]:
    """The next speculative statement's answer is lost: its connection breaks after the
    server ran it (``sent``), or before it was sent. Yields the calls made."""
    backend: Any = store.backend
    run = backend.direct.run
    calls: list[int] = []

    def losing(conn: Any, sql: bytes, params: Any) -> None:
        calls.append(1)
        if len(calls) > 1:
            return run(conn, sql, params)  # only the first one
        if sent:
            run(conn, sql, params)
        conn.close()
        raise psycopg.OperationalError("server closed the connection unexpectedly")

    backend.direct.run = losing
    try:
        yield calls
    finally:
        del backend.direct.run


def _tokens(pg_url: str) -> set[bytes]:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        return {bytes(r[0]) for r in conn.execute("SELECT token FROM ironflow_commits")}


@pytest.mark.parametrize("committed", [True, False])
def test_a_speculative_step_whose_answer_is_lost_is_resolved_by_its_row(
    pg_url: str, committed: bool
) -> None:
    """A step's statement carries no commit token: after a lost answer, the step's own
    row says whether it committed. Committed: its ack, not a second try; not sent:
    recorded the normal way. Either way recorded once, and no token written or asked."""
    with _two_stores(pg_url) as (a, _), StandInWorker() as worker:
        a.emit("go", {})
        [leased] = a.lease_runs(worker.info, ["a"], limit=1, ttl=600)
        backend: Any = a.backend
        asked: list[bytes] = []
        backend._committed = lambda token: asked.append(token) or False
        before = _tokens(pg_url)
        with _answer_lost(a, sent=committed) as calls:
            ack = a.record_step(worker.info, _step(leased, 0))
        assert not ack.cancel_requested and not ack.pause_requested
        assert asked == [], "a step's statement has no token to look for"
        # Committed: resolved by its row, not sent again; not sent: the normal way,
        # which does not speculate (so the statement is not sent a second time).
        assert calls == [1]
        assert backend.speculated == 0  # the lost one is not counted as committed
        steps = a.get_steps(leased.run.id)
        assert [(s.position, s.attempt) for s in steps] == [(0, leased.lease.attempt)]
        # The normal way, when it ran, wrote a token; the speculative statement none.
        assert len(_tokens(pg_url) - before) == (0 if committed else 1)


def test_a_lost_step_whose_lease_was_taken_over_meanwhile_is_refused_not_recorded(
    pg_url: str,
) -> None:
    """The answer is lost before the statement was sent, and while this store could not
    ask, the run was taken over and its new holder recorded the same position: the row
    holds the new holder's bytes, not ours, so the op runs again the normal way and is
    refused; the new holder's step stays as it is."""
    with _two_stores(pg_url) as (a, b), StandInWorker() as old, StandInWorker() as new:
        a.emit("go", {})
        [leased] = a.lease_runs(old.info, ["a"], limit=1, ttl=600)
        backend: Any = a.backend

        def taken_over_then_lost(conn: Any, sql: bytes, params: Any) -> None:
            old.kill()
            [taken] = b.lease_runs(new.info, ["a"], limit=1, ttl=600)
            b.record_step(new.info, _step(taken, 0))
            conn.close()
            raise psycopg.OperationalError("server closed the connection unexpectedly")

        backend.direct.run = taken_over_then_lost
        try:
            with pytest.raises(LeaseLostError, match="no longer holds run"):
                a.record_step(old.info, _step(leased, 0))
        finally:
            del backend.direct.run
        [step] = b.get_steps(leased.run.id)
        assert step.attempt == leased.lease.attempt + 1, "the new holder's step was replaced"


@pytest.mark.parametrize("ends", ["commit", "rollback"])
def test_a_step_still_committing_is_waited_for_not_called_lost(pg_url: str, ends: str) -> None:
    """The look for a step's row waits for a statement still inserting it (a broken
    connection does not stop a commit on its way), then says how it ended; the same row
    with other bytes is not ours."""
    from ironflow.store._keys import step_key
    from ironflow.store._pgcommits import landed
    from ironflow.store._runs import STEPS

    with _two_stores(pg_url) as (a, _), StandInWorker() as worker:
        a.emit("go", {})
        [leased] = a.lease_runs(worker.info, ["a"], limit=1, ttl=600)
        step = _step(leased, 0)
        evidence = ("steps", step_key(step.run_id, 0), STEPS.encode(step))
        with psycopg.connect(pg_url) as holder:
            holder.execute(
                "INSERT INTO ironflow_steps (run, k, v) VALUES (%s, %s, %s)",
                (step.run_id.encode(), evidence[1], evidence[2]),
            )
            answer: list[bool] = []

            def look() -> None:
                with psycopg.connect(pg_url, autocommit=True) as conn:
                    answer.append(landed(conn, evidence))

            looker = threading.Thread(target=look)
            looker.start()
            looker.join(0.5)
            assert looker.is_alive(), "answered before the statement ended"
            getattr(holder, ends)()
            looker.join(30)
        assert answer == [ends == "commit"]
        with psycopg.connect(pg_url, autocommit=True) as conn:
            assert landed(conn, (*evidence[:2], evidence[2] + b" ")) is False


def test_a_step_statement_deallocated_under_the_store_is_prepared_again(pg_url: str) -> None:
    """The step's statement is prepared on its connection after a few runs; psycopg's
    DEALLOCATE ALL (after a ROLLBACK) drops it on the server: the next step finds its
    name unknown, sends it again, and is recorded once."""
    from ironflow.store._pgdirect import PREPARE_AFTER

    store = PostgresStore(pg_url, pool_size=1)
    try:
        store.register_agents([AgentSpec("a", ("go",))])
        with StandInWorker() as worker:
            store.emit("go", {})
            [leased] = store.lease_runs(worker.info, ["a"], limit=1, ttl=600)
            backend: Any = store.backend
            for position in range(PREPARE_AFTER + 1):
                store.record_step(worker.info, _step(leased, position))
            with backend._pool.connection() as conn:
                assert backend.direct.prepared(conn) == 1
                conn.execute("DEALLOCATE ALL")
            store.record_step(worker.info, _step(leased, PREPARE_AFTER + 1))
            assert backend.speculated == PREPARE_AFTER + 2
            assert [s.position for s in store.get_steps(leased.run.id)] == list(
                range(PREPARE_AFTER + 2)
            )
    finally:
        store.close()

"""Speculative steps on PostgreSQL (``_pgspec.py``): one round trip on remembered rows,
and a guard that catches every row changed behind the store's back.

Each test runs two stores on one database, as two servers would: what one store
changes, the other's remembered rows do not know.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from ironflow.errors import LeaseLostError
from ironflow.store import AgentSpec, PostgresStore
from ironflow.store._pgspec import RowCache
from ironflow.store._records import LeasedRun, StepRecord
from ironflow.testing import StandInWorker


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


@contextlib.contextmanager
def _round_trips(store: PostgresStore) -> Iterator[list[int]]:
    """Counts the round trips of the store's connections inside the block, in libpq's
    trace of the protocol: each turn from messages sent (F) to messages answered (B)."""
    pool: Any = store.backend._pool
    traced: list[Any] = []
    getconn = pool.getconn
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "trace")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT)

        def tracing(*args: Any, **kwargs: Any) -> Any:
            conn = getconn(*args, **kwargs)
            conn.pgconn.trace(fd)
            traced.append(conn)
            return conn

        pool.getconn = tracing
        counted: list[int] = []
        try:
            yield counted
        finally:
            del pool.getconn
            for conn in traced:
                if not conn.closed:
                    conn.pgconn.untrace()
            os.close(fd)
        with open(path) as f:
            sides = [line.split("\t")[1] for line in f]
        counted.append(sum(1 for i in range(1, len(sides)) if sides[i - 1 : i + 1] == ["F", "B"]))


def test_a_step_on_remembered_rows_is_one_round_trip(pg_url: str) -> None:
    with _two_stores(pg_url) as (a, _), StandInWorker() as worker:
        a.emit("go", {})
        # The lease writes the lease row: remembered; no cancel or pause: guessed absent.
        [leased] = a.lease_runs(worker.info, ["a"], limit=1, ttl=600)
        for position in range(3):
            with _round_trips(a) as trips:
                ack = a.record_step(worker.info, _step(leased, position))
            assert trips == [1], f"step {position}: {trips[0]} round trips, not 1"
            assert not ack.cancel_requested and not ack.pause_requested
        assert a.backend.speculated == 3 and a.backend.stale == 0
        assert [s.position for s in a.get_steps(leased.run.id)] == [0, 1, 2]


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
        with _round_trips(a) as trips:
            a.record_step(worker.info, _step(leased, 0))
        assert trips == [2] and a.backend.speculated == 0
        with _round_trips(a) as trips:
            a.record_step(worker.info, _step(leased, 1))
        assert trips == [1] and a.backend.speculated == 1


class _Lost:
    """A pooled connection whose next statement's answer is lost: after the server ran
    it (``after``), or before it was sent."""

    def __init__(self, conn: Any, after: bool) -> None:
        self.conn, self.after = conn, after

    def __getattr__(self, name: str) -> Any:
        return getattr(self.conn, name)

    def cursor(self, *args: Any, **kwargs: Any) -> Any:
        cursor = self.conn.cursor(*args, **kwargs)
        lost = self

        class Cursor:
            def execute(self, *args: Any, **kwargs: Any) -> Any:
                if lost.after:
                    cursor.execute(*args, **kwargs)
                lost.conn.close()
                raise psycopg.OperationalError("server closed the connection unexpectedly")

        return Cursor()


@pytest.mark.parametrize("committed", [True, False])
def test_a_speculative_step_whose_answer_is_lost_is_resolved_by_its_token(
    pg_url: str, committed: bool
) -> None:
    """Committed: its ack, not a second try; not sent: recorded the normal way. Either
    way the commit token was looked for, and the step is recorded once."""
    with _two_stores(pg_url) as (a, _), StandInWorker() as worker:
        a.emit("go", {})
        [leased] = a.lease_runs(worker.info, ["a"], limit=1, ttl=600)
        backend: Any = a.backend
        asked: list[bool] = []
        look = backend._committed
        backend._committed = lambda token: asked.append(look(token)) or asked[-1]
        pool = backend._pool
        getconn, putconn = pool.getconn, pool.putconn
        lost: list[_Lost] = []

        def losing(*args: Any, **kwargs: Any) -> Any:
            conn = getconn(*args, **kwargs)
            if lost:
                return conn  # only the first one
            lost.append(_Lost(conn, committed))
            return lost[-1]

        pool.getconn = losing
        pool.putconn = lambda conn: putconn(conn.conn if isinstance(conn, _Lost) else conn)
        try:
            a.record_step(worker.info, _step(leased, 0))
        finally:
            del pool.getconn, pool.putconn
        assert asked == [committed]
        assert [s.position for s in a.get_steps(leased.run.id)] == [0]

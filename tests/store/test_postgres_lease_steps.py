"""A lease on PostgreSQL reads its runs' step records after it commits.

Read inside the lease's SERIALIZABLE transaction, the steps' index pages (shared by
neighbouring run ids) tied every lease into the step inserts other workers made
meanwhile, and the lease was the pivot of most conflicts with several workers. So
``PostgresStore`` reads them after the commit, in a ``SERIALIZABLE READ ONLY``
transaction: still never missing a step the run's previous holder commits while its
lapsed lease is taken over. Each test plays two workers (two stores, as two hosts)
and holds one's step transaction open at the moment that matters.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg
import pytest

from ironflow.errors import LeaseLostError
from ironflow.store import AgentSpec, PostgresStore, _leasing, _runs
from ironflow.store._backend import WriteTxn
from ironflow.store._keys import step_key
from ironflow.store._pgsql import SQL
from ironflow.store._records import Lease, LeasedRun, StepAck, StepRecord
from ironflow.testing import StandInWorker
from tests.store.pg_trips import round_trips


def _step(leased: LeasedRun, position: int) -> StepRecord:
    run = leased.run
    return StepRecord(
        run.id, position, f"s{position}", "completed", None, position, 1.0, 2.0,
        attempt=leased.lease.attempt,
    )  # fmt: skip


class _HeldStep:
    """``worker`` records ``step`` through ``store`` in a thread; its transaction's
    first try stops after reading the lease, before the step's insert is sent, until
    :meth:`finish`. ``tries`` counts the tries: a conflict makes a second."""

    def __init__(self, store: PostgresStore, worker: StandInWorker, step: StepRecord) -> None:
        self.tries = 0
        self.outcome: StepAck | BaseException | None = None
        self._read = threading.Event()
        self._go = threading.Event()
        value = _runs.STEPS.encode(step)
        flow = store._flow

        def op(txn: WriteTxn) -> StepAck:
            self.tries += 1
            if self.tries == 1:
                # The rule's reads, made now (it is then answered from them); its
                # insert is sent once it runs, after the pause.
                key = step.run_id.encode()
                txn.get_many([("leases", key), ("cancels", key), ("paused", key)])
                self._read.set()
                self._go.wait(30)
            return _runs.record_step(txn, flow, worker.info, step, value)

        def run() -> None:
            try:
                self.outcome = store.backend.write(op)
            except BaseException as exc:
                self.outcome = exc

        self._thread = threading.Thread(target=run)
        self._thread.start()
        assert self._read.wait(30), "the step's transaction did not read the lease"

    def finish(self) -> StepAck | BaseException | None:
        self._go.set()
        self._thread.join(30)
        assert not self._thread.is_alive()
        return self.outcome


@pytest.fixture
def two(pg_url: str) -> Any:
    a, b = PostgresStore(pg_url), PostgresStore(pg_url)
    a.register_agents([AgentSpec("a", ("go",))])
    old, new = StandInWorker(), StandInWorker()
    try:
        yield a, b, old, new
    finally:
        old.kill()
        new.kill()
        a.close()
        b.close()


def test_a_step_racing_the_takeover_is_refused_or_seen_never_lost(two: Any) -> None:
    """The old holder, its lease lapsed, reads its lease (still its own) for a step;
    another worker takes the run over and reads its steps; then the old step inserts
    and commits. Either the new holder's records have the step, or the step is refused
    and not recorded: never recorded behind the new holder's back. (With the steps
    read at REPEATABLE READ after the lease, the step commits unseen: this fails.)"""
    a, b, old, new = two
    run_id = a.emit("go", {}).run_ids[0]
    (first,) = a.lease_runs(old.info, ["a"], limit=1, ttl=0.3)
    time.sleep(0.5)  # the old holder's lease lapses; it does not know
    held = _HeldStep(a, old, _step(first, 0))
    (taken,) = b.lease_runs(new.info, ["a"], limit=1, ttl=600)
    assert taken.run.id == run_id and taken.taken_from == old.info
    outcome = held.finish()
    recorded = [s.position for s in b.get_steps(run_id)]
    seen = [s.position for s in taken.steps]
    if isinstance(outcome, LeaseLostError):
        assert recorded == [] and seen == []
    else:
        assert isinstance(outcome, StepAck), outcome
        assert recorded == [0] and seen == [0]


def test_a_speculative_step_racing_the_takeover_is_refused_or_seen_never_lost(
    two: Any, pg_url: str
) -> None:
    """As above, for the speculative step (``_pgspec.py``): one statement, its guard
    reading the old lease, its insert held (behind another session's uncommitted row of
    the same position) while another worker takes the run over and reads its steps,
    then let go. SERIALIZABLE must refuse it, as it refuses the normal way's; a
    statement sent at the server's default READ COMMITTED commits the step unseen."""
    a, b, old, new = two
    run_id = a.emit("go", {}).run_ids[0]
    (first,) = a.lease_runs(old.info, ["a"], limit=1, ttl=0.3)
    time.sleep(0.5)  # the old holder's lease lapses; its store still remembers it
    sent: list[bytes] = []
    run = a.backend.direct.run

    def spied(conn: Any, statement: bytes, params: Any) -> Any:
        sent.append(statement)
        return run(conn, statement, params)

    a.backend.direct.run = spied  # type: ignore[method-assign]
    sql = SQL["steps"]
    with psycopg.connect(pg_url) as holding:
        holding.execute(sql.add, sql.row(step_key(run_id, 0), b"held"))
        outcome: list[StepAck | BaseException] = []

        def record() -> None:
            try:
                outcome.append(a.record_step(old.info, _step(first, 0)))
            except BaseException as exc:
                outcome.append(exc)

        thread = threading.Thread(target=record)
        thread.start()
        deadline = time.monotonic() + 30
        while not sent and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)  # sent, and waiting for the held row
        assert sent and not outcome, "the speculative step should wait for the held row"
        (taken,) = b.lease_runs(new.info, ["a"], limit=1, ttl=600)
        assert taken.run.id == run_id
        holding.rollback()
    thread.join(30)
    recorded = [s.position for s in b.get_steps(run_id)]
    seen = [s.position for s in taken.steps]
    if isinstance(outcome[0], LeaseLostError):
        assert recorded == [] and seen == []
    else:
        assert isinstance(outcome[0], StepAck), outcome
        assert recorded == [0] and seen == [0]


def test_a_step_committing_inside_a_lease_does_not_roll_the_lease_back(
    two: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Worker A's step of its run commits while worker B's lease of another run is
    between its reads and its writes (as with four workers, all the time). When the
    lease read its runs' steps itself, it had read the steps' index page A inserted
    into, A had read the leases' page the lease then wrote, and PostgreSQL rolled the
    lease back as the pivot ("identification as a pivot, during write"). Now the lease
    reads no steps: it commits the first time, and B's run comes with its (no) steps."""
    a, b, worker_a, worker_b = two
    mine = a.emit("go", {"n": 1}).run_ids[0]
    other = a.emit("go", {"n": 2}).run_ids[0]
    (held_run,) = a.lease_runs(worker_a.info, ["a"], limit=1, ttl=600)
    assert held_run.run.id == mine
    held = _HeldStep(a, worker_a, _step(held_run, 0))
    encode = _leasing.encode_lease

    def encoding(lease: Lease) -> bytes:
        if held.outcome is None:
            held.finish()  # the lease has read all it reads; its writes are to come
        return encode(lease)

    monkeypatch.setattr(_leasing, "encode_lease", encoding)
    (taken,) = b.lease_runs(worker_b.info, ["a"], limit=1, ttl=600)
    assert taken.run.id == other and list(taken.steps) == []
    assert isinstance(held.outcome, StepAck), held.outcome
    assert held.tries == 1
    assert b.backend.lease_conflicts == 0  # the lease was not rolled back
    assert [s.position for s in a.get_steps(mine)] == [0]


def test_a_taken_over_run_comes_with_the_steps_its_old_holder_recorded(two: Any) -> None:
    """The steps read after the lease are the run's: a takeover hands them over."""
    a, b, old, new = two
    run_id = a.emit("go", {}).run_ids[0]
    (first,) = a.lease_runs(old.info, ["a"], limit=1, ttl=0.3)
    for position in range(3):
        a.record_step(old.info, _step(first, position))
    time.sleep(0.5)
    (taken,) = b.lease_runs(new.info, ["a"], limit=1, ttl=600)
    assert taken.run.id == run_id
    assert [s.position for s in taken.steps] == [0, 1, 2]
    assert [s.id for s in taken.steps] == ["s0", "s1", "s2"]


def test_a_lease_reads_its_runs_steps_in_its_commit_s_round_trip(pg_url: str) -> None:
    """finish_and_lease: two round trips, whether or not the run it takes has steps.
    The finished run with the look for work and the claim it will most likely make
    (the oldest ready run, locked, with its records); the writes and COMMIT with the
    steps' read after it (a transaction of its own, in the same round trip). It was
    five: the claim after the look, the records after the claim, the steps after the
    COMMIT, each waited for; then three (the claim after the look)."""
    store = PostgresStore(pg_url)
    try:
        store.register_agents([AgentSpec("a", ("go",))])
        for i in range(4):
            store.emit("go", {"i": i})
        counted = []
        with StandInWorker() as worker:
            [leased] = store.lease_runs(worker.info, ["a"], limit=1, ttl=600)
            for _ in range(3):
                store.record_step(worker.info, _step(leased, 0))
                with round_trips(store) as trips:
                    [leased] = store.finish_and_lease(
                        worker.info,
                        leased.run.id,
                        status="completed",
                        attempt=leased.lease.attempt,
                        agents=["a"],
                        limit=1,
                        ttl=600,
                    )
                counted += trips
                assert list(leased.steps) == []
        # The fewest: a busy host may split one turn in two (tests/store/pg_trips.py).
        assert min(counted) == 2, counted
    finally:
        store.close()

"""A run's cancel and pause requests, told by its lease (``_runs.py``), on every store.

``record_step`` reads the run's lease alone, so the lease must tell every request made
while the run holds it, every request made before a new lease (a takeover) and no
request withdrawn since (a resume); a lease written before leases told them (an old
LMDB directory or PostgreSQL database) is read with the tables instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import attrs
import orjson
import pytest

from ironflow.errors import LeaseLostError
from ironflow.store import AgentSpec, Lease, LeasedRun, PostgresStore, StepRecord, Store
from ironflow.store._backend import WriteTxn
from ironflow.store._machine import StoreMachine
from ironflow.testing import FakeClock, StandInWorker
from tests.store.backends import BACKENDS, Opened

#: Each request, and what a step's ack (cancel, pause) says once it is made.
TOLD = {"cancel": (True, False), "pause": (False, True)}


@pytest.fixture(params=list(BACKENDS))
def opened(request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock) -> Iterator[Opened]:
    one = BACKENDS[request.param](tmp_path, clock)
    one.store.register_agents([AgentSpec("a", ("go",))])
    yield one
    one.close()


def _lease(store: Store, worker: StandInWorker) -> LeasedRun:
    [leased] = store.lease_runs(worker.info, ["a"], limit=1, ttl=600)
    return leased


def _step(leased: LeasedRun, position: int) -> StepRecord:
    return StepRecord(
        leased.run.id, position, f"s{position}", "completed", None, position, 1.0, 2.0,
        attempt=leased.lease.attempt,
    )  # fmt: skip


def _ask(store: Store, run_id: str, request: str) -> None:
    if request == "cancel":
        store.request_cancel(run_id)
    else:
        store.pause_run(run_id)


def _told(
    store: Store, worker: StandInWorker, leased: LeasedRun, position: int
) -> tuple[bool, bool]:
    ack = store.record_step(worker.info, _step(leased, position))
    return ack.cancel_requested, ack.pause_requested


@pytest.mark.parametrize("request_", list(TOLD))
def test_a_request_made_while_a_run_is_leased_is_told_by_its_lease_and_next_step(
    opened: Opened, request_: str
) -> None:
    store = opened.store
    with StandInWorker() as worker:
        store.emit("go", {})
        leased = _lease(store, worker)
        run_id = leased.run.id
        assert (leased.lease.cancel_requested, leased.lease.pause_requested) == (False, False)
        assert _told(store, worker, leased, 0) == (False, False)
        _ask(store, run_id, request_)
        lease = store.get_lease(run_id)
        assert lease is not None and lease.worker == worker.info
        assert (lease.cancel_requested, lease.pause_requested) == TOLD[request_]
        opened.check_valid()
        # Told by the next step, and by every one after it (a request stays).
        assert _told(store, worker, leased, 1) == TOLD[request_]
        assert _told(store, worker, leased, 2) == TOLD[request_]
        assert [s.position for s in store.get_steps(run_id)] == [0, 1, 2]


def test_a_pause_resumed_before_the_next_step_is_not_told(opened: Opened) -> None:
    store = opened.store
    with StandInWorker() as worker:
        store.emit("go", {})
        leased = _lease(store, worker)
        store.pause_run(leased.run.id)
        assert _told(store, worker, leased, 0) == (False, True)
        store.resume_run(leased.run.id)
        lease = store.get_lease(leased.run.id)
        assert lease is not None and lease.pause_requested is False
        opened.check_valid()
        assert _told(store, worker, leased, 1) == (False, False)
        assert store.get_run(leased.run.id).status == "running"


@pytest.mark.parametrize("request_", list(TOLD))
def test_a_run_taken_over_after_a_request_is_told_by_its_new_lease(
    opened: Opened, request_: str
) -> None:
    store = opened.store
    with StandInWorker() as old, StandInWorker() as new:
        store.emit("go", {})
        leased = _lease(store, old)
        assert _told(store, old, leased, 0) == (False, False)
        _ask(store, leased.run.id, request_)
        old.kill()  # a dead holder: the next lease takes the run over at once
        taken = _lease(store, new)
        assert taken.run.id == leased.run.id and taken.lease.attempt == leased.lease.attempt + 1
        assert (taken.lease.cancel_requested, taken.lease.pause_requested) == TOLD[request_]
        opened.check_valid()
        # Fencing: the old attempt's step is refused, not recorded.
        with pytest.raises(LeaseLostError, match="no longer holds run"):
            store.record_step(old.info, _step(leased, 1))
        assert _told(store, new, taken, 1) == TOLD[request_]
        steps = store.get_steps(leased.run.id)
        assert [(s.position, s.attempt) for s in steps] == [(0, 1), (1, 2)]


def _old_lease(lease: Lease) -> bytes:
    """``lease`` as stored before leases told their run's requests: every field it had
    then, in its order, and no other."""
    worker = attrs.asdict(lease.worker)
    return orjson.dumps(
        {
            "run_id": lease.run_id,
            "worker": worker,
            "expires_at": lease.expires_at,
            "attempt": lease.attempt,
        }
    )


@pytest.mark.parametrize("request_", list(TOLD))
@pytest.mark.parametrize("kind", ["memory", "lmdb", "postgres"])
def test_a_lease_written_before_leases_told_requests_is_read_with_the_tables(
    tmp_path: Path, clock: FakeClock, kind: str, request_: str
) -> None:
    """A live lease in the old format, with the request's row beside it, as an old
    Ironflow left them (no migration): the step reads the tables and is told."""
    opened = BACKENDS[kind](tmp_path, clock)
    try:
        store = opened.store
        assert isinstance(store, StoreMachine)
        store.register_agents([AgentSpec("a", ("go",))])
        with StandInWorker() as worker:
            store.emit("go", {})
            leased = _lease(store, worker)
            key = leased.run.id.encode()
            table, row = ("cancels", b"1") if request_ == "cancel" else ("paused", b"")

            def as_old_ironflow_left_it(txn: WriteTxn) -> None:
                txn.put("leases", key, _old_lease(leased.lease))
                txn.put(table, key, row)

            store._backend.write(as_old_ironflow_left_it)
            lease = store.get_lease(leased.run.id)
            assert lease is not None
            assert (lease.cancel_requested, lease.pause_requested) == (None, None)
            opened.check_valid()
            assert _told(store, worker, leased, 0) == TOLD[request_]
            if isinstance(store, PostgresStore):
                # Speculative: the old lease and the row were remembered from the write.
                assert store.backend.speculated == 1 and store.backend.stale == 0
                # The normal way: a store that remembers nothing.
                with PostgresStore(store.url) as fresh:
                    assert _told(fresh, worker, leased, 1) == TOLD[request_]
                    assert fresh.backend.speculated == 0
            # A request made now rewrites the old lease in the new format.
            store.request_cancel(leased.run.id)
            lease = store.get_lease(leased.run.id)
            assert lease is not None
            assert (lease.cancel_requested, lease.pause_requested) == (True, request_ == "pause")
            opened.check_valid()
    finally:
        opened.close()

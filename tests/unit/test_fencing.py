"""Fencing: every write on behalf of a run checks its lease, worker and attempt (issue 11, 5).

The case that needs the attempt: one worker froze past its lease's TTL, its own loop
leased the run again (attempt 2), and the frozen execution (attempt 1) wakes up. Its
worker id still matches the lease; only the attempt tells it apart.
"""

from __future__ import annotations

import pytest

from ironflow._worker._identity import this_worker
from ironflow.errors import LeaseLostError
from ironflow.replay._engine import Execution, Outcome
from ironflow.store import AgentSpec, Lease, LmdbStore, StepRecord, Suspension, _runs
from ironflow.store._codec import decode_record

ME = this_worker("frozen-then-back")


def _leased_twice(store: LmdbStore) -> tuple[str, Execution]:
    """A run leased by ME twice: attempt 1 lapsed at once, attempt 2 holds it now.

    Returns the run id and the stale execution of attempt 1.
    """
    store.register_agents([AgentSpec("a", ("go",)), AgentSpec("kid", ("never",))])
    run_id = store.emit("go", {}).run_ids[0]
    [first] = store.lease_runs(ME, ["a"], limit=1, ttl=-1)  # lapses at once
    stale = Execution(store, ME, first)
    [second] = store.lease_runs(ME, ["a"], limit=1, ttl=60)  # its own lapsed lease, again
    assert (first.run.attempt, second.run.attempt) == (1, 2)
    return run_id, stale


def test_a_stale_attempt_cannot_finish_release_suspend_or_spawn(store: LmdbStore) -> None:
    """Each write of attempt 1 is refused while attempt 2 holds the run; nothing changes."""
    run_id, _ = _leased_twice(store)
    sleep = Suspension(kind="sleep", position=0, step_id="sleep", wake_in=60)
    with pytest.raises(LeaseLostError):
        store.finish_run(ME, run_id, status="completed", attempt=1)
    with pytest.raises(LeaseLostError):
        store.release_run(ME, run_id, attempt=1)
    with pytest.raises(LeaseLostError):
        store.suspend_run(ME, run_id, sleep, attempt=1)
    with pytest.raises(LeaseLostError):
        store.spawn_run(ME, run_id, "spawn.kid", "kid", {}, attempt=1)
    run = store.get_run(run_id)
    lease = store.get_lease(run_id)
    assert run.status == "running" and run.attempt == 2
    assert lease is not None and lease.attempt == 2
    assert store.list_runs(agent="kid") == []
    # The holder of attempt 2 writes normally.
    assert store.finish_run(ME, run_id, status="completed", attempt=2).status == "completed"
    store.check_valid()


def test_a_stale_execution_settling_leaves_the_new_attempt_running(store: LmdbStore) -> None:
    """The engine's settle of attempt 1 (a finish, or a drain's release) is a no-op."""
    run_id, stale = _leased_twice(store)
    stale.settle(Outcome(status="completed", output="stale"))
    stale.settle(Outcome(status="released"))
    run = store.get_run(run_id)
    assert (run.status, run.output, run.attempt) == ("running", None, 2)
    lease = store.get_lease(run_id)
    assert lease is not None and lease.attempt == 2


def test_a_stale_attempts_step_is_refused_right_after_the_new_lease_is_written(
    store: LmdbStore,
) -> None:
    """Each lease's holder is remembered as it is written, by the lease's bytes: the
    new attempt's lease names attempt 2, so attempt 1's step is refused."""
    run_id, _ = _leased_twice(store)

    def step(attempt: int) -> StepRecord:
        return StepRecord(run_id, 0, "tool.x", "completed", {}, 1, 1.0, 1.0, attempt=attempt)

    with pytest.raises(LeaseLostError):
        store.record_step(ME, step(1))
    store.record_step(ME, step(2))


def test_the_holder_remembered_for_a_written_lease_is_the_one_it_decodes_to(
    store: LmdbStore,
) -> None:
    run_id, _ = _leased_twice(store)
    for write in ("lease", "heartbeat"):
        if write == "heartbeat":
            store.heartbeat(ME, [run_id], ttl=30)  # new bytes (a later expiry)
        with store._read() as txn:
            raw = bytes(txn.get("leases", run_id.encode()) or b"")
        # Remembered as written, and what decoding the bytes gives.
        assert _runs._told.get(raw) == (ME.id, 2, False, False)
        lease = decode_record(raw, Lease)
        assert (lease.worker.id, lease.attempt) == (ME.id, 2)

"""An idle worker's poll beside many held runs (issue 13 target 2).

Before, every poll decoded every lease and checked its holder's process: 58-91 ms of
CPU a poll with 2,000 runs held. Now a poll reads the leases again only after a commit,
a lease lapsing or a holder dying (``_leasing.LeaseWatch``), and checks each distinct
holder once. These tests hold it to the same answers as a full look.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import attrs

from ironflow._worker._identity import this_worker
from ironflow.store import AgentSpec, LmdbStore, WorkerInfo


def _store(tmp_path: Path, runs: int) -> LmdbStore:
    store = LmdbStore(tmp_path / "data", sync=False)
    store.register_agents([AgentSpec(id="a", triggers=("go",))])
    for i in range(runs):
        store.emit("go", {"i": i})
    return store


def _count_lease_scans(store: LmdbStore) -> list[int]:
    """Counts each scan of the leases table through the store's backend."""
    backend = store.backend
    counted = [0]
    read = backend.read

    class Counting:
        def __init__(self, txn: Any) -> None:
            self._txn = txn

        def scan(self, table: str, **kw: Any) -> Any:
            if table == "leases":
                counted[0] += 1
            return self._txn.scan(table, **kw)

        def __getattr__(self, name: str) -> Any:
            return getattr(self._txn, name)

    import contextlib

    @contextlib.contextmanager
    def counting_read() -> Any:
        with read() as txn:
            yield Counting(txn)

    backend.read = counting_read  # type: ignore[method-assign]
    return counted


def test_idle_polls_read_the_leases_again_only_after_a_change(tmp_path: Path) -> None:
    store = _store(tmp_path, 50)
    try:
        holder = this_worker("holder")  # this process: alive
        assert len(store.lease_runs(holder, ["a"], limit=50, ttl=600)) == 50
        idle = this_worker("idle")
        scans = _count_lease_scans(store)
        assert store.lease_runs(idle, ["a"], limit=8, ttl=600) == []
        assert scans[0] == 1
        for _ in range(5):
            assert store.lease_runs(idle, ["a"], limit=8, ttl=600) == []
        assert scans[0] == 1  # nothing changed: no look at the 50 leases
        store.emit("other", {})  # a commit: the next poll looks again
        assert store.lease_runs(idle, ["a"], limit=8, ttl=600) == []
        assert scans[0] == 2
    finally:
        store.close()


def test_a_holder_that_died_since_the_last_look_is_taken_over_at_once(tmp_path: Path) -> None:
    store = _store(tmp_path, 3)
    try:
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        try:
            dead_soon = attrs.evolve(this_worker("holder"), pid=child.pid)
            from ironflow.store._liveness import pid_start

            dead_soon = attrs.evolve(dead_soon, pid_start=pid_start(child.pid))
            assert len(store.lease_runs(dead_soon, ["a"], limit=3, ttl=600)) == 3
            idle = this_worker("idle")
            assert store.lease_runs(idle, ["a"], limit=8, ttl=600) == []
            assert store.lease_runs(idle, ["a"], limit=8, ttl=600) == []  # watched
        finally:
            child.kill()
            child.wait()
        # No commit since: only the holder's death tells, and it is seen at once.
        taken = store.lease_runs(idle, ["a"], limit=8, ttl=600)
        assert len(taken) == 3
        assert all(t.taken_from == dead_soon for t in taken)
    finally:
        store.close()


def test_a_lease_that_lapsed_since_the_last_look_is_taken_over(tmp_path: Path) -> None:
    store = _store(tmp_path, 1)
    try:
        # A holder on another host: alive as far as this host can tell; only its TTL ends it.
        far = WorkerInfo(id="far", host="another-host", pid=1)
        assert len(store.lease_runs(far, ["a"], limit=1, ttl=0.3)) == 1
        idle = this_worker("idle")
        assert store.lease_runs(idle, ["a"], limit=8, ttl=600) == []
        deadline = time.monotonic() + 30
        while not (taken := store.lease_runs(idle, ["a"], limit=8, ttl=600)):
            assert time.monotonic() < deadline, "the lapsed lease was never taken over"
            time.sleep(0.05)
        assert taken[0].taken_from == far
    finally:
        store.close()

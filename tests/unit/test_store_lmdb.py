"""LmdbStore: events and runs in one transaction, leases, fencing, group commit."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ironflow._worker._identity import this_worker
from ironflow.errors import (
    InvalidInputError,
    LeaseLostError,
    RunNotFoundError,
    StoreFormatError,
)
from ironflow.store import AgentSpec, LmdbStore, StepRecord, WorkerInfo


def step(run_id: str, position: int, step_id: str = "s") -> StepRecord:
    return StepRecord(run_id, position, step_id, "completed", None, {"p": position}, 0.0, 0.0)


def test_emit_creates_one_run_per_matching_trigger(store: LmdbStore) -> None:
    """Exact names and wildcards each start a run; unrelated agents do not."""
    store.register_agents(
        [
            AgentSpec("exact", ("order.created",)),
            AgentSpec("star", ("order.*",)),
            AgentSpec("deep", ("order.>",)),
            AgentSpec("other", ("user.created",)),
        ]
    )
    result = store.emit("order.created", {"id": 1})
    agents = sorted(store.get_run(r).agent for r in result.run_ids)
    assert agents == ["deep", "exact", "star"]
    assert sorted(store.get_run(r).agent for r in store.emit("order.a.b", {}).run_ids) == ["deep"]
    assert store.emit("nothing", {}).run_ids == ()
    assert [e.seq for e in store.events()] == [1, 2, 3]


def test_lease_then_steps_then_finish(store: LmdbStore) -> None:
    """A leased run carries its steps; finishing drops the lease."""
    store.register_agents([AgentSpec("a", ("go",))])
    run_id = store.emit("go", {}).run_ids[0]
    me = this_worker()
    [leased] = store.lease_runs(me, ["a"], limit=5, ttl=30)
    assert leased.run.status == "running" and leased.run.attempt == 1 and leased.steps == ()
    store.record_step(me, step(run_id, 0))
    store.record_step(me, step(run_id, 0))  # a retried write is a no-op
    assert [s.position for s in store.get_steps(run_id)] == [0]
    assert store.lease_runs(me, ["a"], limit=5, ttl=30) == []
    run = store.finish_run(me, run_id, status="completed", output={"ok": True}, attempt=1)
    assert run.status == "completed" and store.get_lease(run_id) is None
    store.check_valid()


def test_a_stale_worker_cannot_record_after_takeover(store: LmdbStore) -> None:
    """Fencing: once another worker holds the run, the old holder's writes are refused."""
    store.register_agents([AgentSpec("a", ("go",))])
    run_id = store.emit("go", {}).run_ids[0]
    old = this_worker("old")
    new = this_worker("new")
    store.lease_runs(old, ["a"], limit=1, ttl=-1)  # already expired
    [taken] = store.lease_runs(new, ["a"], limit=1, ttl=30)
    assert taken.run.attempt == 2
    with pytest.raises(LeaseLostError):
        store.record_step(old, step(run_id, 0))
    with pytest.raises(LeaseLostError):
        store.finish_run(old, run_id, status="completed", attempt=1)
    assert store.get_steps(run_id) == []


def test_a_dead_holder_on_this_host_is_taken_over_before_its_ttl(
    store: LmdbStore, tmp_path: Path
) -> None:
    """A lease held by an exited process is free at once, not after the TTL."""
    store.register_agents([AgentSpec("a", ("go",))])
    store.emit("go", {})
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead = WorkerInfo("dead", this_worker().host, int(proc.stdout), "1")
    assert len(store.lease_runs(dead, ["a"], limit=1, ttl=3600)) == 1
    assert len(store.lease_runs(this_worker("alive"), ["a"], limit=1, ttl=30)) == 1


def test_a_live_holder_keeps_its_run(store: LmdbStore) -> None:
    """A run whose holder is alive and within its TTL is not handed to anyone else."""
    store.register_agents([AgentSpec("a", ("go",))])
    store.emit("go", {})
    assert len(store.lease_runs(this_worker("one"), ["a"], limit=1, ttl=3600)) == 1
    assert store.lease_runs(this_worker("two"), ["a"], limit=1, ttl=3600) == []


def test_release_hands_the_run_back_as_pending(store: LmdbStore) -> None:
    """A drained run is pending again and keeps its steps."""
    store.register_agents([AgentSpec("a", ("go",))])
    run_id = store.emit("go", {}).run_ids[0]
    me = this_worker()
    store.lease_runs(me, ["a"], limit=1, ttl=30)
    store.record_step(me, step(run_id, 0))
    store.release_run(me, run_id, attempt=1)
    assert store.get_run(run_id).status == "pending"
    [again] = store.lease_runs(this_worker("next"), ["a"], limit=1, ttl=30)
    assert [s.position for s in again.steps] == [0]


def test_list_runs_is_newest_first_and_filters(store: LmdbStore) -> None:
    """run list order and filters."""
    store.register_agents([AgentSpec("a", ("x",)), AgentSpec("b", ("y",))])
    ids = [store.emit("x" if i % 2 else "y", {"i": i}).run_ids[0] for i in range(6)]
    assert [r.id for r in store.list_runs(limit=10)] == list(reversed(ids))
    assert [r.agent for r in store.list_runs(agent="a")] == ["a", "a", "a"]
    assert len(store.list_runs(limit=2)) == 2
    assert store.list_runs(status="completed") == []


def test_unknown_and_malformed_run_ids_are_not_found(store: LmdbStore) -> None:
    """Any id, however odd, gives RunNotFoundError, never a storage error."""
    for bad in ["nope", "", "x" * 600, "a\x00b"]:
        with pytest.raises(RunNotFoundError):
            store.get_run(bad)
        with pytest.raises(RunNotFoundError):
            store.request_cancel(bad)


def test_bad_event_names_and_ids_are_refused(store: LmdbStore) -> None:
    """Event names and ids have bounds, said in the error."""
    with pytest.raises(InvalidInputError, match="event name"):
        store.emit("", {})
    with pytest.raises(InvalidInputError, match="event id"):
        store.emit("x", {}, id="k" * 300)


def test_concurrent_writers_all_commit(store: LmdbStore) -> None:
    """Group commit: many threads recording at once each get their write, none lost."""
    store.register_agents([AgentSpec("a", ("go",))])
    me = this_worker()
    run_ids = [store.emit("go", {}).run_ids[0] for _ in range(8)]
    store.lease_runs(me, ["a"], limit=8, ttl=30)

    def record(run_id: str) -> None:
        for position in range(25):
            store.record_step(me, step(run_id, position))

    threads = [threading.Thread(target=record, args=(r,)) for r in run_ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for run_id in run_ids:
        assert [s.position for s in store.get_steps(run_id)] == list(range(25))


def test_the_map_grows_instead_of_filling_up(tmp_path: Path) -> None:
    """Writing more than the initial map size grows the map; nothing fails."""
    import ironflow.store._lmdb as lmdb_module

    original = lmdb_module._INITIAL_MAP
    lmdb_module._INITIAL_MAP = 1 << 20  # 1 MiB
    try:
        s = LmdbStore(tmp_path / "small", sync=False)
        s.register_agents([AgentSpec("a", ("go",))])
        for i in range(40):
            s.emit("go", {"blob": "x" * 100_000, "i": i})
        assert len(s.list_runs(limit=100)) == 40
        s.close()
    finally:
        lmdb_module._INITIAL_MAP = original


def test_a_newer_format_version_is_refused(tmp_path: Path) -> None:
    """A data directory written by another format version is not silently used."""
    s = LmdbStore(tmp_path / "d", sync=False)
    s.backend.write(lambda txn: txn.put("meta", b"format_version", b"99"))
    s.close()
    with pytest.raises(StoreFormatError, match="format 99"):
        LmdbStore(tmp_path / "d")


def test_two_processes_share_one_data_directory(tmp_path: Path) -> None:
    """Another process emitting into the same directory is seen here."""
    path = tmp_path / "shared"
    s = LmdbStore(path)
    s.register_agents([AgentSpec("a", ("go",))])
    code = (
        "import sys; from ironflow.store import LmdbStore; "
        "s = LmdbStore(sys.argv[1]); [s.emit('go', {'i': i}) for i in range(5)]"
    )
    subprocess.run(
        [sys.executable, "-c", code, str(path)],
        check=True,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    assert len(s.list_runs(limit=10)) == 5
    s.close()


def test_an_unreaped_killed_worker_counts_as_dead() -> None:
    """A zombie (killed, not yet reaped by its parent) is not a live lease holder."""
    import signal

    from ironflow.store._liveness import process_alive

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        info = WorkerInfo("w", this_worker().host, child.pid, "")
        assert process_alive(info) is True
        os.kill(child.pid, signal.SIGKILL)
        # The kill lands asynchronously (we do not reap the child): allow a loaded machine
        # far more than the few milliseconds it takes.
        deadline = time.monotonic() + 30
        while process_alive(info) is not False and time.monotonic() < deadline:
            time.sleep(0.01)
        assert process_alive(info) is False
    finally:
        child.kill()
        child.wait()


def test_a_failed_commit_fails_every_write_in_its_batch(store: LmdbStore) -> None:
    """If the map cannot grow, each waiting writer hears of it; none is told it was stored."""
    import ironflow.store._lmdb as lmdb_module

    store.register_agents([AgentSpec("a", ("go",))])

    def refuse() -> None:
        raise MemoryError("no address space left")

    store.backend.grow = refuse  # type: ignore[method-assign]
    original = store.backend.env.info()["map_size"]
    store.backend.env.set_mapsize(1 << 16)  # a map already full
    try:
        with pytest.raises((MemoryError, lmdb_module.StoreError)):
            for i in range(50):
                store.emit("go", {"blob": "x" * 4000, "i": i})
    finally:
        store.backend.env.set_mapsize(original)
    assert all(r.status == "pending" for r in store.list_runs(limit=100))


def test_an_old_attempt_cannot_write_into_a_new_one(store: LmdbStore) -> None:
    """A worker that lost a run and leased it again fences out its own stale execution."""
    store.register_agents([AgentSpec("a", ("go",))])
    run_id = store.emit("go", {}).run_ids[0]
    me = this_worker("me")
    [first] = store.lease_runs(me, ["a"], limit=1, ttl=-1)  # attempt 1, lapses at once
    [second] = store.lease_runs(me, ["a"], limit=1, ttl=30)  # its own expired lease, again
    assert (first.run.attempt, second.run.attempt) == (1, 2)
    stale = StepRecord(run_id, 0, "s", "completed", None, "stale", 0.0, 0.0, attempt=1)
    with pytest.raises(LeaseLostError):
        store.record_step(me, stale)
    fresh = StepRecord(run_id, 0, "s", "completed", None, "fresh", 0.0, 0.0, attempt=2)
    store.record_step(me, fresh)
    assert [s.output for s in store.get_steps(run_id)] == ["fresh"]


def test_a_holder_in_another_pid_namespace_is_not_judged_by_our_pids(store: LmdbStore) -> None:
    """Same host name, other boot or pid namespace: wait for the TTL, never guess from pids."""
    from ironflow.store._liveness import process_alive

    me = this_worker()
    elsewhere = WorkerInfo("w", me.host, 999_999, "", machine="other-boot/1")
    assert process_alive(elsewhere) is None
    store.register_agents([AgentSpec("a", ("go",))])
    store.emit("go", {})
    assert len(store.lease_runs(elsewhere, ["a"], limit=1, ttl=3600)) == 1
    assert store.lease_runs(this_worker("local"), ["a"], limit=1, ttl=30) == []


def test_readers_survive_another_process_growing_the_map(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While another process grows the map, this process's reader threads keep working."""
    import ironflow.store._lmdb as lmdb_module

    monkeypatch.setattr(lmdb_module, "_INITIAL_MAP", 1 << 20)
    path = tmp_path / "grown"
    mine = LmdbStore(path, sync=False)
    mine.register_agents([AgentSpec("a", ("go",))])
    errors: list[BaseException] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            try:
                mine.list_runs(limit=5)
            except BaseException as exc:  # any failure here is the bug
                errors.append(exc)
                return

    readers = [threading.Thread(target=read) for _ in range(4)]
    for t in readers:
        t.start()
    grow = (
        "import sys; import ironflow.store._lmdb as m; m._INITIAL_MAP = 1 << 20; "
        "s = m.LmdbStore(sys.argv[1], sync=False); "
        "[s.emit('go', {'blob': 'x' * 100_000, 'i': i}) for i in range(80)]; s.close()"
    )
    try:
        subprocess.run(
            [sys.executable, "-c", grow, str(path)],
            check=True,
            timeout=120,
            env={**os.environ, "PYTHONPATH": os.getcwd()},
        )
        assert len(mine.list_runs(limit=200)) == 80
    finally:
        stop.set()
        for t in readers:
            t.join()
        mine.close()
    assert errors == []

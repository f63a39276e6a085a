"""Retention: prune deletes only what nothing needs; the file stops growing; compact shrinks it."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ironflow._cli._main import main
from ironflow._worker._identity import this_worker
from ironflow.errors import InvalidInputError, RunNotFoundError, StoreError, StoreLockedError
from ironflow.server import BackgroundServer
from ironflow.store import AgentSpec, LmdbStore, RemoteStore, StepRecord, Store
from ironflow.store._compact import compact
from ironflow.store._records import ProjectionSpec
from ironflow.store._retention import parse_age

REPO = Path(__file__).resolve().parents[2]
ME = this_worker("retention-test")
DAY = 86400.0


def step(run_id: str, position: int, payload: str = "") -> StepRecord:
    now = time.time()
    return StepRecord(run_id, position, f"tool.t{position}", "completed", {}, payload, now, now)


def finish(store: Store, run_id: str, status: str = "completed", steps: int = 2) -> None:
    """Lease ``run_id`` (it must be the oldest pending run), record steps, finish it."""
    [leased] = store.lease_runs(ME, ["a"], limit=1, ttl=60)
    assert leased.run.id == run_id
    for position in range(steps):
        store.record_step(ME, step(run_id, position))
    store.finish_run(ME, run_id, status=status, attempt=leased.run.attempt)


def emit(store: Store, n: int = 1) -> list[str]:
    return [store.emit("job.go", {"i": i}).run_ids[0] for i in range(n)]


@pytest.fixture
def later(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Move prune's clock forward: ``later(days)``."""

    def move(days: float) -> None:
        real = time.time
        monkeypatch.setattr("ironflow.store._retention.time.time", lambda: real() + days * DAY)

    return move


@pytest.fixture(params=["lmdb", "remote"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[LmdbStore, Store]]:
    """(the LmdbStore, the store to prune through): itself, or a RemoteStore in front of it."""
    local = LmdbStore(tmp_path / "data", sync=False)
    local.register_agents([AgentSpec("a", ("job.*",))])
    if request.param == "lmdb":
        yield local, local
    else:
        with BackgroundServer(local) as url:
            remote = RemoteStore(url, give_up_after=5.0)
            yield local, remote
            remote.close()
    local.close()


def test_prune_deletes_finished_runs_and_their_steps_never_unfinished_ones(
    stores: tuple[LmdbStore, Store], later: Any
) -> None:
    """Old completed/failed/cancelled runs go with their steps; pending and running stay."""
    local, store = stores
    done, failed, running, pending = emit(store, 4)
    finish(store, done)
    finish(store, failed, "failed")
    [leased] = store.lease_runs(ME, ["a"], limit=1, ttl=60)
    assert leased.run.id == running
    store.record_step(ME, step(running, 0))

    assert store.prune_runs(older_than=DAY).runs == 0  # nothing is a day old yet
    later(2)
    result = store.prune_runs(older_than=DAY)
    assert (result.runs, result.steps, result.dry_run) == (2, 4, False)
    for gone in (done, failed):
        with pytest.raises(RunNotFoundError):
            local.get_run(gone)
        assert local.get_steps(gone) == []
    assert local.get_run(running).status == "running"
    assert [s.position for s in local.get_steps(running)] == [0]
    assert local.get_run(pending).status == "pending"
    local.check_valid()


def test_status_filter_and_dry_run(stores: tuple[LmdbStore, Store], later: Any) -> None:
    """--status narrows to those statuses; a dry run counts exactly what a real run deletes."""
    local, store = stores
    ok, bad = emit(store, 2)
    finish(store, ok)
    finish(store, bad, "failed")
    later(31)
    dry = store.prune_runs(older_than=30 * DAY, statuses=["failed"], dry_run=True)
    assert (dry.runs, dry.steps, dry.dry_run) == (1, 2, True)
    assert local.get_run(bad).status == "failed"  # a dry run deletes nothing
    real = store.prune_runs(older_than=30 * DAY, statuses=["failed"])
    assert (real.runs, real.steps, real.events) == (dry.runs, dry.steps, dry.events)
    assert local.get_run(ok).status == "completed"
    with pytest.raises(InvalidInputError, match="only finished runs"):
        store.prune_runs(older_than=0, statuses=["running"])


def test_prune_keeps_every_event_something_may_still_read(tmp_path: Path, later: Any) -> None:
    """Stream events, subscribed events, events past a projection or after an unfinished
    run's start, and the last event all stay; events only pruned runs needed go."""
    store = LmdbStore(tmp_path / "data", sync=False)
    store.register_agents([AgentSpec("a", ("job.*", "watched.*"))])
    store.register_projections([ProjectionSpec(name="p", events=("watched.*",))])
    early = emit(store, 3)
    watched = store.emit("watched.x", {}).run_ids[0]
    memory = store.append_to_stream("mem", "note", {"kept": True})
    for run_id in [*early, watched]:
        finish(store, run_id)
    unfinished = emit(store, 1)[0]  # started after all of the above
    finish_later = emit(store, 1)[0]
    # The projection has passed everything but the last two events.
    store.lease_projection(ME, "p", ttl=60)
    events = store.events()
    from ironflow.store._records import ProjectionWrite

    store.write_projection(ME, ProjectionWrite("p", 0, events[-3].seq, {"": {}}))
    later(2)
    result = store.prune_runs(older_than=DAY)
    assert result.runs == 4
    kept = {e.seq for e in store.events()}
    by_name = {e.seq: e.name for e in events}
    assert memory.seq in kept, "an entity stream event was pruned"
    assert [s for s in kept if by_name[s] == "watched.x"], "a subscribed event was pruned"
    assert kept >= {events[-2].seq, events[-1].seq}, "events past a projection were pruned"
    assert result.events == 3 and not any(by_name[s] == "job.go" and s < memory.seq for s in kept)
    assert store.get_run(unfinished).status == "pending"
    finish(store, unfinished)
    finish(store, finish_later)
    store.check_valid()
    store.close()


def test_prune_over_the_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, later: Any
) -> None:
    """`ironflow run prune`: counts printed (or JSON), bad ages and statuses exit 2."""
    monkeypatch.delenv("IRONFLOW_URL", raising=False)
    path = tmp_path / "data"
    with LmdbStore(path, sync=False) as store:
        store.register_agents([AgentSpec("a", ("job.*",))])
        for run_id in emit(store, 3):
            finish(store, run_id)
    later(40)

    def cli(*argv: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main([*argv, "--data-dir", str(path)])
            except SystemExit as exc:
                code = int(exc.code or 0)
        return code, out.getvalue(), err.getvalue()

    code, out, _ = cli("run", "prune", "--older-than", "30d", "--dry-run")
    assert code == 0 and out.startswith("would delete 3 finished run(s) older than 30d, 6 step")
    code, out, _ = cli("run", "prune", "--older-than", "30d", "--status", "completed", "--json")
    assert code == 0 and json.loads(out) == {"runs": 3, "steps": 6, "events": 2, "dry_run": False}
    for bad in (["--older-than", "soon"], ["--older-than", "30d", "--status", "running"], []):
        code, _, err = cli("run", "prune", *bad)
        assert code == 2 and "error" in err and "Traceback" not in err


def test_ages_parse_with_units() -> None:
    """30d, 12h, 90m, 45s, 2w and bare seconds; anything else is refused clearly."""
    assert [parse_age(t) for t in ("30d", "12h", "90m", "45s", "2w", "7", "1.5h")] == [
        30 * DAY,
        12 * 3600,
        90 * 60,
        45,
        14 * DAY,
        7,
        5400,
    ]
    for bad in ("", "d", "-1d", "3 days", "1e9"):
        with pytest.raises(InvalidInputError, match="30d or 12h"):
            parse_age(bad)


def workload(store: LmdbStore, runs: int) -> None:
    """A steady round of work: runs with three 2 KB steps each, all finished."""
    ids = [store.emit("job.go", {"pad": "p" * 500}).run_ids[0] for _ in range(runs)]
    leased = store.lease_runs(ME, ["a"], limit=runs, ttl=60)
    assert {r.run.id for r in leased} == set(ids)
    for run_id in ids:
        for position in range(3):
            store.record_step(ME, step(run_id, position, "s" * 2000))
        store.finish_run(ME, run_id, status="completed", attempt=1)


def test_under_a_steady_workload_with_pruning_the_file_stops_growing(tmp_path: Path) -> None:
    """Prune after every round: data.mdb reaches a plateau (LMDB reuses the freed pages),
    while the same workload without pruning keeps growing; compact then shrinks it."""
    pruned = LmdbStore(tmp_path / "pruned", sync=False)
    kept = LmdbStore(tmp_path / "kept", sync=False)
    sizes: list[int] = []
    for store in (pruned, kept):
        store.register_agents([AgentSpec("a", ("job.*",))])
    for _ in range(16):
        workload(pruned, 100)
        workload(kept, 100)
        pruned.prune_runs(older_than=0)
        sizes.append((tmp_path / "pruned" / "data.mdb").stat().st_size)
    grown = (tmp_path / "kept" / "data.mdb").stat().st_size
    # A few pages of warm-up while LMDB's free list settles, then not one page more.
    assert len(set(sizes[-6:])) == 1, f"still growing with pruning: {sizes}"
    assert sizes[-1] <= 1.1 * sizes[0], f"grew too much before settling: {sizes}"
    assert grown > 5 * sizes[-1], f"the unpruned control did not grow: {grown} vs {sizes}"
    pruned.check_valid()
    assert pruned.list_runs(limit=10) == []
    pruned.close()
    kept.close()
    before, after = compact(tmp_path / "pruned")
    assert before == sizes[-1] and after < before
    with LmdbStore(tmp_path / "pruned", sync=False) as store:
        store.check_valid()
        workload(store, 10)


def test_compact_keeps_every_record_and_refuses_while_the_directory_is_in_use(
    tmp_path: Path,
) -> None:
    """compact: same runs and steps after; refused while another process or this one has it open."""
    path = tmp_path / "data"
    with LmdbStore(path, sync=False) as store:
        store.register_agents([AgentSpec("a", ("job.*",))])
        workload(store, 50)
        runs = {r.id: (r, store.get_steps(r.id)) for r in store.list_runs(limit=100)}
        store.prune_runs(older_than=0, statuses=["failed"])  # none: nothing changes
        with pytest.raises(StoreError, match="cannot compact"):
            compact(path)  # this very process has it open
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from ironflow.store import LmdbStore; s = LmdbStore(sys.argv[1]); "
            "print('open', flush=True); sys.stdin.read()",
            str(path),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        with pytest.raises(StoreLockedError, match="in use by another process"):
            compact(path)
    finally:
        holder.kill()
        holder.communicate(timeout=10)  # reaps it and closes its pipes
    compact(path)
    with LmdbStore(path, sync=False) as store:
        store.check_valid()
        assert {r.id: (r, store.get_steps(r.id)) for r in store.list_runs(limit=100)} == runs


def test_compact_over_the_command_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`ironflow store compact`: prints sizes; refuses a server URL or a missing directory."""
    path = tmp_path / "data"
    with LmdbStore(path, sync=False) as store:
        store.register_agents([AgentSpec("a", ("job.*",))])
        workload(store, 20)
    monkeypatch.delenv("IRONFLOW_URL", raising=False)
    assert main(["store", "compact", "--data-dir", str(path)]) == 0
    for argv, env in (
        (["store", "compact", "--data-dir", str(tmp_path / "none")], {}),
        (["store", "compact"], {"IRONFLOW_URL": "http://127.0.0.1:9"}),
    ):
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2


def test_prune_drops_the_flow_control_index_entries_of_the_runs_it_deletes(
    tmp_path: Path, later: Any
) -> None:
    """A pruned run leaves no cancel-on or concurrency entry behind; a live run keeps its own."""
    from ironflow.store._flowspec import CancelOn, ConcurrencyLimit, FlowSpec

    store = LmdbStore(tmp_path / "data", sync=False)
    flow = FlowSpec(
        concurrency=ConcurrencyLimit(5, "data.i"), cancel_on=(CancelOn("job.stop", "data.i"),)
    )
    store.register_agents([AgentSpec("a", ("job.go",), flow=flow)])

    def entries(name: str) -> list[str]:
        with store.backend.read() as txn:
            keys = [key for key, _ in txn.scan(name)]
            return sorted(k.rsplit(b"\x00", 1)[-1].decode() for k in keys)

    done, live = emit(store, 2)
    finish(store, done)
    assert entries("cancel_keys") == sorted([done, live])  # a finished run's entry lingers
    later(2)
    assert store.prune_runs(older_than=DAY).runs == 1
    assert entries("cancel_keys") == [live]
    assert entries("slots") == [live]
    # The live run is still cancelled by its event, through the entry prune kept.
    store.emit("job.stop", {"i": 1})
    assert store.get_run(live).status == "cancelled"
    store.check_valid()
    store.close()

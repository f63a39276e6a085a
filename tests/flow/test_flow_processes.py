"""A concurrency key holds across real worker processes sharing one data directory."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ironflow import LmdbStore
from ironflow._agent._dsl import AgentDefinition
from tests.flow.agents_for_processes import one_per_key

pytestmark = pytest.mark.process

REPO = Path(__file__).resolve().parents[2]


def test_two_worker_processes_never_run_two_runs_of_one_key_at_once(tmp_path: Path) -> None:
    """Two workers with three threads each: per key, the runs' steps never overlap."""
    data, log = tmp_path / "data", tmp_path / "steps.log"
    log.touch()
    with LmdbStore(data) as store:
        store.register_agents([AgentDefinition.must_from_fn(one_per_key).spec()])
        ids = [store.emit("job", {"k": k}).run_ids[0] for k in "abababab"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IRONFLOW_", "HYPOTHESIS_"))}
    env.update(IRONFLOW_TEST_LOG=str(log), PYTHONUNBUFFERED="1")
    argv = [sys.executable, "-m", "ironflow.run", "worker", "tests.flow.agents_for_processes"]
    argv += ["--data-dir", str(data), "--concurrency", "3"]
    procs = [
        subprocess.Popen(
            argv, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        for _ in range(2)
    ]
    try:
        with LmdbStore(data) as store:
            deadline = time.monotonic() + 30
            while not all(store.get_run(i).status == "completed" for i in ids):
                assert time.monotonic() < deadline, [store.get_run(i).status for i in ids]
                assert all(p.poll() is None for p in procs), "a worker exited"
                store.wait_for_work(0.05)
    finally:
        for p in procs:
            p.kill()
            p.wait(timeout=10)
    spans: dict[str, list[tuple[float, float]]] = {"a": [], "b": []}
    starts: dict[tuple[str, str], float] = {}
    for line in log.read_text().splitlines():
        what, key, at, pid = line.split()
        if what == "start":
            starts[(key, pid)] = float(at)
        else:
            spans[key].append((starts.pop((key, pid)), float(at)))
    assert sorted(len(v) for v in spans.values()) == [4, 4]
    for key, runs in spans.items():
        runs.sort()
        overlaps = [(x, y) for x, y in itertools.pairwise(runs) if y[0] < x[1]]
        assert not overlaps, f"key {key}: runs overlapped {overlaps}"

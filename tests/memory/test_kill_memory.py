"""A real worker killed with SIGKILL between memory.append and memory.append.wait."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ironflow import Worker
from ironflow.store import LmdbStore
from tests.memory._blocked_memory_module import kill_memory, kill_memory_agent

REPO = Path(__file__).resolve().parents[2]


def wait_for(what: str, check: Callable[[], bool], proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while not check():
        assert proc.poll() is None, f"the worker exited early while waiting for {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


@pytest.fixture
def worker_proc(tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IRONFLOW_")}
    env["IRONFLOW_TEST_BLOCK_FOLD"] = "1"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ironflow.run",
            "worker",
            "tests.memory._blocked_memory_module",
            "--data-dir",
            str(tmp_path / "data"),
            "--quiet",
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


@pytest.mark.process
def test_kill9_between_append_and_wait_resumes_with_one_event(
    tmp_path: Path, worker_proc: subprocess.Popen[bytes]
) -> None:
    """kill -9 while memory.append.wait blocks: the resumed run appends nothing more."""
    store = LmdbStore(tmp_path / "data", sync=False)
    try:
        # The worker module's @projection is served too: its runner holds the lease.
        def serving() -> bool:
            try:
                runner = store.projection_status("kill-memory").runner
            except Exception:
                return False
            return runner is not None and runner.pid == worker_proc.pid

        wait_for("the worker to serve its projection", serving, worker_proc)
        run_id = store.emit("kill.requested", {"id": "k1"}).run_ids[0]
        wait_for(
            "memory.append to be recorded",
            lambda: [s.id for s in store.get_steps(run_id)] == ["memory.append"],
            worker_proc,
        )
        os.kill(worker_proc.pid, signal.SIGKILL)
        worker_proc.wait(timeout=10)
        assert store.get_run(run_id).status == "running"

        Worker([kill_memory_agent], projections=[kill_memory], store=store).run(
            until_idle=True, ready_message=False
        )
        run = store.get_run(run_id)
        assert run.status == "completed", run.error
        assert run.output == {"k1": 1}
        assert [(s.id, s.attempt) for s in store.get_steps(run_id)] == [
            ("memory.append", 1),
            ("memory.append.wait", 2),
            ("memory.state", 2),
        ]
        assert [e.data for e in store.read_stream("kill-stream")] == [{"id": "k1"}]
        store.check_valid()
    finally:
        store.close()

"""``worker --processes N``: N real worker processes behind one command and one pid.

The command's pid stands for all of them: SIGTERM drains every child, ``kill -9`` of the
command takes the children with it (they watch a pipe only it writes), and a child that
dies while serving is replaced, its run resumed. Every process a test starts, children
included, is killed by pid at teardown.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ironflow import LmdbStore
from tests.process._workers import Workers, wait_for


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def _pid_of(worker_id: str) -> int:
    return int(worker_id.rsplit(":", 2)[1])  # HOST:PID:SUFFIX


def _running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's zombie waits for whoever adopts it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


@pytest.fixture
def children_killed() -> Iterator[set[int]]:
    """Pids of children a test saw: killed by pid at teardown if still there."""
    seen: set[int] = set()
    yield seen
    for pid in seen:
        if _running(pid):
            os.kill(pid, signal.SIGKILL)


def _serving(workers: Workers, proc: subprocess.Popen[bytes], n: int, seen: set[int]) -> list[int]:
    kids = wait_for(
        lambda: len(_children(proc.pid)) == n and _children(proc.pid),
        f"{n} worker processes",
        workers.describe,
    )
    seen.update(kids)
    return kids


def _emit(store: LmdbStore, docs: list[str]) -> list[str]:
    return [store.emit("kill9.doc", {"doc": doc}).run_ids[0] for doc in docs]


def _started(workers: Workers, run_ids: list[str], step: str = "tool.classify") -> bool:
    log = workers.log.read_text()
    return all(f"start {rid} {step} " in log for rid in run_ids)


def test_one_pid_stands_for_n_processes_and_sigterm_drains_them_all(
    tmp_path: Path, children_killed: set[int]
) -> None:
    workers = Workers(tmp_path, concurrency=1)
    pid_file = tmp_path / "worker.pid"
    try:
        proc = workers.start("--processes", "2", "--pid-file", str(pid_file))
        ready = re.findall(r"worker ready \(pid (\d+)\)", workers.stdout(proc))
        assert ready == [str(proc.pid)], workers.describe()  # one line, the command's pid
        assert pid_file.read_text().strip() == str(proc.pid)
        kids = _serving(workers, proc, 2, children_killed)
        with LmdbStore(workers.data_dir) as store:
            # Each child executes one run at a time: two runs held at the gate at once
            # are one in each process.
            run_ids = _emit(store, ["a", "b"])
            wait_for(lambda: _started(workers, run_ids), "both runs at the gate", workers.describe)
            holders = {store.get_steps(rid)[0].worker for rid in run_ids}
            assert {_pid_of(h) for h in holders} == set(kids)
            proc.send_signal(signal.SIGTERM)
            # Draining: the in-flight steps finish once the gate opens, then all exit.
            workers.gate.touch()
            assert proc.wait(timeout=30) == 0, workers.describe()
            assert not [k for k in kids if _running(k)]
            assert not pid_file.exists()
            for rid in run_ids:
                # Each drained child finished its step in flight and gave the run back.
                assert store.get_run(rid).status == "pending"
                assert [st.id for st in store.get_steps(rid)] == ["tool.extract", "tool.classify"]
            workers.start()
            for rid in run_ids:
                assert store.wait_for_run(rid, timeout=30).status == "completed"
                assert workers.executions(rid)[("start", "tool.classify")] == 1
    finally:
        workers.close()


def test_kill_9_of_the_command_stops_its_processes_and_a_new_worker_resumes(
    tmp_path: Path, children_killed: set[int]
) -> None:
    workers = Workers(tmp_path, concurrency=1)
    try:
        proc = workers.start("--processes", "2")
        kids = _serving(workers, proc, 2, children_killed)
        with LmdbStore(workers.data_dir) as store:
            run_ids = _emit(store, ["a", "b"])
            wait_for(lambda: _started(workers, run_ids), "both runs at the gate", workers.describe)
            proc.kill()
            proc.wait(timeout=10)
            wait_for(
                lambda: not [k for k in kids if _running(k)],
                "the orphaned worker processes to stop",
                workers.describe,
            )
            workers.gate.touch()
            workers.start()  # one plain worker finds both runs orphaned
            for rid in run_ids:
                assert store.wait_for_run(rid, timeout=30).status == "completed"
                counts = workers.executions(rid)
                # Recorded once: only the step in flight at the kill ran again.
                assert counts[("start", "tool.extract")] == 1
                assert counts[("end", "tool.publish")] == 1
    finally:
        workers.close()


def test_a_child_killed_while_serving_is_replaced_and_its_run_resumed(
    tmp_path: Path, children_killed: set[int]
) -> None:
    workers = Workers(tmp_path, concurrency=1)
    try:
        proc = workers.start("--processes", "2")
        kids = _serving(workers, proc, 2, children_killed)
        with LmdbStore(workers.data_dir) as store:
            [rid] = _emit(store, ["a"])
            wait_for(lambda: _started(workers, [rid]), "the run at the gate", workers.describe)
            holder = _pid_of(store.get_steps(rid)[0].worker)
            assert holder in kids
            os.kill(holder, signal.SIGKILL)
            fresh = wait_for(
                lambda: [k for k in _children(proc.pid) if k not in kids],
                "a replacement process",
                workers.describe,
            )
            children_killed.update(fresh)
            workers.gate.touch()
            assert store.wait_for_run(rid, timeout=30).status == "completed"
            assert "exited with status 137 while serving" in workers.stderr(proc)
            assert proc.poll() is None
    finally:
        workers.close()


def test_a_module_that_fails_stops_the_command_once(tmp_path: Path) -> None:
    """The first process starts alone: a broken module is reported once, status 2."""
    done = subprocess.run(
        [
            *(sys.executable, "-m", "ironflow.run", "worker", "no_such_module_here"),
            *("--processes", "3", "--data-dir", str(tmp_path / "data")),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("no_such_module_here") == 1, done.stderr

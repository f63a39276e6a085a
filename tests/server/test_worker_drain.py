"""A worker through a server that has gone away: SIGTERM drains without waiting for it.

Workers retry an unreachable server (that is durability), but a drain must not: an
idle worker exits at once, and one with a step in flight finishes the step and exits,
leaving the unrecorded step to run again after a takeover, as after a crash.
"""

from __future__ import annotations

import signal
import sys
from collections import Counter
from pathlib import Path

import pytest

from ironflow.store import RemoteStore
from tests.server.conftest import Child, Served, child_env, wait_until
from tests.server.test_processes import emit_pipeline, executions, finished, gate_of

pytestmark = pytest.mark.process

AGENTS = "tests.server.agents"
#: Far longer than the test: nothing below may be explained by a lease running out.
LEASE_TTL = "120"


def start_worker(url: str, pid_file: Path) -> Child:
    worker = Child(
        [
            sys.executable,
            "-m",
            "ironflow.run",
            "worker",
            AGENTS,
            "--lease-ttl",
            LEASE_TTL,
            "--pid-file",
            str(pid_file),
        ],
        child_env(IRONFLOW_URL=url),
    )
    try:
        worker.line_starting("pipeline, counter worker ready")
    except BaseException:
        worker.kill()
        raise
    return worker


def exits_within(worker: Child, seconds: float) -> int | None:
    """The worker's exit status if it exits within ``seconds``; None if it is still running."""
    try:
        return worker.proc.wait(timeout=seconds)
    except Exception:
        return None


def test_sigterm_of_an_idle_worker_with_the_server_down_exits_at_once(
    served: Served, tmp_path: Path
) -> None:
    """Server stopped, then `kill PID` of an idle worker: it exits 0 at once, pid file gone."""
    pid_file = tmp_path / "worker.pid"
    worker = start_worker(served.url, pid_file)
    try:
        assert pid_file.read_text() == f"{worker.proc.pid}\n"
        served.kill(signal.SIGTERM)
        wait_until(
            lambda: any("unreachable" in line for line in worker.stderr),
            what="the worker to notice the server is gone",
        )
        worker.proc.send_signal(signal.SIGTERM)
        # Before the fix the worker logged "draining" and retried the server until a
        # second signal: 30 s is far beyond an exit at once and far below forever.
        code = exits_within(worker, 30)
    finally:
        worker.kill()
    assert code == 0, "".join(worker.stderr)
    assert not pid_file.exists()
    assert "worker stopped" in "".join(worker.stderr)


def test_sigterm_with_a_step_in_flight_and_the_server_down_waits_only_for_the_step(
    served: Served, tmp_path: Path
) -> None:
    """The in-flight step finishes, its record cannot reach the server, the worker exits;
    a new worker later runs that step again and the run completes."""
    log = tmp_path / "tools.log"
    pid_file = tmp_path / "worker.pid"
    store = RemoteStore(served.url, give_up_after=30)
    worker = start_worker(served.url, pid_file)
    try:
        run_id = emit_pipeline(store, log, ["a", "b", "c"], slow="b")
        wait_until(lambda: executions(log)["b"] == 1, what="step b to start")
        served.kill(signal.SIGKILL)
        worker.proc.send_signal(signal.SIGTERM)
        wait_until(
            lambda: any("draining" in line for line in worker.stderr), what="the drain to begin"
        )
        assert exits_within(worker, 1) is None, "the drain did not wait for step b"
        gate_of(log).touch()
        code = exits_within(worker, 30)
        assert code == 0, "".join(worker.stderr)
        assert "done b" in log.read_text()
        worker.kill()  # gone already: this reaps it and closes its pipes
        assert "taken up again" in "".join(worker.stderr)

        served.start()  # same port, same data directory
        worker = start_worker(served.url, pid_file)
        run = wait_until(lambda: finished(store, run_id), what="the run to finish")
    finally:
        worker.kill()
        store.close()
    assert run.status == "completed" and run.output == {"done": ["a", "b", "c"]}
    # b finished once with no server to record it, so it ran again after the takeover.
    assert executions(log) == Counter({"a": 1, "b": 2, "c": 1})

"""A real worker process killed with SIGKILL mid-step, or drained with SIGTERM, then resumed.

The worker is ``python -m ironflow.run worker tests.process.agents_for_tests``; its tools
append start/end lines to a file, so executions are counted across processes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from ironflow import LmdbStore

pytestmark = pytest.mark.process

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[2]
MODULE = "tests.process.agents_for_tests"
#: Far longer than any wait below: a takeover inside the wait proves it came from the
#: dead pid, not from the lease running out.
LEASE_TTL = 120
WAIT = 30.0
STEP_IDS = ["tool.extract", "tool.classify", "tool.publish"]


class Workers:
    """Starts worker subprocesses and guarantees each is killed by pid at teardown."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.data_dir = tmp / "data"
        self.log = tmp / "executions.log"
        self.log.touch()
        #: tool.classify waits until this file exists (see agents_for_tests).
        self.gate = tmp / "classify.gate"
        self.procs: list[subprocess.Popen[bytes]] = []
        self._outputs: dict[int, tuple[Path, Path]] = {}

    def start(self) -> subprocess.Popen[bytes]:
        n = len(self.procs) + 1
        out, err = self.tmp / f"worker{n}.out", self.tmp / f"worker{n}.err"
        env = {
            k: v for k, v in os.environ.items() if not k.startswith(("IRONFLOW_", "HYPOTHESIS_"))
        }
        env.update(
            IRONFLOW_TEST_LOG=str(self.log), IRONFLOW_TEST_GATE=str(self.gate), PYTHONUNBUFFERED="1"
        )
        with open(out, "wb") as stdout, open(err, "wb") as stderr:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "ironflow.run",
                    "worker",
                    MODULE,
                    "--data-dir",
                    str(self.data_dir),
                    "--lease-ttl",
                    str(LEASE_TTL),
                    "--concurrency",
                    "2",
                ],
                cwd=REPO,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
            )
        self.procs.append(proc)
        self._outputs[proc.pid] = (out, err)
        wait_for(
            lambda: "worker ready" in self.stdout(proc) or proc.poll() is not None,
            f"worker {n} to be ready",
            self.describe,
        )
        assert proc.poll() is None, f"worker {n} exited at start\n{self.describe()}"
        return proc

    def stdout(self, proc: subprocess.Popen[bytes]) -> str:
        return self._outputs[proc.pid][0].read_text(errors="replace")

    def stderr(self, proc: subprocess.Popen[bytes]) -> str:
        return self._outputs[proc.pid][1].read_text(errors="replace")

    def executions(self, run_id: str) -> Counter[tuple[str, str]]:
        """(start|end, step id) -> how many times, for one run, across every worker."""
        counts: Counter[tuple[str, str]] = Counter()
        for line in self.log.read_text().splitlines():
            what, rid, step_id, _attempt = line.split(" ")
            if rid == run_id:
                counts[(what, step_id)] += 1
        return counts

    def describe(self) -> str:
        parts = [f"--- executions\n{self.log.read_text()}"]
        for proc in self.procs:
            parts.append(
                f"--- worker pid {proc.pid} (exit {proc.poll()})\n"
                f"{self.stdout(proc)}{self.stderr(proc)}"
            )
        return "\n".join(parts)

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    w = Workers(tmp_path)
    try:
        yield w
    finally:
        w.close()


@pytest.fixture
def store(workers: Workers) -> Iterator[LmdbStore]:
    """The test's own handle on the data directory the workers share."""
    s = LmdbStore(workers.data_dir)
    try:
        yield s
    finally:
        s.close()


def wait_for(
    predicate: Callable[[], T], what: str, describe: Callable[[], str], timeout: float = WAIT
) -> T:
    """Poll ``predicate`` until it is truthy, or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{describe()}")
        time.sleep(0.05)


def finished(store: LmdbStore, run_id: str) -> bool:
    return store.get_run(run_id).status in ("completed", "failed", "cancelled")


def inspect_json(workers: Workers, run_id: str) -> Any:
    """``ironflow inspect RUN_ID --json``, as a user would run it."""
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from ironflow._cli._main import main; sys.exit(main())",
            "inspect",
            run_id,
            "--json",
            "--data-dir",
            str(workers.data_dir),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def expected_output(doc: str) -> dict[str, Any]:
    text = f"text of {doc}"
    category = "invoice" if "invoice" in text else "other"
    return {
        "doc": doc,
        "chars": len(text),
        "category": category,
        "receipt": {"published": True, "channel": category},
    }


def test_kill9_mid_step_resumes_at_once_running_only_the_in_flight_step_again(
    workers: Workers, store: LmdbStore
) -> None:
    """kill -9 during step 1: a new worker resumes at once; only step 1 runs again."""
    first = workers.start()
    run_id = store.emit("kill9.doc", {"doc": "invoice-7"}).run_ids[0]

    def in_flight() -> bool:
        steps = store.get_steps(run_id)
        started = workers.executions(run_id)[("start", "tool.classify")]
        return [s.position for s in steps] == [0] and started == 1

    wait_for(in_flight, "step 0 recorded and step 1 started", workers.describe)
    first.send_signal(signal.SIGKILL)  # step 1 waits at its gate: still in flight
    first.wait(timeout=WAIT)
    orphaned = store.get_run(run_id)
    assert orphaned.status == "running"
    lease = store.get_lease(run_id)
    assert lease is not None and lease.worker.pid == first.pid

    workers.gate.touch()
    second = workers.start()
    wait_for(lambda: finished(store, run_id), "the resumed run to finish", workers.describe)
    resumed = store.get_run(run_id)
    assert resumed.status == "completed", workers.describe()
    assert resumed.attempt == 2

    # An uncrashed run of the same event data, on the same worker, for comparison.
    clean_id = store.emit("kill9.doc", {"doc": "invoice-7"}).run_ids[0]
    wait_for(lambda: finished(store, clean_id), "the uncrashed run to finish", workers.describe)
    clean = store.get_run(clean_id)
    assert clean.status == "completed"
    assert resumed.output == clean.output == expected_output("invoice-7")

    runs = workers.executions(run_id)
    assert runs[("start", "tool.extract")] == 1, "a completed step ran again"
    assert runs[("start", "tool.classify")] == 2, "the in-flight step did not run exactly once more"
    assert runs[("end", "tool.classify")] == 1
    assert runs[("start", "tool.publish")] == 1
    assert set(workers.executions(clean_id).values()) == {1}

    shown = inspect_json(workers, run_id)
    assert shown["status"] == "completed"
    assert [s["id"] for s in shown["steps"]] == STEP_IDS
    assert [s["status"] for s in shown["steps"]] == ["completed"] * 3
    assert [s["attempt"] for s in shown["steps"]] == [1, 2, 2]
    assert "resuming at step 1" in workers.stderr(second), workers.describe()


def test_sigterm_drains_the_in_flight_step_and_hands_the_run_back(
    workers: Workers, store: LmdbStore
) -> None:
    """SIGTERM mid-step: the step finishes and is recorded, the worker exits 0, run pending."""
    first = workers.start()
    run_id = store.emit("kill9.doc", {"doc": "memo-3"}).run_ids[0]
    wait_for(
        lambda: workers.executions(run_id)[("start", "tool.classify")] == 1,
        "step 1 to start",
        workers.describe,
    )
    first.send_signal(signal.SIGTERM)
    # Step 1 waits at its gate until the worker has taken the signal, so the drain is
    # sure to meet it in flight; opened, it finishes and the worker exits.
    wait_for(
        lambda: "SIGTERM received: draining" in workers.stderr(first),
        "the worker to start draining",
        workers.describe,
    )
    workers.gate.touch()
    assert first.wait(timeout=WAIT) == 0, workers.describe()

    steps = store.get_steps(run_id)
    assert [(s.position, s.id, s.status) for s in steps] == [
        (0, "tool.extract", "completed"),
        (1, "tool.classify", "completed"),
    ]
    drained = store.get_run(run_id)
    assert drained.status == "pending"
    assert store.get_lease(run_id) is None
    assert workers.executions(run_id)[("start", "tool.publish")] == 0

    second = workers.start()
    wait_for(lambda: finished(store, run_id), "the handed-back run to finish", workers.describe)
    done = store.get_run(run_id)
    assert done.status == "completed", workers.describe()
    assert done.output == expected_output("memo-3")
    runs = workers.executions(run_id)
    assert runs == Counter({(what, step): 1 for what in ("start", "end") for step in STEP_IDS}), (
        "a recorded step ran again"
    )
    assert "resuming at step 2" in workers.stderr(second), workers.describe()

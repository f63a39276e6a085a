"""A real worker process killed with SIGKILL mid-step, or drained with SIGTERM, then resumed.

The worker is ``python -m ironflow.run worker tests.process.agents_for_tests``; its tools
append start/end lines to a file, so executions are counted across processes.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections import Counter
from typing import Any

import pytest

from ironflow import LmdbStore
from tests.process._workers import REPO, WAIT, Workers, finished, wait_for

pytestmark = pytest.mark.process

STEP_IDS = ["tool.extract", "tool.classify", "tool.publish"]


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

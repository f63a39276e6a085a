"""The code-review example in one process: ``python -m examples.code_review.demo``.

Starts a worker on a fresh data directory, opens pull request #42, waits until the run
asks for approval, approves it as a person would with ``ironflow approve``, and prints
the run's result. Offline: the review comes from a scripted model.
"""

from __future__ import annotations

import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from examples.code_review.agent import code_review
from ironflow import LmdbStore, Worker


def _wait_for(store: LmdbStore, run_id: str, *statuses: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while (run := store.get_run(run_id)).status not in statuses:
        if time.monotonic() > deadline:
            raise SystemExit(f"run {run_id} is still {run.status} after {timeout}s")
        time.sleep(0.05)
    return run


def main(data_dir: str | None = None, *, approve: bool = True) -> dict[str, Any]:
    """Run the example end to end; return the run's output."""
    path = Path(data_dir or tempfile.mkdtemp(prefix="code-review-"))
    store = LmdbStore(path)
    worker = Worker([code_review], store=store, poll_interval=0.02)
    thread = threading.Thread(target=worker.run, kwargs={"ready_message": False})
    thread.start()
    try:
        run_id = store.emit("pr.opened", {"repo": "acme/api", "number": 42}).run_ids[0]
        print(f"run {run_id}: reviewing acme/api#42")
        run = _wait_for(store, run_id, "waiting")
        print(f"run {run_id}: waiting for approval ({run.suspension.step_id}), no worker held")
        # What `ironflow approve RUN_ID merge` sends: an ordinary event any emitter can send.
        answer = {"run_id": run_id, "approved": approve, "approver": "demo"}
        store.emit("agent.approve.merge", answer)
        run = _wait_for(store, run_id, "completed", "failed")
        print(f"run {run_id}: {run.status}: merged={run.output and run.output['merged']}")
        return dict(run.output or {})
    finally:
        worker.stop()
        thread.join()
        store.close()


if __name__ == "__main__":
    output = main(sys.argv[1] if len(sys.argv) > 1 else None)
    print(output["review"])

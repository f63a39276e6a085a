"""The research example in one process: ``python -m examples.research.demo [TOPIC]``.

Starts a worker on a fresh data directory, asks for research on the topic, and prints
the summary once the run completes. Offline: a scripted model, a tiny local corpus.
"""

from __future__ import annotations

import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from examples.research.agent import research
from ironflow import LmdbStore, Worker


def main(topic: str = "durable execution", data_dir: str | None = None) -> dict[str, Any]:
    """Run the example end to end; return the run's output."""
    path = Path(data_dir or tempfile.mkdtemp(prefix="research-"))
    store = LmdbStore(path)
    worker = Worker([research], store=store, poll_interval=0.02)
    thread = threading.Thread(target=worker.run, kwargs={"ready_message": False})
    thread.start()
    try:
        run_id = store.emit("research.requested", {"topic": topic}).run_ids[0]
        print(f"run {run_id}: researching {topic!r}")
        deadline = time.monotonic() + 30
        while (run := store.get_run(run_id)).status not in ("completed", "failed"):
            if time.monotonic() > deadline:
                raise SystemExit(f"run {run_id} is still {run.status} after 30s")
            time.sleep(0.05)
        if run.status != "completed":
            raise SystemExit(f"run {run_id} failed: {run.error}")
        print(f"run {run_id}: completed with {len(store.get_steps(run_id))} recorded steps")
        return dict(run.output)
    finally:
        worker.stop()
        thread.join()
        store.close()


if __name__ == "__main__":
    output = main(" ".join(sys.argv[1:]) or "durable execution")
    print(output["summary"])

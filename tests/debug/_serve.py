"""Run the debug agents to their end on a store."""

from __future__ import annotations

import time
from typing import Any

from ironflow import Worker
from ironflow.store import FINISHED, Run, Store
from tests.debug import agents


def serve_to_end(store: Store, run_id: str, timeout: float = 30.0) -> Run:
    """Serve the debug agents until ``run_id`` has finished (retries sleep a few ms)."""
    deadline = time.monotonic() + timeout
    while True:
        worker = Worker(
            [agents.parent, agents.child],
            projections=[agents.notes],
            store=store,
            poll_interval=0.01,
        )
        worker.run(until_idle=True, ready_message=False)
        run = store.get_run(run_id)
        if run.status in FINISHED:
            return run
        assert time.monotonic() < deadline, f"run {run_id} is still {run.status}"
        time.sleep(0.02)


def parent_run(store: Store, data: Any = None) -> Run:
    """Emit debug.parent and serve it to its end."""
    worker = Worker([agents.parent, agents.child], projections=[agents.notes], store=store)
    del worker  # registering the agents is what emit needs
    result = store.emit("debug.parent", data or {"url": "https://example.com/a"})
    return serve_to_end(store, result.run_ids[0])

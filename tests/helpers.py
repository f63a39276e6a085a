"""Helpers shared by the test packages: record builders and the crashing-worker loop."""

from __future__ import annotations

import contextlib
import threading

from ironflow import Worker
from ironflow.store import StepRecord
from ironflow.testing import SimulatedCrash

__all__ = ["completed_step", "serve_until_idle_or_crash"]


def completed_step(run_id: str, position: int) -> StepRecord:
    """A completed step record at ``position``, its output the position itself."""
    return StepRecord(
        run_id=run_id,
        position=position,
        id=f"s{position}",
        status="completed",
        input=None,
        output=position,
        started_at=0.0,
        ended_at=0.0,
    )


def serve_until_idle_or_crash(worker: Worker, timeout: float = 30.0) -> None:
    """Run ``worker`` until it is idle or its store's fault kills it.

    Off the main thread, so the worker leaves the test process's signals alone; the
    serving loop itself meets the dead store once the run has died.
    """

    def serve() -> None:
        with contextlib.suppress(SimulatedCrash):
            worker.run(until_idle=True, ready_message=False)

    thread = threading.Thread(target=serve)
    thread.start()
    thread.join(timeout=timeout)
    assert not thread.is_alive(), "the worker did not go idle"

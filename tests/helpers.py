"""Helpers shared by the test packages: record builders and the crashing-worker loop."""

from __future__ import annotations

import contextlib
import threading

from hypothesis import settings

from ironflow import Worker
from ironflow.store import StepRecord
from ironflow.testing import SimulatedCrash

__all__ = [
    "QUICK_EXAMPLES",
    "THOROUGH_EXAMPLES",
    "completed_step",
    "examples",
    "serve_until_idle_or_crash",
]

#: max_examples of the hypothesis profiles (registered in tests/conftest.py): "quick" in
#: `make test`, "thorough" in `make test-thorough` (HYPOTHESIS_PROFILE=thorough).
QUICK_EXAMPLES = 40
THOROUGH_EXAMPLES = 1000


def examples(quick: int) -> int:
    """max_examples for a test worth ``quick`` examples in the quick profile, scaled to the
    profile loaded: a hard-coded number would ignore HYPOTHESIS_PROFILE=thorough."""
    return max(1, round(quick * settings.default.max_examples / QUICK_EXAMPLES))


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

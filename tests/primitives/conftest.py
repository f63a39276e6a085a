"""Fixtures for the waiting primitives: a store on a fake clock, a worker in a thread."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from ironflow import Worker
from ironflow._agent._dsl import AgentDefinition
from ironflow.store import AgentSpec, LmdbStore, Run, Store
from ironflow.testing import CrashingStore, FakeClock, StandInWorker
from tests.helpers import serve_until_idle_or_crash


@pytest.fixture
def clock() -> FakeClock:
    """A clock for the store's durable timers that moves only when a test says so."""
    return FakeClock()


@pytest.fixture
def timed_store(tmp_path: Path, clock: FakeClock) -> Iterator[LmdbStore]:
    """An LmdbStore whose timers follow ``clock`` (fsync off: these tests prove logic)."""
    s = LmdbStore(tmp_path / "data", sync=False, clock=clock)
    yield s
    s.close()


def wait_until(predicate: Callable[[], Any], timeout: float = 30.0, what: str = "") -> Any:
    """Poll ``predicate`` every 10 ms until it is truthy; fail after ``timeout`` seconds.

    Generous: a loaded machine is slow, and a passing test never waits it out.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(0.01)


def wait_status(store: Store, run_id: str, *statuses: str, timeout: float = 30.0) -> Run:
    """The run once its status is one of ``statuses``."""
    return wait_until(  # type: ignore[no-any-return]
        lambda: (r := store.get_run(run_id)).status in statuses and r,
        timeout,
        f"run {run_id} to be {'/'.join(statuses)}",
    )


@contextmanager
def serving(store: Store, agents: list[Any], **options: Any) -> Iterator[Worker]:
    """A Worker serving ``agents`` from ``store`` on a thread, stopped (drained) on exit."""
    options.setdefault("poll_interval", 0.01)
    worker = Worker(agents, store=store, **options)
    thread = threading.Thread(target=worker.run, kwargs={"ready_message": False}, daemon=True)
    thread.start()
    try:
        yield worker
    finally:
        worker.stop()
        thread.join(timeout=15)
        assert not thread.is_alive(), "the worker did not stop"


def register(store: Store, *agents: Any) -> None:
    """Make the agents' triggers known, as a worker does when it starts."""
    specs = [AgentDefinition.must_from_fn(a) for a in agents]
    store.register_agents([AgentSpec(id=d.id, triggers=d.triggers) for d in specs])


def emit(store: Store, name: str, data: Any, *agents: Any) -> str:
    """Register ``agents``, emit the event, and return the one run it started."""
    register(store, *agents)
    run_ids = store.emit(name, data).run_ids
    assert len(run_ids) == 1, run_ids
    return run_ids[0]


def serve_until_crash(store: CrashingStore, agents: list[Any]) -> None:
    """One worker "process" over ``store`` until it is idle or dies at the store's fault.

    Its leases name a stand-in process, killed afterwards: the next worker takes the run
    over at once, as after ``kill -9``.
    """
    with StandInWorker() as process:
        worker = Worker(agents, store=store)
        worker.info = process.info
        serve_until_idle_or_crash(worker)

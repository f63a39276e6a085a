"""Ironflow's pytest plugin: fixtures to run and crash-test agents in a test.

Installed with ironflow (the ``pytest11`` entry point), so a project's tests just ask
for the fixtures::

    def test_doc_processor(ironflow_worker):
        run = ironflow_worker.run(doc_processor, {"docId": "d1", "imageUrl": "..."})
        assert run.output["category"] == "invoice"

    def test_it_survives_every_crash(ironflow_crash_matrix):
        ironflow_crash_matrix(doc_processor, {"docId": "d1", "imageUrl": "..."})

- ``ironflow_clock``: a :class:`~ironflow.testing.FakeClock` the store's timers follow;
- ``ironflow_store``: a fresh :class:`~ironflow.testing.MemoryStore` per test on that
  clock, or with ``@pytest.mark.ironflow_lmdb`` an :class:`~ironflow.store.LmdbStore`
  in the test's temporary directory (fsync off);
- ``ironflow_worker``: a :class:`~ironflow.testing.Driver` on that store: ``run(agent,
  data, approve=...)`` runs an agent to its end, sleeps skipped, approvals answered;
- ``ironflow_crash_matrix``: :func:`~ironflow.testing.crash_matrix`, each case on a
  fresh store of the same kind; the report is printed (pytest shows it on failure).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ironflow.store import LmdbStore, Store
from ironflow.testing import CrashReport, Driver, FakeClock, MemoryStore, crash_matrix

__all__ = [
    "ironflow_clock",
    "ironflow_crash_matrix",
    "ironflow_store",
    "ironflow_worker",
]

LMDB_MARKER = "ironflow_lmdb"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{LMDB_MARKER}: the ironflow_store fixture (and the crash matrix's stores) are "
        "LmdbStores in temporary directories",
    )


@pytest.fixture
def ironflow_clock() -> FakeClock:
    """The clock the test's store runs its timers on; ``advance("7d")`` ends a long sleep."""
    return FakeClock()


def _lmdb_factory(root: Path) -> Callable[[FakeClock], Any]:
    counter = iter(range(1_000_000))

    @contextlib.contextmanager
    def make(clock: FakeClock) -> Iterator[Store]:
        store = LmdbStore(root / f"store-{next(counter)}", sync=False, clock=clock)
        try:
            yield store
        finally:
            store.close()

    return make


@contextlib.contextmanager
def _memory_store(clock: FakeClock) -> Iterator[Store]:
    store = MemoryStore(clock=clock)
    try:
        yield store
    finally:
        store.close()


def _factory(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[FakeClock], Any]:
    """Fresh stores of the kind the test asks for: in memory, or LMDB with the marker."""
    if request.node.get_closest_marker(LMDB_MARKER) is not None:
        return _lmdb_factory(tmp_path / "ironflow")
    return _memory_store


@pytest.fixture
def ironflow_store(
    request: pytest.FixtureRequest, tmp_path: Path, ironflow_clock: FakeClock
) -> Iterator[Store]:
    """A fresh store for this test, its timers on ``ironflow_clock``; closed after it."""
    with _factory(request, tmp_path)(ironflow_clock) as store:
        yield store


@pytest.fixture
def ironflow_worker(ironflow_store: Store, ironflow_clock: FakeClock) -> Driver:
    """Runs agents to their end on ``ironflow_store``: ``ironflow_worker.run(agent, data)``.

    Serves the agent with the agents and projections of its module; sleeps, retry
    backoff and timeouts pass on ``ironflow_clock``; ``approve=`` answers approvals.
    """
    return Driver(ironflow_store, clock=ironflow_clock)


@pytest.fixture
def ironflow_crash_matrix(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Callable[..., CrashReport]:
    """:func:`~ironflow.testing.crash_matrix`, printing its report, each case on a fresh
    store of the test's kind."""
    factory = _factory(request, tmp_path / "crash-matrix")

    def run(agent: Callable[..., Any], data: Any = None, **options: Any) -> CrashReport:
        options.setdefault("store", factory)
        report = crash_matrix(agent, data, **options)
        print(report)
        return report

    return run

"""Fixtures for the store tests: each store-level test runs on every local backend."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ironflow.store import LmdbStore, PostgresStore
from ironflow.store._machine import StoreMachine
from ironflow.testing import FakeClock, MemoryStore


@pytest.fixture
def clock() -> FakeClock:
    """The store's timer clock, moved only when a test says so."""
    return FakeClock(start=1_000_000.0)


@pytest.fixture(params=["memory", "lmdb"])
def machine(
    request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock
) -> Iterator[StoreMachine]:
    """A MemoryStore, then an LmdbStore (fsync off): the same rules on each backend."""
    store: StoreMachine = (
        MemoryStore(clock=clock)
        if request.param == "memory"
        else LmdbStore(tmp_path / "data", sync=False, clock=clock)
    )
    yield store
    store.close()


@pytest.fixture
def pg(pg_url: str) -> Iterator[PostgresStore]:
    """A PostgresStore on the session's embedded server (``pg_url``), closed after."""
    store = PostgresStore(pg_url)
    yield store
    store.close()

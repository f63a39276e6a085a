"""IronflowSaver against LangGraph's own conformance suite, every capability.

The suite (``langgraph-checkpoint-conformance``) detects which optional capabilities a
saver implements (delete_for_runs, copy_thread, prune) and runs their tests too; this
test requires that all of them were detected and that every test of every one passed,
against the embedded store, against a server through RemoteStore, and on PostgreSQL.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

pytest.importorskip("langgraph.checkpoint.conformance")

from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.capabilities import ALL_CAPABILITIES

from ironflow.contrib.langgraph import IronflowSaver
from ironflow.server._background import BackgroundServer
from ironflow.store import LmdbStore, RemoteStore, Store


@pytest.fixture(params=["lmdb", "remote", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "postgres":
        from ironflow.store._postgres import PostgresStore, migrate

        url = request.getfixturevalue("pg_url")
        migrate(url)
        with PostgresStore(url) as pg:
            yield pg
        return
    local = LmdbStore(tmp_path / "data", sync=False)
    if request.param == "lmdb":
        yield local
    else:
        with BackgroundServer(local) as url:
            remote = RemoteStore(url, give_up_after=10.0)
            yield remote
            remote.close()
    local.close()


def test_every_capability_passes(store: Store) -> None:
    @checkpointer_test(name="IronflowSaver")
    async def saver() -> AsyncIterator[IronflowSaver]:
        yield IronflowSaver(store)

    report = asyncio.run(validate(saver))
    failures = {
        name: result.failures for name, result in report.results.items() if not result.passed
    }
    assert not failures, failures
    assert {name for name, r in report.results.items() if r.detected} == {
        c.value for c in ALL_CAPABILITIES
    }
    assert all(r.tests_passed > 0 for r in report.results.values())

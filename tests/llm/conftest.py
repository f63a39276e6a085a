"""Helpers for the llm tests: worker attempts that can crash, and a clean default provider."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from typing import Any

import pytest

from ironflow._agent._context import AgentContext
from ironflow._agent._dsl import AgentDefinition
from ironflow._worker._identity import this_worker
from ironflow.llm import set_default_provider
from ironflow.replay._engine import Execution, Outcome
from ironflow.store import AgentSpec, LmdbStore

# Re-exported for the llm tests, which import them from here.
from ironflow.testing import replay  # noqa: F401
from ironflow.testing import run_once as run_agent  # noqa: F401

_workers = itertools.count(1)


class Crash(BaseException):
    """A simulated kill -9: no handler, no engine code gets to react to it."""


def start(store: LmdbStore, fn: Any, data: Any = None) -> str:
    """Emit the agent's trigger; return the id of the one run it creates."""
    defn = AgentDefinition.must_from_fn(fn)
    store.register_agents([AgentSpec(defn.id, defn.triggers)])
    return store.emit(defn.triggers[0], data if data is not None else {}).run_ids[0]


def attempt(store: LmdbStore, fn: Any) -> Outcome | None:
    """One worker's attempt at the agent's run, from the store's record, as a new worker.

    Returns the settled outcome, or None when a Crash killed the attempt; the run is
    then left leased with an expired lease, so the next attempt takes it over.
    """
    defn = AgentDefinition.must_from_fn(fn)
    worker = this_worker(f"test-worker-{next(_workers)}")
    leased = store.lease_runs(worker, [defn.id], limit=1, ttl=0.0)
    assert len(leased) == 1, "no run to attempt"
    execution = Execution(store, worker, leased[0], is_async=defn.is_async)
    ctx = AgentContext(execution, defn)
    try:
        if defn.is_async:
            outcome = asyncio.run(execution.execute_async(lambda: defn.fn(ctx)))
        else:
            outcome = execution.execute(lambda: defn.fn(ctx))
    except Crash:
        return None
    execution.settle(outcome)
    return outcome


@pytest.fixture(autouse=True)
def _no_default_provider() -> Iterator[None]:
    """Each test starts with no default provider and leaves none behind."""
    previous = set_default_provider(None)
    yield
    set_default_provider(previous)

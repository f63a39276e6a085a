"""Running an agent to its end on a store, and replaying a finished run's record."""

from __future__ import annotations

from typing import Any

from ironflow import Worker
from ironflow._context import AgentContext
from ironflow._dsl import AgentDefinition
from ironflow.replay import Execution, Outcome
from ironflow.store import Lease, LeasedRun, LmdbStore, Run, this_worker


def run_agent(store: LmdbStore, fn: Any, data: Any, **worker_kw: Any) -> Run:
    """Emit the agent's first trigger and serve until no run is left."""
    defn = AgentDefinition.must_from_fn(fn)
    worker = Worker([fn], store=store, **worker_kw)
    result = store.emit(defn.triggers[0], data)
    worker.run(until_idle=True, ready_message=False)
    return store.get_run(result.run_ids[0])


def replay(store: LmdbStore, run_id: str, fn: Any) -> Outcome:
    """Re-execute a run's handler (``fn``'s code) against its record, as a resumed worker."""
    defn = AgentDefinition.must_from_fn(fn)
    run = store.get_run(run_id)
    me = this_worker()
    leased = LeasedRun(run, tuple(store.get_steps(run_id)), Lease(run_id, me, 0.0))
    execution = Execution(store, me, leased)
    ctx = AgentContext(execution, defn)
    return execution.execute(lambda: defn.fn(ctx))


def step_ids(store: LmdbStore, run_id: str) -> list[str]:
    return [s.id for s in store.get_steps(run_id)]

"""Running an agent to its end on a store, and replaying a finished run's record."""

from __future__ import annotations

from ironflow.store import LmdbStore
from ironflow.testing import replay
from ironflow.testing import run_once as run_agent

__all__ = ["replay", "run_agent", "step_ids"]


def step_ids(store: LmdbStore, run_id: str) -> list[str]:
    return [s.id for s in store.get_steps(run_id)]

"""The lease hints a store keeps per (worker, agents) caller stay bounded."""

from __future__ import annotations

import attrs
import pytest

from ironflow._worker._identity import this_worker
from ironflow.store import AgentSpec, _machine
from ironflow.testing import MemoryStore


def test_the_hints_of_many_callers_are_bounded_and_forgetting_them_changes_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Idle looks by more callers than are kept: the store remembers at most that many,
    and a caller whose hint was dropped still leases what is there."""
    monkeypatch.setattr(_machine, "_CALLERS_KEPT", 8)
    store = MemoryStore()
    store.register_agents([AgentSpec("a", ("go",))])
    me = this_worker()
    workers = [attrs.evolve(me, id=f"{me.id}-{i}") for i in range(20)]
    for w in workers:
        assert store.lease_runs(w, ["a"], limit=1, ttl=60) == []
    assert len(store._watches) <= 8
    store.emit("go", {})
    assert len(store.lease_runs(workers[0], ["a"], limit=1, ttl=60)) == 1
    for w in workers:
        store.emit("go", {})
        assert len(store.lease_runs(w, ["a"], limit=1, ttl=60)) == 1
    assert len(store._busy) <= 8

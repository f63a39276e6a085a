"""The fault-injection helpers themselves: what a crash before or after a call leaves behind."""

from __future__ import annotations

import pytest

from ironflow.store import AgentSpec, LmdbStore
from ironflow.store._liveness import process_alive
from ironflow.testing import CrashingStore, Fault, SimulatedCrash, StandInWorker
from tests.helpers import completed_step


@pytest.mark.parametrize(("when", "written"), [("before", False), ("after", True)])
def test_a_fault_fires_once_at_its_position_and_the_store_stays_dead(
    store: LmdbStore, when: str, written: bool
) -> None:
    """ "before" writes nothing, "after" writes it all; either way every later call dies."""
    store.register_agents([AgentSpec("a", ("go",))])
    run_id = store.emit("go", {}).run_ids[0]
    with StandInWorker() as process:
        (_leased,) = store.lease_runs(process.info, ["a"], limit=1, ttl=60)
        crashing = CrashingStore(store, Fault("record_step", when, position=1))
        crashing.record_step(process.info, completed_step(run_id, 0))  # another position: passes
        with pytest.raises(SimulatedCrash, match=f"{when} record_step at position 1"):
            crashing.record_step(process.info, completed_step(run_id, 1))
        assert crashing.crashed and crashing.fired == [Fault("record_step", when, 1)]
        assert [s.position for s in store.get_steps(run_id)] == ([0, 1] if written else [0])
        with pytest.raises(SimulatedCrash, match="already crashed"):
            crashing.get_run(run_id)  # a dead process reads nothing either
        assert store.get_run(run_id).status == "running"  # the inner store lives on


def test_stand_in_worker_is_alive_until_killed() -> None:
    """The stand-in's pid is a live worker on this host until kill(), then a dead one."""
    process = StandInWorker()
    try:
        assert process.alive and process_alive(process.info) is True
    finally:
        process.kill()
    assert not process.alive and process_alive(process.info) is False
    process.kill()  # idempotent

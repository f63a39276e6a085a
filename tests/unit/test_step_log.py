"""A lease hands over its step records undecoded; each is decoded when read (issue 13 target 6).

Whoever reads them (the engine, inspect, the worker's log line) must see exactly the
records the store holds; the replay must build no record object it does not need; and
a record that no longer decodes must stop the handler at its step, never reach it.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from ironflow import AgentContext, agent, tool
from ironflow._agent._dsl import AgentDefinition
from ironflow._worker._identity import this_worker
from ironflow.errors import StoreCorruptedError
from ironflow.replay._engine import Execution, Outcome
from ironflow.store import LeasedRun, LmdbStore, StepRecord
from ironflow.store._keys import step_key
from ironflow.store._steplog import StepLog


@tool
def add_one(i: int) -> dict[str, int]:
    return {"i": i + 1}


caught: list[BaseException] = []


@agent(id="step-log-steps", triggers=["step-log.go"])
def steps(ctx: AgentContext) -> int:
    total = 0
    for i in range(int(ctx.event.data["n"])):
        try:
            total += add_one(i=i)["i"]
        except Exception as exc:  # what a handler might do: it must never see a stop
            caught.append(exc)
    return total


STEPS = AgentDefinition.must_from_fn(steps)


def _recorded_run(store: LmdbStore, recorded: int, positions: list[int] | None = None) -> str:
    """A pending run of ``steps`` whose first ``recorded`` steps (or these positions)
    are recorded, written as a worker would, then handed back."""
    store.register_agents([STEPS.spec()])
    store.emit("step-log.go", {"n": recorded + 1})
    builder = this_worker("builder")
    [leased] = store.lease_runs(builder, [STEPS.id], limit=1, ttl=600)
    rid = leased.run.id
    for p in positions if positions is not None else range(recorded):
        store.record_step(
            builder,
            StepRecord(
                run_id=rid,
                position=p,
                id="tool.add_one" if p == 0 else f"tool.add_one#{p + 1}",
                status="completed",
                input={"i": p},
                output={"i": p + 1},
                started_at=1.0,
                ended_at=2.0,
            ),
        )
    store.release_run(builder, rid, attempt=1)
    return rid


def _lease(store: LmdbStore) -> LeasedRun:
    [leased] = store.lease_runs(this_worker("replayer"), [STEPS.id], limit=1, ttl=600)
    return leased


def _replay_to_next_step(store: LmdbStore, leased: LeasedRun) -> tuple[Execution, Outcome]:
    """Re-execute the handler until the first unrecorded step begins (a drain stops it there)."""
    stop_at_next = threading.Event()
    stop_at_next.set()
    execution = Execution(store, this_worker("replayer"), leased, stopping=stop_at_next)
    ctx = AgentContext(execution, STEPS)
    return execution, execution.execute(lambda: STEPS.fn(ctx))


def test_a_lease_and_a_replay_build_no_step_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The replay reads each stored record's fields once; no StepRecord is built (the
    lease used to build all of them, and leave them to the garbage collector)."""
    with LmdbStore(tmp_path / "d", sync=False) as store:
        _recorded_run(store, 50)
        built = []
        init = StepRecord.__init__

        def counting(self: StepRecord, *args: Any, **kwargs: Any) -> None:
            built.append(1)
            init(self, *args, **kwargs)

        monkeypatch.setattr(StepRecord, "__init__", counting)
        leased = _lease(store)
        assert not built, "the lease decoded its step records"
        execution, outcome = _replay_to_next_step(store, leased)
        assert outcome.status == "released"
        assert execution.steps_replayed == 50
        assert not built, "the replay built step records it did not need"
        monkeypatch.undo()
        assert execution.recorded[49].output == {"i": 50}  # read: decoded now


def test_the_leased_steps_are_the_stored_records_in_order(tmp_path: Path) -> None:
    with LmdbStore(tmp_path / "d", sync=False) as store:
        rid = _recorded_run(store, 5, positions=[0, 1, 3, 4])  # a gap, as under gather
        leased = _lease(store)
        stored = tuple(store.get_steps(rid))
        assert isinstance(leased.steps, StepLog)
        assert [s.position for s in stored] == [0, 1, 3, 4]
        assert leased.steps == stored and stored == leased.steps
        assert leased.steps == list(stored) and leased.steps != stored[:3]
        assert tuple(leased.steps) == stored
        assert leased.steps[1:3] == stored[1:3] and leased.steps[-1] == stored[-1]
        assert list(leased.steps.positions) == [0, 1, 3, 4]
        assert leased == attrs_evolve_steps(leased, stored)
        execution = Execution(store, this_worker("replayer"), leased)
        assert list(execution.recorded) == [0, 1, 3, 4]
        assert 2 not in execution.recorded and 3 in execution.recorded
        assert execution.first_unrecorded() == 2
        assert [r.position for r in execution.recorded.values()] == [0, 1, 3, 4]


def attrs_evolve_steps(leased: LeasedRun, steps: tuple[StepRecord, ...]) -> LeasedRun:
    """The same lease with its steps given as a tuple (as a remote store builds it)."""
    return LeasedRun(run=leased.run, steps=steps, lease=leased.lease, taken_from=leased.taken_from)


def test_a_damaged_step_record_stops_the_replay_at_its_step(tmp_path: Path) -> None:
    """The handler's ``except Exception`` never sees it: the run is left leased
    (abandoned, as when a step cannot be written), with the store's error."""
    with LmdbStore(tmp_path / "d", sync=False) as store:
        rid = _recorded_run(store, 3)
        store.backend.write(lambda txn: txn.put("steps", step_key(rid, 1), b'{"id": tru'))
        leased = _lease(store)
        caught.clear()
        execution, outcome = _replay_to_next_step(store, leased)
        assert outcome.error is not None
        assert outcome.status == "abandoned" and execution.steps_replayed == 1
        assert outcome.error.type == "StoreCorruptedError", outcome.error
        assert "cannot be read" in outcome.error.message
        assert not caught
        with pytest.raises(
            StoreCorruptedError, match="record of its step at position 1 cannot be read"
        ):
            list(leased.steps)


def test_a_record_at_another_position_than_its_key_is_refused(tmp_path: Path) -> None:
    with LmdbStore(tmp_path / "d", sync=False) as store:
        rid = _recorded_run(store, 3)
        moved = store.get_steps(rid)[2]
        with store.backend.read() as txn:
            value = txn.get("steps", step_key(rid, 2))
        assert value is not None
        store.backend.write(lambda txn: txn.put("steps", step_key(rid, 1), value))
        leased = _lease(store)
        assert leased.steps[0].position == 0
        with pytest.raises(StoreCorruptedError, match=r"says it is run \S+ step at position 2"):
            leased.steps[1]
        _, outcome = _replay_to_next_step(store, leased)
        assert outcome.status == "abandoned"
        assert moved.position == 2

"""The engine's read-only replay: recorded steps only, nothing run, nothing written."""

from __future__ import annotations

from typing import Any, NoReturn

from ironflow import AgentContext, agent, tool
from ironflow._agent._context import AgentContext as Context
from ironflow._agent._dsl import AgentDefinition
from ironflow._worker._identity import this_worker
from ironflow.errors import NonDeterminismError
from ironflow.replay._engine import Execution, Outcome
from ironflow.store import Lease, LeasedRun, LmdbStore, StepRecord, Store
from ironflow.testing import run_once

RAN: list[str] = []


@tool
def first(x: int) -> int:
    RAN.append("first")
    return x + 1


@tool
def second(x: int) -> int:
    RAN.append("second")
    return x * 10


@agent(id="two-steps", triggers=["two.steps"])
def two_steps(ctx: AgentContext) -> int:
    return second(x=first(x=ctx.event.data["x"]))


class Untouchable:
    """A store no read-only replay may reach."""

    def __getattr__(self, name: str) -> NoReturn:
        raise AssertionError(f"a read-only replay called store.{name}")


def replay(
    store: LmdbStore, run_id: str, fn: Any, seen: list[StepRecord]
) -> tuple[Execution, Outcome]:
    defn = AgentDefinition.must_from_fn(fn)
    me = this_worker()
    run = store.get_run(run_id)
    leased = LeasedRun(run, tuple(store.get_steps(run_id)), Lease(run_id, me, 0.0))
    untouchable: Store = Untouchable()  # type: ignore[assignment]
    execution = Execution(untouchable, me, leased, read_only=True, on_replayed=seen.append)
    return execution, execution.execute(lambda: defn.fn(Context(execution, defn)))


def test_a_fitting_replay_sees_each_record_and_runs_nothing(store: LmdbStore) -> None:
    run = run_once(store, two_steps, {"x": 1})
    assert run.output == 20
    RAN.clear()
    seen: list[StepRecord] = []
    _, outcome = replay(store, run.id, two_steps, seen)
    assert outcome.status == "completed" and outcome.output == 20
    assert [s.id for s in seen] == ["tool.first", "tool.second"] and RAN == []


def test_a_step_past_the_record_stops_before_it_runs(store: LmdbStore) -> None:
    """A third call the record lacks: outcome past_record, the call kept, not run."""
    run = run_once(store, two_steps, {"x": 1})

    @agent(id="two-steps", triggers=["two.steps"])
    def three_steps(ctx: AgentContext) -> int:
        return first(x=second(x=first(x=ctx.event.data["x"])))

    RAN.clear()
    execution, outcome = replay(store, run.id, three_steps, [])
    assert outcome.status == "past_record"
    past = execution.past_record
    assert past is not None and (past.position, past.step_id, past.input) == (
        2,
        "tool.first#2",
        {"x": 20},
    )
    assert RAN == []


def test_a_divergence_keeps_both_inputs(store: LmdbStore) -> None:
    run = run_once(store, two_steps, {"x": 1})

    @agent(id="two-steps", triggers=["two.steps"])
    def changed(ctx: AgentContext) -> int:
        return second(x=first(x=ctx.event.data["x"]) + 1)

    execution, _ = replay(store, run.id, changed, [])
    assert isinstance(execution.stopped, NonDeterminismError)
    assert execution.stopped.position == 1 and execution.stopped.inputs == ({"x": 2}, {"x": 3})


def test_an_early_return_is_kept_as_the_divergence(store: LmdbStore) -> None:
    run = run_once(store, two_steps, {"x": 1})

    @agent(id="two-steps", triggers=["two.steps"])
    def shorter(ctx: AgentContext) -> int:
        return first(x=ctx.event.data["x"])

    execution, outcome = replay(store, run.id, shorter, [])
    assert outcome.status == "failed"
    assert isinstance(execution.stopped, NonDeterminismError)
    assert execution.stopped.position == 1 and execution.stopped.inputs is None

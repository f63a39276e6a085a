"""Crash parallel branches and compensations at random boundaries; resume; check the record.

Each example is a fresh world (see ``tests/property/_world.py``): a run is attempted by
one worker incarnation per planned crash, then once more without one. After every
attempt no recorded step ran again, at most the steps in flight at the crash were
lost; at the end every branch and every undo is recorded exactly once, and the run
ends as the uncrashed run does.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from ironflow import AgentContext, agent, tool
from ironflow._agent._dsl import AgentDefinition
from ironflow.store._records import FINISHED
from tests.property._world import RUN_KINDS, Crash, World, check_attempt, world

BRANCHES = 5
LIMIT = 2


def _branch(i: int) -> Any:
    def run() -> int:
        world().executed()
        return i * i

    return run


@tool
def total(values: list[int]) -> int:
    world().executed()
    return sum(values)


@agent(id="crash-fan", triggers=["crash.fan"])
def crash_fan(ctx: AgentContext) -> Any:
    world().boundary()
    squares = ctx.parallel("sq", [_branch(i) for i in range(BRANCHES)], concurrency=LIMIT)
    world().boundary()
    return total(values=squares)


@agent(id="crash-fan-async", triggers=["crash.fan.async"])
async def crash_fan_async(ctx: AgentContext) -> Any:
    world().boundary()
    squares = await ctx.map("sq", list(range(BRANCHES)), lambda i: _branch(i)(), concurrency=LIMIT)
    world().boundary()
    return await total(values=squares)


_step_crash = st.builds(
    Crash,
    st.sampled_from(["during", "record_step:before", "record_step:after"]),
    st.integers(0, BRANCHES),
)
_crashes = st.lists(_step_crash | st.builds(Crash, st.sampled_from(RUN_KINDS)), max_size=3)


def _resume_through(w: World, fn: Any, run_id: str, crashes: list[Crash]) -> None:
    for crash in crashes:
        attempt = w.attempt(fn, run_id, crash)
        check_attempt(attempt, in_flight=LIMIT)
        if attempt.run.status in FINISHED:
            return
    attempt = w.attempt(fn, run_id)
    check_attempt(attempt, in_flight=LIMIT)


@given(_crashes, st.booleans())
def test_a_crash_reruns_only_the_unfinished_branches(crashes: list[Crash], is_async: bool) -> None:
    """Whatever the crashes, each branch is recorded once and finished ones never rerun."""
    fn = crash_fan_async if is_async else crash_fan
    with World.temporary() as w:
        defn = AgentDefinition.must_from_fn(fn)
        run_id = w.emit(defn.triggers[0], {}, [defn])
        _resume_through(w, fn, run_id, crashes)
        run, steps = w.snapshot(run_id)
        assert run.status == "completed", run.error
        assert run.output == sum(i * i for i in range(BRANCHES))
        prefix = "map.sq" if is_async else "parallel.sq"
        expected = [f"{prefix}[{i}]" for i in range(BRANCHES)] + ["tool.total"]
        assert [(s.position, s.id) for s in steps] == list(enumerate(expected))
        # A branch runs more than once only if a crash caught it in flight.
        for step_id, n in w.counts(run_id).items():
            assert n <= 1 + w.crashes[run_id], (step_id, n)


@tool
def reserve(item: str) -> str:
    world().executed()
    return f"{item}-r"


@tool
def release(item: str) -> None:
    world().executed()
    if item == "car-r":
        raise RuntimeError("cannot release the car")


@tool
def charge() -> None:
    world().executed()
    raise ValueError("declined")


@agent(id="crash-saga", triggers=["crash.saga"])
def crash_saga(ctx: AgentContext) -> Any:
    for item in ("flight", "car", "hotel"):
        world().boundary()
        got = reserve(item=item)
        n = ("flight", "car", "hotel").index(item) + 1
        ctx.compensate(
            "tool.reserve" if n == 1 else f"tool.reserve#{n}", lambda g=got: release(item=g)
        )
    world().boundary()
    charge()


SAGA_IDS = [
    "tool.reserve",
    "tool.reserve#2",
    "tool.reserve#3",
    "tool.charge",
    "compensate.tool.reserve#3",
    "compensate.tool.reserve#2",
    "compensate.tool.reserve",
]


@given(
    st.lists(
        st.builds(
            Crash,
            st.sampled_from(["before", "during", "record_step:before", "record_step:after"]),
            st.integers(0, len(SAGA_IDS) - 1),
        )
        | st.builds(Crash, st.sampled_from(RUN_KINDS)),
        max_size=3,
    )
)
def test_each_compensation_is_recorded_exactly_once(crashes: list[Crash]) -> None:
    """Crashes anywhere, compensations included: each undo recorded once, newest first."""
    with World.temporary() as w:
        defn = AgentDefinition.must_from_fn(crash_saga)
        run_id = w.emit("crash.saga", {}, [defn])
        _resume_through(w, crash_saga, run_id, crashes)
        run, steps = w.snapshot(run_id)
        assert run.status == "failed"
        assert run.error is not None and run.error.message == "declined"
        assert [s.id for s in steps] == SAGA_IDS
        assert [s.status for s in steps[4:]] == ["completed", "failed", "completed"]
        counts = w.counts(run_id)
        for step_id in SAGA_IDS[4:]:
            assert 1 <= counts[step_id] <= 1 + w.crashes[run_id], (step_id, counts)

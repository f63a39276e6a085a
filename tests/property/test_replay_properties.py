"""Replay under crashes: gathered async steps, changed code, and failing tools.

Each test drives real worker incarnations through ``_world.World``: a crash plan kills
them at chosen boundaries, the next one takes the run over at once (dead pid), and the
properties hold whatever the plan.
"""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from ironflow import AgentContext, NonDeterminismError, StepFailedError, agent, tool
from ironflow._agent._dsl import AgentDefinition
from tests.property._world import (
    Crash,
    World,
    check_attempt,
    check_recorded_once,
    world,
)


def _run_with_crashes(
    w: World, agent_fn: Any, data: Any, plan: list[Crash], *, in_flight: int = 1
) -> str:
    """Emit a run, attempt it once per planned crash, then once more without one."""
    defn = AgentDefinition.must_from_fn(agent_fn)
    run_id = w.emit(defn.triggers[0], data, [defn])
    for crash in [*plan, None]:
        attempt = w.attempt(agent_fn, run_id, crash)
        check_attempt(attempt, in_flight=in_flight)
        if attempt.run.status in ("completed", "failed"):
            break
    return run_id


# -- asyncio.gather: ids fixed by call order, whatever the completion order ---------------

_jitter = [0]


@tool
async def probe(i: int) -> dict[str, int]:
    world().executed()
    # Vary how long each gathered step takes from attempt to attempt, so they finish in
    # a different order each time: ids must not depend on it.
    for _ in range((i * 7 + _jitter[0]) % 4):
        await asyncio.sleep(0)
    return {"i": i, "square": i * i}


@tool
def weigh(i: int) -> int:
    world().executed()
    return i * 10


async def double(n: int) -> int:
    world().executed()
    return 2 * n


@agent(id="fanout", triggers=["fan.out"])
async def fanout(ctx: AgentContext) -> dict[str, Any]:
    first = await probe(i=0)
    wave = await asyncio.gather(probe(i=1), probe(i=2), weigh(i=3), ctx.step("double", double, 4))
    token = await ctx.uuid()
    tail = await asyncio.gather(probe(i=5), probe(i=6))
    return {"first": first, "wave": wave, "tail": tail, "uuid": str(token)}


FANOUT_IDS = [
    "tool.probe",
    "tool.probe#2",
    "tool.probe#3",
    "tool.weigh",
    "double",
    "uuid",
    "tool.probe#4",
    "tool.probe#5",
]
_GATHERED = 4  # the most steps in flight at once, so the most a crash can leave unrecorded

async_crashes = st.lists(
    st.tuples(
        st.sampled_from(["during", "record_step:before", "record_step:after", "finish_run:before"]),
        st.integers(min_value=0, max_value=len(FANOUT_IDS) - 1),
        st.integers(min_value=0, max_value=3),
    ),
    max_size=3,
)


@given(plan=async_crashes)
def test_gathered_async_steps_keep_their_ids_across_crashes(
    plan: list[tuple[str, int, int]],
) -> None:
    """asyncio.gather'd steps get call-order ids; crashes change neither ids nor output."""
    with World.temporary() as w:
        _jitter[0] = 0
        reference_id = _run_with_crashes(w, fanout, {}, [], in_flight=_GATHERED)
        reference, ref_steps = w.snapshot(reference_id)
        assert [s.id for s in ref_steps] == FANOUT_IDS

        defn = AgentDefinition.must_from_fn(fanout)
        run_id = w.emit("fan.out", {}, [defn])
        for kind, position, jitter in [*plan, ("no crash", 0, 1)]:
            _jitter[0] = jitter
            crash = None if kind == "no crash" else Crash(kind, position)
            attempt = w.attempt(fanout, run_id, crash)
            check_attempt(attempt, in_flight=_GATHERED)
            check_recorded_once(list(attempt.recorded_after), FANOUT_IDS, contiguous=False)
            if attempt.run.status == "completed":
                break
        run, steps = w.snapshot(run_id)
        assert run.status == "completed", run
        assert [s.id for s in steps] == FANOUT_IDS
        # Each gathered step kept its own input and output: none got a sibling's record.
        assert [s.input for s in steps] == [s.input for s in ref_steps]
        expected = dict(reference.output, uuid=steps[FANOUT_IDS.index("uuid")].output)
        assert run.output == expected


# -- code that changed while a run was in flight ------------------------------------------

_version = ["v1"]


@tool
def fetch(doc: str) -> str:
    world().executed()
    return f"<{doc}>"


@tool
def score(text: str) -> int:
    world().executed()
    return len(text)


def stamp(text: str) -> str:
    world().executed()
    return text.upper()


@agent(id="drift", triggers=["drift.go"])
def drift(ctx: AgentContext) -> Any:
    """v1 calls fetch, fetch, stamp, score; each other version differs at one position."""
    v = _version[0]
    a = fetch(doc="a")
    if v == "inserted":
        score(text="inserted")
    b = fetch(doc="B" if v == "new-input" else "b")
    c = ctx.step("stamp2" if v == "renamed" else "stamp", stamp, a + b)
    if v == "dropped":
        return c
    return [c, score(text=c)]


V1_IDS = ["tool.fetch", "tool.fetch#2", "stamp", "tool.score"]
#: Where each changed version first differs from v1's record, and what it calls there.
CHANGES = {
    "inserted": (1, "'tool.score'"),
    "new-input": (1, "'tool.fetch#2' with input {'doc': 'B'}"),
    "renamed": (2, "'stamp2'"),
    "dropped": (3, "no further step"),
}


@given(
    change=st.sampled_from(sorted(CHANGES)),
    recorded=st.integers(min_value=0, max_value=len(V1_IDS) - 1),
)
def test_changed_code_fails_the_run_naming_position_and_both_steps(
    change: str, recorded: int
) -> None:
    """Resuming with changed code raises NonDeterminismError at the first differing call."""
    with World.temporary() as w:
        _version[0] = "v1"
        defn = AgentDefinition.must_from_fn(drift)
        run_id = w.emit("drift.go", {}, [defn])
        # v1 records steps 0..recorded, then its worker dies.
        crashed = w.attempt(drift, run_id, Crash("record_step:after", recorded))
        assert crashed.crashed
        assert [s.id for s in crashed.recorded_after] == V1_IDS[: recorded + 1]

        _version[0] = change
        caught: list[BaseException] = []
        resumed = w.attempt(drift, run_id, on_handler_error=caught.append)
        check_attempt(resumed)
        position, attempted = CHANGES[change]
        run = resumed.run
        if position > recorded:
            # The change lies past the recorded history: the new code simply runs on.
            assert run.status == "completed", run
            assert not any(isinstance(e, NonDeterminismError) for e in caught)
            return
        assert run.status == "failed", run
        assert run.error is not None and run.error.type == "NonDeterminismError"
        if change != "dropped":
            (exc,) = caught
            assert isinstance(exc, NonDeterminismError)
            assert exc.position == position
            assert exc.recorded.startswith(repr(V1_IDS[position]))
            assert exc.attempted == attempted
        message = run.error.message
        assert f"position {position}" in message, message
        assert repr(V1_IDS[position]) in message and attempted in message, message
        # Nothing of the new code's history was executed or recorded at the divergence.
        assert [s.id for s in resumed.recorded_after] == V1_IDS[: recorded + 1]
        assert not resumed.executed, resumed.executed


# -- a failing tool: recorded failed, replayed as the same error, never re-run -------------

_caught: list[tuple[str, str]] = []


@tool
def brittle(n: int) -> int:
    world().executed()
    raise ValueError(f"bad input {n}")


@agent(id="brittle-flow", triggers=["brittle.go"])
def brittle_flow(ctx: AgentContext) -> Any:
    w = world()
    w.boundary()
    try:
        brittle(n=1)
    except StepFailedError as exc:
        _caught.append((exc.error_type, exc.message))
    w.boundary()
    page = fetch(doc="after")
    w.boundary()
    brittle(n=2)  # not caught: fails the run
    return page


BRITTLE_IDS = ["tool.brittle", "tool.fetch", "tool.brittle#2"]

brittle_crashes = st.lists(
    st.builds(
        Crash,
        st.sampled_from(["before", "during", "record_step:before", "record_step:after"]),
        st.integers(min_value=0, max_value=len(BRITTLE_IDS) - 1),
    )
    | st.builds(Crash, st.sampled_from(["finish_run:before", "finish_run:after"])),
    max_size=3,
)


@given(plan=brittle_crashes)
def test_failed_step_is_recorded_and_replays_the_same_error_without_rerunning(
    plan: list[Crash],
) -> None:
    """A raising tool is a failed step; after crashes it re-raises StepFailedError, not re-run."""
    with World.temporary() as w:
        _caught.clear()
        run_id = _run_with_crashes(w, brittle_flow, {}, plan)
        run, steps = w.snapshot(run_id)
        assert run.status == "failed", run
        check_recorded_once(steps, BRITTLE_IDS)
        assert [s.status for s in steps] == ["failed", "completed", "failed"]
        assert steps[0].error is not None and steps[0].error.type == "ValueError"
        assert run.error is not None
        assert (run.error.type, run.error.message, run.error.step_id) == (
            "ValueError",
            "bad input 2",
            "tool.brittle#2",
        )
        # Every attempt that got past step 0, live or replayed, saw the very same failure.
        assert _caught and set(_caught) == {("ValueError", "bad input 1")}
        crashes = w.crashes[run_id]
        counts = w.counts(run_id)
        assert 1 <= counts["tool.brittle"] <= 1 + crashes

"""Crash a durable Agents SDK run at every step boundary; it resumes as if never crashed.

For each of the sync (``run_sync``), async (``await run``) and streaming
(``run_streamed``) paths, and each step position of the uncrashed run (guardrails,
model calls, a handoff, tools), a worker incarnation dies during the step's body,
before its record is written, or after it is written but before the engine heard back;
a second incarnation finishes the run. Checked each time: every position is recorded
once with the uncrashed run's step id, no recorded model call, tool call, handoff or
guardrail runs again (only what was in flight), and the output equals the uncrashed
run's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from ironflow import AgentDefinition
from tests.contrib import _openai_agents_agents as agents
from tests.property._world import RUN_KINDS, Crash, World, check_attempt, check_recorded_once

PATHS: dict[str, tuple[Callable[..., Any], str]] = {
    "sync": (agents.weather_sync, "oa.sync"),
    "async": (agents.weather_async, "oa.async"),
    "stream": (agents.weather_stream, "oa.stream"),
}
EXPECTED = [
    "guardrail.polite",
    "llm.planner",
    "handoff.transfer_to_weather",
    "llm.planner#2",
    "tool.lookup",
    "tool.forecast",
    "llm.planner#3",
    "tool.convert",
    "llm.planner#4",
    "guardrail.fahrenheit_only",
]
CRASH_KINDS = ("during", "record_step:before", "record_step:after")
#: The input guardrail runs beside the first model call, and the two tools of one
#: response run together: at most two steps are in flight at once.
IN_FLIGHT = 2


@pytest.fixture
def world() -> Iterator[World]:
    with World.temporary() as w:
        yield w


def _reference(w: World, path: str) -> Any:
    fn, trigger = PATHS[path]
    run_id = w.emit(trigger, {"city": "oslo"}, [AgentDefinition.must_from_fn(fn)])
    run = w.run_to_completion(fn, run_id)
    assert run.status == "completed", run
    _, steps = w.snapshot(run_id)
    assert [s.id for s in sorted(steps, key=lambda s: s.position)] == EXPECTED
    return run.output


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("kind", CRASH_KINDS)
@pytest.mark.parametrize("position", range(len(EXPECTED)))
def test_crash_at_each_step_boundary_resumes_without_rerunning_recorded_steps(
    world: World, path: str, kind: str, position: int
) -> None:
    """A crash at any step's boundary costs at most the steps in flight; same output."""
    reference = _reference(world, path)
    fn, trigger = PATHS[path]
    run_id = world.emit(trigger, {"city": "oslo"}, [AgentDefinition.must_from_fn(fn)])
    first = world.attempt(fn, run_id, Crash(kind, position))
    assert first.crashed, f"{kind} at {position} did not fire"
    check_attempt(first, in_flight=IN_FLIGHT)
    second = world.attempt(fn, run_id)
    assert not second.crashed
    check_attempt(second, in_flight=IN_FLIGHT)
    run, steps = world.snapshot(run_id)
    assert run.status == "completed", run
    assert run.output == reference
    check_recorded_once(steps, EXPECTED, contiguous=False)
    assert len(steps) == len(EXPECTED)
    for step_id in EXPECTED:
        n = world.executions[(run_id, step_id)]
        assert 1 <= n <= 2, f"{step_id} executed {n} times after one crash"


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("kind", RUN_KINDS)
def test_crash_around_the_run_resumes_with_the_same_output(
    world: World, path: str, kind: str
) -> None:
    """A crash while leasing or finishing the run: the next worker replays everything."""
    reference = _reference(world, path)
    fn, trigger = PATHS[path]
    run_id = world.emit(trigger, {"city": "oslo"}, [AgentDefinition.must_from_fn(fn)])
    first = world.attempt(fn, run_id, Crash(kind))
    assert first.crashed
    if kind != "finish_run:after":
        check_attempt(world.attempt(fn, run_id), in_flight=IN_FLIGHT)
    run, _ = world.snapshot(run_id)
    assert run.status == "completed" and run.output == reference
    for step_id in EXPECTED:
        assert world.executions[(run_id, step_id)] == 1, step_id


@pytest.mark.parametrize("position", [3, 6, 8])
def test_a_replayed_model_call_streams_no_deltas_again(world: World, position: int) -> None:
    """Killed right after a model call is recorded, the resumed run streams each text
    delta once in all: the replayed calls yield only their recorded response."""
    agents.streamed.clear()
    _reference(world, "stream")
    uncrashed = list(agents.streamed)
    assert uncrashed, "the final answer streams as text deltas"
    agents.streamed.clear()
    fn, trigger = PATHS["stream"]
    run_id = world.emit(trigger, {"city": "oslo"}, [AgentDefinition.must_from_fn(fn)])
    assert world.attempt(fn, run_id, Crash("record_step:after", position)).crashed
    world.attempt(fn, run_id)
    assert agents.streamed == uncrashed

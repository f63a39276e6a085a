"""Crash a durable Pydantic AI run at every step boundary; it resumes as if never crashed.

For each of the sync (``run_sync``), async (``await run``) and streaming (an event
stream handler) paths, and each step position of the uncrashed run, a worker
incarnation dies during the step's body, before its record is written, or after it
is written but before the engine heard back; a second incarnation finishes the run.
Checked each time: every position is recorded once with the uncrashed run's step id,
no recorded model request or tool call runs again (only the one in flight, or the two
parallel tool calls in flight), and the output equals the uncrashed run's.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from ironflow import AgentDefinition
from tests.contrib import _pydantic_ai_agents as agents
from tests.property._world import RUN_KINDS, Crash, World, check_attempt, check_recorded_once

PATHS: dict[str, tuple[Callable[..., Any], str]] = {
    "sync": (agents.weather_sync, "pa.sync"),
    "async": (agents.weather_async, "pa.async"),
    "stream": (agents.weather_stream, "pa.stream"),
}
#: The uncrashed run's steps: three model requests, the two tools they ask for at
#: once, then one more.
EXPECTED = [
    "llm.planner",
    "tool.lookup",
    "tool.forecast",
    "llm.planner#2",
    "tool.convert",
    "llm.planner#3",
]
CRASH_KINDS = ("during", "record_step:before", "record_step:after")


@pytest.fixture
def world() -> Iterator[World]:
    with World.temporary() as w:
        yield w


def _reference(w: World, path: str, city: str) -> Any:
    fn, trigger = PATHS[path]
    run_id = w.emit(trigger, {"city": city}, [AgentDefinition.must_from_fn(fn)])
    run = w.run_to_completion(fn, run_id)
    assert run.status == "completed", run
    _, steps = w.snapshot(run_id)
    assert [s.id for s in sorted(steps, key=lambda s: s.position)] == EXPECTED
    return run.output


def _in_flight(path: str) -> int:
    # The two tools one model response asks for run concurrently, on every path.
    return 2


def _crash_and_resume(w: World, path: str, crash: Crash, reference: Any) -> None:
    fn, trigger = PATHS[path]
    run_id = w.emit(trigger, {"city": "oslo"}, [AgentDefinition.must_from_fn(fn)])
    first = w.attempt(fn, run_id, crash)
    assert first.crashed, f"{crash} did not fire"
    check_attempt(first, in_flight=_in_flight(path))
    second = w.attempt(fn, run_id)
    assert not second.crashed
    check_attempt(second, in_flight=_in_flight(path))
    run, steps = w.snapshot(run_id)
    assert run.status == "completed", run
    assert run.output == reference
    check_recorded_once(steps, EXPECTED, contiguous=False)
    assert len(steps) == len(EXPECTED)
    for step_id in EXPECTED:
        n = w.executions[(run_id, step_id)]
        assert 1 <= n <= 2, f"{step_id} executed {n} times after one crash"
    # Recorded by the first incarnation: never executed by the second.
    rerun = [s.id for s in first.recorded_after if second.executed[s.id]]
    assert not rerun, f"recorded steps executed again: {rerun}"


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("kind", CRASH_KINDS)
@pytest.mark.parametrize("position", range(len(EXPECTED)))
def test_crash_at_each_step_boundary_resumes_without_rerunning_recorded_steps(
    world: World, path: str, kind: str, position: int
) -> None:
    """A crash at any step's boundary costs at most the step in flight; same output."""
    reference = _reference(world, path, "oslo")
    _crash_and_resume(world, path, Crash(kind, position), reference)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("kind", RUN_KINDS)
def test_crash_around_the_run_resumes_with_the_same_output(
    world: World, path: str, kind: str
) -> None:
    """A crash while leasing or finishing the run: the next worker replays everything."""
    reference = _reference(world, path, "oslo")
    fn, trigger = PATHS[path]
    run_id = world.emit(trigger, {"city": "oslo"}, [AgentDefinition.must_from_fn(fn)])
    first = world.attempt(fn, run_id, Crash(kind))
    assert first.crashed
    if kind == "finish_run:after":
        # The run was finished before the "process" died: nothing is left to do.
        assert first.run.status == "completed"
    else:
        second = world.attempt(fn, run_id)
        check_attempt(second, in_flight=_in_flight(path))
    run, _steps = world.snapshot(run_id)
    assert run.status == "completed" and run.output == reference
    for step_id in EXPECTED:
        assert world.executions[(run_id, step_id)] == 1, step_id


@pytest.mark.parametrize("position", [3, 5])
def test_stream_events_of_recorded_steps_are_not_delivered_again(
    world: World, position: int
) -> None:
    """Killed after a model request is recorded, the resumed run delivers each
    event once in all: the replayed requests and tool calls deliver none."""
    agents.delivered.clear()
    reference = _reference(world, "stream", "oslo")
    uncrashed = _interesting(agents.delivered)
    agents.delivered.clear()
    _crash_and_resume(world, "stream", Crash("record_step:after", position), reference)
    assert _interesting(agents.delivered) == uncrashed


@pytest.mark.parametrize("kind", CRASH_KINDS)
@pytest.mark.parametrize("position", range(len(EXPECTED)))
def test_stream_events_are_delivered_at_least_once_and_repeat_only_in_the_crash_window(
    world: World, kind: str, position: int
) -> None:
    """Every event reaches the handler; one crash repeats an event at most once."""
    agents.delivered.clear()
    reference = _reference(world, "stream", "oslo")
    uncrashed = _interesting(agents.delivered)
    agents.delivered.clear()
    _crash_and_resume(world, "stream", Crash(kind, position), reference)
    seen = _interesting(agents.delivered)
    assert set(seen) == set(uncrashed)
    assert all(n <= 2 * uncrashed[key] for key, n in seen.items()), seen


def _interesting(events: list[tuple[str, str]]) -> Counter[tuple[str, str]]:
    """Tool call parts streamed by the model, and the tool call and result events."""
    kinds = ("PartStartEvent", "FunctionToolCallEvent", "FunctionToolResultEvent")
    return Counter((name, key) for name, key in events if name in kinds and key)

"""A crash at every point of a representative run, once each, then at random points.

The agent takes each kind of step there is to crash around: a tool, a built-in step
(``ctx.random()``), a memory append and the wait for its projection, a sleep, and a last
tool. Every incarnation heartbeats at each boundary and serves the agent's projection,
so the boundaries that random crash plans used to miss can be aimed at: the memory
append (``append_to_stream``), the heartbeat, the drain's release and the projection
write, besides the step records, the suspension, the lease and the finish.

:func:`points` lists where a crash can still fire given what the store holds, and the
tests only aim there, so every planned crash fires (and a test asserts it did):

- ``test_a_crash_at_each_point`` crashes once at each (kind, position), deterministically;
- ``test_random_crash_plans`` draws plans of one to four crashes among the points left.

Afterwards the run must have completed as an uncrashed run does: each position recorded
once, each tool executed at most once more per crash, one stream event and a projection
count of one for the run, and the store's indexes consistent.
"""

from __future__ import annotations

from typing import Any

import attrs
import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from ironflow import AgentContext, Event, Memory, agent, projection, tool
from ironflow._agent._dsl import AgentDefinition
from ironflow.store import StepRecord
from ironflow.testing import FakeClock
from tests.property._world import (
    BOUNDARY_KINDS,
    Attempt,
    Crash,
    World,
    check_attempt,
    check_recorded_once,
    world,
)

STREAM = "every-notes"
PROJECTION = "every-noted"
EVERY_IDS = ["tool.fetch", "random", "memory.append", "memory.append.wait", "sleep", "tool.score"]
#: The boundary (call index in the agent's code) before each step position.
BOUNDARY = {0: 0, 1: 1, 2: 2, 3: 2, 4: 3, 5: 4}
SLEEP = EVERY_IDS.index("sleep")
#: Positions whose body is ours (World.executed), and those recorded by record_step
#: (a sleep's record is written by the store when its timer fires).
COUNTED = (0, 5)
RECORDED_BY_ENGINE = (0, 1, 2, 3, 5)
FINISHED = ("completed", "failed", "cancelled")


@attrs.frozen
class Page:
    text: str
    words: int


@tool
def fetch(doc: str) -> Page:
    world().executed()
    return Page(text=f"<{doc}>", words=len(doc.split()))


@tool
def score(text: str) -> int:
    world().executed()
    return sum(map(ord, text)) % 97


@agent(id="every", triggers=["every.go"], memory=Memory(stream=STREAM, projection=PROJECTION))
def every(ctx: AgentContext) -> dict[str, Any]:
    w = world()
    doc = ctx.event.data["doc"]
    w.boundary()
    page = fetch(doc=doc)
    w.boundary()
    r = ctx.random()
    w.boundary()
    ctx.memory.append("every.noted", {"run": ctx.run_id, "words": page.words})
    w.boundary()
    ctx.sleep("1h")
    w.boundary()
    total = score(text=page.text)
    return {"page": page.text, "random": r, "score": total}


@projection(name=PROJECTION, events=["every.noted"], partition_by=lambda e: str(e.data["run"]))
def noted(state: dict[str, Any], event: Event) -> dict[str, Any]:
    # Partitioned by run: each run's count must end at exactly 1.
    return {"count": int(state.get("count", 0)) + 1, "words": event.data["words"]}


def points(w: World, run_id: str) -> list[Crash]:
    """Every crash that the next incarnation of the run would meet, in a fixed order.

    An incarnation stops at the sleep until the sleep is over, so the points after it
    are in reach only then. Boundary kinds fire in replayed code too; the others
    only at a step not yet recorded (a projection write only while the projection has
    events left to fold).
    """
    run, steps = w.snapshot(run_id)
    if run.status in FINISHED:
        return []
    recorded = {s.position for s in steps}
    if run.status == "sleeping":
        # attempt() lets the hour pass first: the next lease records the sleep.
        recorded.add(SLEEP)
    slept = SLEEP in recorded
    last_boundary = BOUNDARY[SLEEP] + (1 if slept else 0)
    reach = [p for p in range(len(EVERY_IDS)) if p not in recorded and (p <= SLEEP or slept)]
    out = [Crash(k, b) for b in range(last_boundary + 1) for k in BOUNDARY_KINDS]
    if not [p for p in range(len(EVERY_IDS)) if p not in recorded]:
        # Only the finish is left: a drain has no step left to stop at.
        out = [c for c in out if not c.kind.startswith("release_run")]
    out += [Crash("during", p) for p in COUNTED if p in reach]
    out += [Crash(f"record_step:{t}", p) for p in RECORDED_BY_ENGINE if p in reach for t in WHEN]
    if 2 in reach:
        out += [Crash(f"append_to_stream:{t}", 2) for t in WHEN]
    if 3 in reach and (2 in reach or _projection_behind(w)):
        out += [Crash(f"write_projection:{t}", 3) for t in WHEN]
    if SLEEP in reach:
        out += [Crash(f"suspend_run:{t}", SLEEP) for t in WHEN]
    out.append(Crash("lease_runs:after"))
    if slept:
        out += [Crash(f"finish_run:{t}") for t in WHEN]
    return out


WHEN = ("before", "after")


def _projection_behind(w: World) -> bool:
    with w.store() as s:
        position = s.projection_status(PROJECTION).position
        return bool(s.events(after_seq=position, limit=1))


def emit(w: World, doc: str) -> str:
    return w.emit("every.go", {"doc": doc}, [AgentDefinition.must_from_fn(every)], [noted])


def attempt(w: World, run_id: str, crash: Crash | None) -> Attempt:
    """One incarnation; a sleeping run's hour passes first, as it would for a worker."""
    run, _ = w.snapshot(run_id)
    if run.status == "sleeping":
        assert w.clock is not None
        w.clock.advance("1h")
    done = w.attempt(every, run_id, crash, projections=[noted])
    check_attempt(done)
    return done


def finish(w: World, run_id: str) -> None:
    """Incarnations without crashes until the run ends (a few: it sleeps once)."""
    for _ in range(6):
        if w.snapshot(run_id)[0].status in FINISHED:
            return
        attempt(w, run_id, None)
    raise AssertionError(f"run {run_id} did not finish: {w.snapshot(run_id)[0]}")


def check_outcome(w: World, run_id: str, doc: str) -> None:
    """Completed as an uncrashed run: its output, records, side effects and memory."""
    run, steps = w.snapshot(run_id)
    assert run.status == "completed", run
    check_recorded_once(steps, EVERY_IDS)
    assert [s.id for s in steps] == EVERY_IDS
    random = _recorded(steps, "random")
    page = f"<{doc}>"
    assert run.output == {"page": page, "random": random, "score": sum(map(ord, page)) % 97}
    crashes = w.crashes[run_id]
    counts = w.counts(run_id)
    for step_id in ("tool.fetch", "tool.score"):
        assert 1 <= counts[step_id] <= 1 + crashes, f"{step_id} ran {counts[step_id]} times"
    with w.store() as s:
        mine = [e for e in _stream(s) if e.data["run"] == run_id]
        assert len(mine) == 1, f"{len(mine)} stream events for the run"
        state = s.get_projection(PROJECTION, partitions=[run_id]).state
        assert state == {run_id: {"count": 1, "words": len(doc.split())}}, state
        s.check_valid()


def _recorded(steps: list[StepRecord], step_id: str) -> Any:
    [step] = [s for s in steps if s.id == step_id]
    return step.output


def _stream(s: Any) -> list[Event]:
    events: list[Event] = s.read_stream(STREAM, from_version=0, limit=10_000)
    return events


def _fresh_points() -> list[Crash]:
    """Every point of a run from its first incarnation to its end, each once."""
    everything = [
        Crash(k, b) for b in range(BOUNDARY[len(EVERY_IDS) - 1] + 1) for k in BOUNDARY_KINDS
    ]
    everything += [Crash("during", p) for p in COUNTED]
    everything += [Crash(f"record_step:{t}", p) for p in RECORDED_BY_ENGINE for t in WHEN]
    everything += [Crash(f"append_to_stream:{t}", 2) for t in WHEN]
    everything += [Crash(f"write_projection:{t}", 3) for t in WHEN]
    everything += [Crash(f"suspend_run:{t}", SLEEP) for t in WHEN]
    everything += [Crash("lease_runs:after"), *(Crash(f"finish_run:{t}") for t in WHEN)]
    return everything


EVERY_POINT = _fresh_points()


@pytest.mark.parametrize("crash", EVERY_POINT, ids=lambda c: f"{c.kind}@{c.position}")
def test_a_crash_at_each_point(crash: Crash) -> None:
    """Crash once at this point (in the first incarnation that reaches it); the run ends
    as if it never crashed."""
    with World.temporary(clock=FakeClock(), heartbeats=True) as w:
        run_id = emit(w, "a crash point")
        for _ in range(4):
            if crash in points(w, run_id):
                break
            attempt(w, run_id, None)  # not in reach yet: it lies past the sleep
        else:
            raise AssertionError(f"{crash} never came in reach")
        crashed = attempt(w, run_id, crash)
        assert crashed.crashed, f"the crash {crash} was aimed where it could fire, but did not"
        finish(w, run_id)
        check_outcome(w, run_id, "a crash point")


def test_every_point_is_listed() -> None:
    """The points of a fresh run, met incarnation by incarnation, are exactly EVERY_POINT."""
    with World.temporary(clock=FakeClock(), heartbeats=True) as w:
        run_id = emit(w, "listing")
        seen: list[Crash] = []
        for _ in range(6):
            seen += [c for c in points(w, run_id) if c not in seen]
            if w.snapshot(run_id)[0].status in FINISHED:
                break
            attempt(w, run_id, None)
        assert sorted(seen, key=repr) == sorted(EVERY_POINT, key=repr)


docs = st.text(alphabet="abc xyz", min_size=1, max_size=12)


def pick(options: list[Crash], choice: int) -> Crash:
    """The kind first, then its position: each kind in reach is as likely as another."""
    kinds = list(dict.fromkeys(c.kind for c in options))
    kind = kinds[choice % len(kinds)]
    at = [c for c in options if c.kind == kind]
    return at[(choice // len(kinds)) % len(at)]


@given(doc=docs, plan=st.lists(st.integers(min_value=0, max_value=10_000), min_size=1, max_size=4))
def test_random_crash_plans(doc: str, plan: list[int]) -> None:
    """One to four crashes, each at a point still in reach: each fires; the run ends unchanged."""
    with World.temporary(clock=FakeClock(), heartbeats=True) as w:
        run_id = emit(w, doc)
        for choice in plan:
            options = points(w, run_id)
            if not options:
                break  # a crash after the finish's write ended the run
            crash = pick(options, choice)
            event(f"crash kind {crash.kind}")
            assert attempt(w, run_id, crash).crashed, f"{crash} was in reach but did not fire"
        event(f"crashes: {w.crashes[run_id]}")
        finish(w, run_id)
        check_outcome(w, run_id, doc)

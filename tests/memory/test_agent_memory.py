"""ctx.memory in real runs: recorded steps, sync and async agents, crashes around the append."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from ironflow import AgentContext, Event, Memory, Worker, agent, projection
from ironflow._agent._context import AgentContext as _Ctx
from ironflow._agent._dsl import AgentDefinition
from ironflow._agent._memory import AppendResult
from ironflow._worker._identity import this_worker
from ironflow.replay._engine import Execution
from ironflow.store import Lease, LeasedRun, LmdbStore, Run, StepRecord
from tests.memory._helpers import Crash, dead_worker

MEMORY = Memory(stream="notes", projection="notes-memory")


@projection(name="notes-memory", events=["note.added"], initial_state={"notes": []})
def notes_memory(state: dict[str, Any], event: Event) -> dict[str, Any]:
    return {"notes": [*state["notes"], event.data["text"]]}


@agent(id="note-taker", triggers=["note.requested"], memory=MEMORY)
def note_taker(ctx: AgentContext) -> dict[str, Any]:
    added = ctx.memory.append("note.added", {"text": ctx.event.data["text"]})
    assert isinstance(added, AppendResult)
    return {"version": added.version, "seq": added.seq, "notes": ctx.memory.state()["notes"]}


@agent(id="async-note-taker", triggers=["note.async"], memory=MEMORY)
async def async_note_taker(ctx: AgentContext) -> dict[str, Any]:
    first, second = await asyncio.gather(
        ctx.memory.append("note.added", {"text": "a"}),
        ctx.memory.append("note.added", {"text": "b"}),
    )
    state = await ctx.memory.state()
    events = await ctx.memory.read()
    assert all(isinstance(e, Event) for e in events)
    return {
        "versions": sorted([first.version, second.version]),
        "notes": sorted(state["notes"]),
        "read": sorted(e.data["text"] for e in events),
    }


@agent(id="forgetful", triggers=["forget"])
def forgetful(ctx: AgentContext) -> None:
    ctx.memory.append("note.added", {"text": "x"})


@agent(id="impatient", triggers=["impatient"], memory=MEMORY)
def impatient(ctx: AgentContext) -> None:
    ctx.memory.append("note.added", {"text": "x"}, timeout=0.1)


@projection(
    name="per-doc-notes",
    events=["note.added"],
    initial_state={"count": 0},
    partition_by=lambda e: e.data["doc"],
)
def per_doc_notes(state: dict[str, Any], event: Event) -> dict[str, Any]:
    return {"count": state["count"] + 1}


@agent(
    id="per-doc",
    triggers=["per-doc"],
    memory=Memory(stream="per-doc-notes", projection="per-doc-notes"),
)
def per_doc(ctx: AgentContext) -> Any:
    ctx.memory.append("note.added", {"doc": "d1"})
    ctx.memory.append("note.added", {"doc": "d1"})
    return [ctx.memory.state("d1"), ctx.memory.state("d2"), ctx.memory.state()]


@agent(id="stream-only", triggers=["stream-only"], memory=Memory(stream="log-only"))
def stream_only(ctx: AgentContext) -> Any:
    added = ctx.memory.append("note.added", {"text": "x"})
    return [added.version, [e.data for e in ctx.memory.read()]]


def run_once(store: Any, fn: Any, event: str, data: Any, **kw: Any) -> Run:
    worker = Worker([fn], store=store, **kw)
    emitted = store.emit(event, data)
    worker.run(until_idle=True, ready_message=False)
    return store.get_run(emitted.run_ids[0])


def step_ids(store: LmdbStore, run_id: str) -> list[tuple[str, int]]:
    return [(s.id, s.attempt) for s in store.get_steps(run_id)]


def test_sync_agent_appends_waits_and_reads(store: LmdbStore) -> None:
    """memory.append, memory.append.wait and memory.state are recorded steps, in that order."""
    run = run_once(
        store, note_taker, "note.requested", {"text": "hello"}, projections=[notes_memory]
    )
    assert run.status == "completed", run.error
    assert run.output == {"version": 1, "seq": 2, "notes": ["hello"]}
    steps = store.get_steps(run.id)
    assert [s.id for s in steps] == ["memory.append", "memory.append.wait", "memory.state"]
    assert steps[0].input == {"stream": "notes", "name": "note.added", "data": {"text": "hello"}}
    assert steps[0].output == {"stream": "notes", "version": 1, "seq": 2}
    assert steps[1].output == {"position": 2}
    [event] = store.read_stream("notes")
    assert (event.name, event.data, event.seq) == ("note.added", {"text": "hello"}, 2)
    assert store.get_projection("notes-memory").state == {"notes": ["hello"]}


def test_async_agent_gathers_appends_deterministically(store: LmdbStore) -> None:
    """In an async agent the steps are awaitables; gathered appends replay at the same positions."""
    run = run_once(store, async_note_taker, "note.async", {}, projections=[notes_memory])
    assert run.status == "completed", run.error
    assert run.output == {"versions": [1, 2], "notes": ["a", "b"], "read": ["a", "b"]}
    assert [s.id for s in store.get_steps(run.id)] == [
        "memory.append",
        "memory.append.wait",
        "memory.append#2",
        "memory.append.wait#2",
        "memory.state",
        "memory.read",
    ]
    # Re-executing the handler against its record makes the same calls and appends nothing.
    defn = AgentDefinition.must_from_fn(async_note_taker)
    me = this_worker()
    leased = LeasedRun(run, tuple(store.get_steps(run.id)), Lease(run.id, me, 0.0))
    execution = Execution(store, me, leased, is_async=True)
    ctx = _Ctx(execution, defn)
    outcome = asyncio.run(execution.execute_async(lambda: defn.fn(ctx)))
    assert (outcome.status, outcome.output) == ("completed", run.output)
    assert execution.steps_executed == 0
    assert len(store.read_stream("notes")) == 2


def test_partitioned_state_reads_one_key(store: LmdbStore) -> None:
    """ctx.memory.state(key) reads one partition (its initial state if it has none yet)."""
    run = run_once(store, per_doc, "per-doc", {}, projections=[per_doc_notes])
    assert run.status == "completed", run.error
    assert run.output == [{"count": 2}, {"count": 0}, {"d1": {"count": 2}}]
    ids = [s.id for s in store.get_steps(run.id)]
    assert ids[-3:] == ["memory.state", "memory.state#2", "memory.state#3"]


def test_memory_without_a_projection_only_appends(store: LmdbStore) -> None:
    """Memory(stream=...) alone: append is the one step memory.append, read reads the stream."""
    run = run_once(store, stream_only, "stream-only", {})
    assert run.status == "completed", run.error
    assert run.output == [1, [{"text": "x"}]]
    assert [s.id for s in store.get_steps(run.id)] == ["memory.append", "memory.read"]


def test_agent_without_memory_gets_a_clear_error(store: LmdbStore) -> None:
    """ctx.memory on an agent declared without memory fails the run saying how to declare it."""
    run = run_once(store, forgetful, "forget", {})
    assert run.status == "failed"
    assert run.error is not None
    assert "agent 'forgetful' has no memory" in run.error.message
    assert "memory=Memory(stream=..., projection=...)" in run.error.message


def test_wait_times_out_when_no_worker_serves_the_projection(store: LmdbStore) -> None:
    """memory.append.wait fails with ProjectionTimeoutError when nothing applies the event."""
    run = run_once(store, impatient, "impatient", {})
    assert run.status == "failed"
    assert run.error is not None and run.error.step_id == "memory.append.wait"
    assert run.error.type == "ProjectionTimeoutError"
    assert "Is a worker serving it running?" in run.error.message
    assert [s.status for s in store.get_steps(run.id)] == ["completed", "failed"]
    assert len(store.read_stream("notes")) == 1


class CrashAfter:
    """Passes calls through to the store; dies right after ``method`` returns once."""

    def __init__(self, inner: LmdbStore, method: str, step_id: str | None = None) -> None:
        self.inner = inner
        self.method = method
        self.step_id = step_id
        self.fired = False

    def record_step(self, worker: Any, step: StepRecord) -> Any:
        ack = self.inner.record_step(worker, step)
        if self.method == "record_step" and step.id == self.step_id:
            self._die()
        return ack

    def append_to_stream(self, *args: Any, **kwargs: Any) -> Any:
        event = self.inner.append_to_stream(*args, **kwargs)
        if self.method == "append_to_stream":
            self._die()
        return event

    def _die(self) -> None:
        if not self.fired:
            self.fired = True
            raise Crash(f"killed right after {self.method}")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.mark.parametrize(
    ("method", "step_id", "expected_steps"),
    [
        # Killed between memory.append and memory.append.wait: the append replays.
        (
            "record_step",
            "memory.append",
            [("memory.append", 1), ("memory.append.wait", 2), ("memory.state", 2)],
        ),
        # Killed after the stream append, before its step was recorded: the step runs
        # again and its idempotency key finds the first append.
        (
            "append_to_stream",
            None,
            [("memory.append", 2), ("memory.append.wait", 2), ("memory.state", 2)],
        ),
    ],
)
def test_a_run_killed_around_the_append_resumes_with_one_event(
    store: LmdbStore, method: str, step_id: str | None, expected_steps: list[tuple[str, int]]
) -> None:
    """However the worker dies around memory.append, the resumed run leaves exactly one event."""
    crashing = CrashAfter(store, method, step_id)
    doomed = Worker([note_taker], store=crashing)  # type: ignore[arg-type]
    doomed.info = dead_worker("doomed")  # its leases look like a killed process's
    emitted = store.emit("note.requested", {"text": "once"})
    doomed.run(until_idle=True, ready_message=False)
    assert crashing.fired
    assert store.get_run(emitted.run_ids[0]).status == "running"
    assert len(store.read_stream("notes")) == 1

    Worker([note_taker], store=store, projections=[notes_memory]).run(
        until_idle=True, ready_message=False
    )
    run = store.get_run(emitted.run_ids[0])
    assert run.status == "completed", run.error
    assert run.attempt == 2
    assert run.output == {"version": 1, "seq": 2, "notes": ["once"]}
    assert step_ids(store, run.id) == expected_steps
    assert [e.data for e in store.read_stream("notes")] == [{"text": "once"}]
    store.check_valid()

"""Entity streams and projections through the server behave as on the LmdbStore."""

from __future__ import annotations

import threading
import time
from typing import Any

import attrs
import pytest

from ironflow import AgentContext, Event, Memory, Worker, agent, projection
from ironflow._pure._trace import TraceContext
from ironflow.errors import (
    ConcurrencyError,
    InvalidInputError,
    LeaseLostError,
    NotSerializableError,
    ProjectionNotFoundError,
)
from ironflow.server import BackgroundServer
from ironflow.server._views import projection_json
from ironflow.store import AgentSpec, LmdbStore, RemoteStore, Store, WorkerInfo
from ironflow.store._records import ProjectionSpec, ProjectionWrite
from tests.server.conftest import get_json

RUNNER = WorkerInfo(id="p1", host="elsewhere", pid=4242)
OTHER = WorkerInfo(id="p2", host="elsewhere", pid=4343)
FLAT = ProjectionSpec(name="flat", events=("note.*",), initial_state={"n": 0})
SPLIT = ProjectionSpec(name="split", events=("note.*",), partitioned=True, initial_state=0)


def test_streams(any_store: Store) -> None:
    """Appends get versions, a stale expected_version conflicts, a repeated key appends once."""
    any_store.register_agents([AgentSpec(id="a", triggers=("note.added",))])
    first = any_store.append_to_stream("s1", "note.added", {"t": 1}, expected_version=0)
    assert (first.stream, first.version, first.seq) == ("s1", 1, 1)
    assert any_store.list_runs()[0].event == first  # a trigger starts a run, as emit does
    second = any_store.append_to_stream("s1", "note.other", None, idempotency_key="k")
    assert second.version == 2
    assert any_store.append_to_stream("s1", "note.other", None, idempotency_key="k") == second
    with pytest.raises(ConcurrencyError) as conflict:
        any_store.append_to_stream("s1", "note.added", {}, expected_version=1)
    assert (conflict.value.expected, conflict.value.actual) == (1, 2)
    assert "version 2" in str(conflict.value)
    assert any_store.read_stream("s1") == [first, second]
    assert any_store.read_stream("s1", from_version=2) == [second]
    assert any_store.read_stream("s1", limit=1) == [first]
    assert any_store.read_stream("nothing-yet") == []
    assert any_store.events() == [first, second]
    assert any_store.events(after_seq=1, limit=5) == [second]
    for bad in ("", "x" * 300, "a\x00b"):
        with pytest.raises(InvalidInputError):
            any_store.append_to_stream(bad, "note.added", {})
    with pytest.raises(InvalidInputError):
        any_store.append_to_stream("s1", "", {})
    with pytest.raises(NotSerializableError):
        any_store.append_to_stream("s1", "note.added", {"x": {1, 2}})


def test_an_append_keeps_its_trace_context(any_store: Store) -> None:
    """The appender's trace context is kept on the event and the run it starts, as emit's."""
    any_store.register_agents([AgentSpec(id="a", triggers=("note.added",))])
    trace = TraceContext("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "k=v")
    event = any_store.append_to_stream("s1", "note.added", {}, trace=trace)
    assert event.trace == trace
    assert any_store.list_runs()[0].event.trace == trace
    assert any_store.append_to_stream("s1", "note.added", {}).trace is None


def test_projections(any_store: Store) -> None:
    """Register, lease, write, read, rebuild and wait: the same outcomes on both stores."""
    any_store.register_projections([FLAT, SPLIT])
    assert [s.name for s in any_store.list_projections()] == ["flat", "split"]
    assert any_store.get_projection("flat").state == {"n": 0}
    assert any_store.lease_projection(RUNNER, "flat", ttl=30)
    assert not any_store.lease_projection(OTHER, "flat", ttl=30)
    status = any_store.projection_status("flat")
    assert status.runner == RUNNER and status.position == 0

    any_store.append_to_stream("s", "note.added", {})
    write = ProjectionWrite(name="flat", from_position=0, to_position=1, partitions={"": {"n": 1}})
    written = any_store.write_projection(RUNNER, write)
    assert written.position == 1 and written.generation == 1
    with pytest.raises(ConcurrencyError):
        any_store.write_projection(RUNNER, write)  # it is at 1 now, not 0
    with pytest.raises(LeaseLostError):
        any_store.write_projection(OTHER, attrs.evolve(write, from_position=1, to_position=1))
    state = any_store.get_projection("flat")
    assert (state.state, state.position) == ({"n": 1}, 1)

    assert any_store.lease_projection(RUNNER, "split", ttl=30)
    parts = {"a": 1, "b": 2, "": 3}
    any_store.write_projection(
        RUNNER, ProjectionWrite(name="split", from_position=0, to_position=1, partitions=parts)
    )
    assert any_store.get_projection("split").state == parts
    assert any_store.get_projection("split", partitions=["a", "zz", "a\x00"]).state == {"a": 1}

    assert any_store.wait_for_projection("flat", 1, timeout=5) == 1
    assert any_store.wait_for_projection("flat", 2, timeout=0.1) == 1
    assert any_store.wait_for_projection("never-registered", 1, timeout=0) == 0
    ticket = any_store.request_projection_rebuild("flat")
    assert any_store.projection_status("flat").rebuild_requested == ticket
    any_store.release_projection(RUNNER, "flat")
    assert any_store.lease_projection(OTHER, "flat", ttl=30)

    for missing in ("nope", "", "x" * 300):
        with pytest.raises(ProjectionNotFoundError, match="no projection named"):
            any_store.projection_status(missing)
        with pytest.raises(ProjectionNotFoundError):
            any_store.get_projection(missing)
    with pytest.raises(NotSerializableError):
        any_store.register_projections([attrs.evolve(FLAT, name="bad", initial_state=object())])


class _Watched:
    """A store that says when the server found a projection short of a wait's position:
    from then on that wait is parked at the server, waiting to be woken."""

    def __init__(self, inner: LmdbStore) -> None:
        self._inner = inner
        self.short = threading.Event()

    def wait_for_projection(self, name: str, position: int, *, timeout: float) -> int:
        reached = self._inner.wait_for_projection(name, position, timeout=timeout)
        if reached < position:
            self.short.set()
        return reached

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def test_wait_for_projection_wakes_on_a_write(backend: LmdbStore) -> None:
    """A wait parked at the server returns when a write through it advances the projection."""
    watched = _Watched(backend)
    with BackgroundServer(watched) as url, RemoteStore(url) as remote:  # type: ignore[arg-type]
        remote.register_projections([FLAT])
        remote.lease_projection(RUNNER, "flat", ttl=30)
        remote.append_to_stream("s", "note.added", {})
        reached: list[int] = []
        waiter = threading.Thread(
            target=lambda: reached.append(remote.wait_for_projection("flat", 1, timeout=30))
        )
        waiter.start()
        try:
            # The server found the projection short and parked the wait: not woken yet.
            assert watched.short.wait(30)
            time.sleep(0.1)
            assert waiter.is_alive() and reached == [], "the wait returned before any write"
            write = ProjectionWrite(name="flat", from_position=0, to_position=1)
            remote.write_projection(RUNNER, write)
            waiter.join(timeout=20)  # well within its 30 s: the write woke it
            assert not waiter.is_alive()
            assert reached == [1]
        finally:
            # Never leave it parked at a server about to stop.
            waiter.join(timeout=60)


def test_wait_for_work_wakes_on_an_event(remote: RemoteStore) -> None:
    """A projection runner's wait_for_work returns when an event is emitted through the server."""
    waiting = RemoteStore(remote.url, long_poll=30.0)  # the server's longest
    learned, woke = threading.Event(), threading.Event()

    def wait() -> None:
        waiting.wait_for_work(0.05)  # the first call only learns where the server is
        learned.set()
        waiting.wait_for_work(0.05)
        woke.set()

    thread = threading.Thread(target=wait)
    thread.start()
    try:
        assert learned.wait(30)
        time.sleep(0.2)
        assert not woke.is_set()  # parked at the server, not polling
        remote.emit("anything", {})
        assert woke.wait(20)  # well within its 30 s: the event woke it
    finally:
        # Never leave it parked at a server the fixtures are about to stop.
        thread.join(timeout=60)
        waiting.close()


MEMORY = Memory(stream="notes", projection="notes-memory")


@projection(name="notes-memory", events=["note.added"], initial_state={"notes": []})
def notes_memory(state: dict[str, Any], event: Event) -> dict[str, Any]:
    return {"notes": [*state["notes"], event.data["text"]]}


@agent(id="note-taker", triggers=["note.requested"], memory=MEMORY)
def note_taker(ctx: AgentContext) -> dict[str, Any]:
    added = ctx.memory.append("note.added", {"text": ctx.event.data["text"]})
    return {"seq": added.seq, "notes": ctx.memory.state()["notes"]}


def test_agent_memory_through_the_server(
    remote: RemoteStore, backend: LmdbStore, server_url: str
) -> None:
    """A worker on a RemoteStore appends, waits for its projection, reads it; curl sees it."""
    worker = Worker([note_taker], store=remote, projections=[notes_memory])
    run_ids = [remote.emit("note.requested", {"text": t}).run_ids[0] for t in ("a", "b")]
    worker.run(until_idle=True, ready_message=False)
    runs = [backend.get_run(r) for r in run_ids]
    assert [r.status for r in runs] == ["completed", "completed"], [r.error for r in runs]
    # The two runs may run at once: each sees at least its own note once it waited.
    assert "a" in runs[0].output["notes"] and "b" in runs[1].output["notes"]
    assert [s.id for s in backend.get_steps(run_ids[0])] == [
        "memory.append",
        "memory.append.wait",
        "memory.state",
    ]
    shown = get_json(server_url + "/api/v1/projections/notes-memory")
    assert shown == projection_json(backend.get_projection("notes-memory"))
    assert sorted(shown["state"]["state"]["notes"]) == ["a", "b"]
    stream = get_json(server_url + "/api/v1/streams/notes")
    assert sorted(e["data"]["text"] for e in stream["events"]) == ["a", "b"]
    assert [e["version"] for e in stream["events"]] == [1, 2]

"""The emitter's W3C trace context is stored with its event and run, on every store, and an
orphaned run comes back saying whom it was taken from."""

from __future__ import annotations

import json
import time
import urllib.request

import pytest

from ironflow.errors import InvalidInputError
from ironflow.store import AgentSpec, LmdbStore, Store, TraceContext, WorkerInfo
from ironflow.store._codec import decode_record
from ironflow.store._records import Event

WORKER = WorkerInfo(id="w1", host="elsewhere", pid=4242)
OTHER = WorkerInfo(id="w2", host="elsewhere", pid=4343)
PARENT = AgentSpec(id="parent", triggers=("go",))
TRACE = TraceContext("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "congo=t61rcWkgMzE")


def test_an_emitted_context_rides_on_the_event_and_its_runs(any_store: Store) -> None:
    """emit(trace=) keeps the context with the event; the runs it starts carry it."""
    any_store.register_agents([PARENT])
    result = any_store.emit("go", {"n": 1}, trace=TRACE)
    [run_id] = result.run_ids
    assert any_store.get_run(run_id).event.trace == TRACE
    [event] = any_store.events()
    assert event.trace == TRACE
    [leased] = any_store.lease_runs(WORKER, ["parent"], limit=1, ttl=30)
    assert leased.run.event.trace == TRACE
    plain = any_store.emit("go", {"n": 2}).run_ids[0]
    assert any_store.get_run(plain).event.trace is None


def test_a_child_run_carries_the_context_its_spawn_gave(any_store: Store) -> None:
    """spawn_run(trace=) gives the child's event the parent's spawn step context."""
    any_store.register_agents([PARENT, AgentSpec(id="child", triggers=())])
    parent = any_store.emit("go", {}).run_ids[0]
    any_store.lease_runs(WORKER, ["parent"], limit=1, ttl=30)
    child = any_store.spawn_run(
        WORKER, parent, "spawn.child", "child", {"x": 1}, attempt=1, trace=TRACE
    )
    assert child.event.trace == TRACE
    assert any_store.get_run(child.id).event.trace == TRACE


@pytest.mark.parametrize(
    "bad",
    [
        TraceContext("00-00000000000000000000000000000000-b7ad6b7169203331-01"),
        TraceContext("00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01"),
        TraceContext("00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01"),
        TraceContext("ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        TraceContext("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "x" * 600),
        TraceContext("hello"),
    ],
)
def test_a_malformed_context_is_refused_naming_the_format(
    any_store: Store, bad: TraceContext
) -> None:
    """A context that is not W3C trace context is refused, and nothing is written."""
    any_store.register_agents([PARENT])
    with pytest.raises(InvalidInputError, match="traceparent must look like"):
        any_store.emit("go", {}, trace=bad)
    assert any_store.events() == []


def test_an_http_emit_keeps_the_traceparent_header(backend: LmdbStore, server_url: str) -> None:
    """POST /api/v1/events with W3C headers stores them; an invalid header is ignored."""
    backend.register_agents([PARENT])

    def post(headers: dict[str, str]) -> str:
        request = urllib.request.Request(
            server_url + "/api/v1/events",
            data=json.dumps({"name": "go", "data": {}}).encode(),
            headers={"Content-Type": "application/json", **headers},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=30) as reply:
            run_ids: list[str] = json.loads(reply.read())["run_ids"]
            return run_ids[0]

    run_id = post({"traceparent": TRACE.traceparent, "tracestate": TRACE.tracestate})
    assert backend.get_run(run_id).event.trace == TRACE
    ignored = post({"traceparent": "00-zz-nothex-01", "tracestate": "a=b"})
    assert backend.get_run(ignored).event.trace is None


def test_an_event_stored_before_traces_reads_unchanged() -> None:
    """Old records have no trace field: they decode with None."""
    old = b'{"id":"evt_1","name":"go","data":{},"ts":1.0,"seq":3,"stream":null,"version":0}'
    assert decode_record(old, Event) == Event("evt_1", "go", {}, 1.0, seq=3)


def test_an_orphaned_run_says_whom_it_was_taken_from(any_store: Store) -> None:
    """A run whose lease lapsed comes back with taken_from; a fresh or released one without."""
    any_store.register_agents([PARENT])
    first = any_store.emit("go", {}).run_ids[0]
    [fresh] = any_store.lease_runs(WORKER, ["parent"], limit=1, ttl=0.05)
    assert fresh.run.id == first and fresh.taken_from is None
    time.sleep(0.1)
    [taken] = any_store.lease_runs(OTHER, ["parent"], limit=1, ttl=30)
    assert taken.run.id == first and taken.taken_from == WORKER
    any_store.release_run(OTHER, first, attempt=taken.run.attempt)
    [handed] = any_store.lease_runs(WORKER, ["parent"], limit=1, ttl=30)
    assert handed.run.id == first and handed.taken_from is None

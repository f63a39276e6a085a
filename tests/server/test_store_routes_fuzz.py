"""Every store route, fuzzed from the route table: never a 5xx, and a refusal changes nothing.

For each row of ``STORE_ROUTES`` Hypothesis builds requests out of the row itself: each
argument drawn from a strategy for its kind, mostly well-formed (ids the store holds,
the worker holding a run, records of the right shape) so the request reaches the store,
with hostile values mixed in (integers past 64 bits, values nested 300 deep, 1e308
seconds, lone surrogates, wrong types, missing and unknown fields). After every request:
the answer is 2xx or a JSON 4xx, a 4xx left every key and value of the store as it was,
and the store's own consistency check passes.

A new Store method is a new row, so it is fuzzed without touching this file; a new kind
of argument fails :func:`strategy_for` until it gets a strategy here.
"""

from __future__ import annotations

import http.client
import json
import types
import typing
import urllib.parse
from collections.abc import Iterator
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ironflow._pure._limits import MAX_DEPTH, MAX_NAME_BYTES
from ironflow.server import BackgroundServer
from ironflow.store import AgentSpec, LmdbStore, WorkerInfo
from ironflow.store import _checks as checks
from ironflow.store._codec import converter, event_data
from ironflow.store._flowspec import FlowSpec
from ironflow.store._history import export_history, history_to_json
from ironflow.store._records import ProjectionSpec
from ironflow.store._routes import STORE_ROUTES, StoreRoute
from ironflow.store._wire import (
    Checked,
    Data,
    Flag,
    HistoryDocument,
    Int,
    Kind,
    Many,
    Maybe,
    Number,
    Record,
)
from tests.server.test_store_routes import fingerprint

W = WorkerInfo(id="fuzz-worker", host="elsewhere", pid=4242)
# Waits the server honours are kept this short, so a fuzz run never sleeps for long.
SHORT_WAIT = 0.02


@attrs.define
class World:
    store: LmdbStore
    url: str
    run_ids: list[str]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """A server over a store holding one of everything: agents, runs (one held by W, one
    pending, one finished), a stream, a partitioned and a plain projection."""
    store = LmdbStore(tmp_path_factory.mktemp("routes-fuzz") / "data", sync=False)
    store.register_agents([AgentSpec("a", ("a.*",)), AgentSpec("b", ("b.go",))])
    store.register_projections(
        [
            ProjectionSpec(name="p", events=("a.*",), initial_state={}),
            ProjectionSpec(name="q", events=("b.*",), partitioned=True, initial_state=0),
        ]
    )
    held = store.emit("a.go", {"n": 1}).run_ids[0]
    store.lease_runs(W, ["a"], limit=1, ttl=86400)
    done = store.emit("b.go", {}).run_ids[0]
    other = WorkerInfo(id="other", host="elsewhere", pid=4243)
    [finished] = store.lease_runs(other, ["b"], limit=1, ttl=60)
    store.finish_run(
        other, done, status="completed", output={"ok": True}, attempt=finished.run.attempt
    )
    pending = store.emit("a.go", {"n": 2}).run_ids[0]
    store.append_to_stream("s", "a.mem", {"seed": True})
    with BackgroundServer(store) as url:
        yield World(store, url, [held, pending, done])
    store.close()


# -- values -------------------------------------------------------------------------------------

odd_text = st.text(
    alphabet=st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=()),
    max_size=12,
)
hostile_text = odd_text | st.sampled_from(
    ["", "x" * (MAX_NAME_BYTES + 1), "é" * (MAX_NAME_BYTES // 2 + 1), "a\x00b", "..", "a/b"]
)
leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**65), max_value=2**65),
    st.floats(allow_nan=False, allow_infinity=False),
    odd_text,
)
json_values = st.recursive(
    leaf,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(odd_text, inner, max_size=3),
    max_leaves=8,
)


def nested(depth: int) -> Any:
    value: Any = 0
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


hostile_values = st.one_of(
    json_values,
    st.sampled_from([2**64, -(2**63) - 1, 1e308, -1e308, nested(MAX_DEPTH + 1), nested(300)]),
)


def names_for(check: Any, world: World) -> st.SearchStrategy[Any]:
    """Well-formed values for a text argument, by the check it passes."""
    if check is checks.run_id:
        return st.sampled_from([*world.run_ids, "run_nope"])
    if check is checks.projection_name:
        return st.sampled_from(["p", "q", "nope"])
    if check is checks.stream_id:
        return st.sampled_from(["s", "t"])
    if check is checks.event_name:
        return st.sampled_from(["a.go", "b.go", "a.x"])
    if check is checks.finish_status:
        return st.sampled_from(["completed", "failed", "cancelled"])
    if check is checks.step_id:
        return st.sampled_from(["tool.x", "spawn.a", "sleep"])
    if check is event_data:
        return st.dictionaries(st.sampled_from(["n", "orderId", "k"]), json_values, max_size=3)
    if check is checks.stream_version:
        return st.integers(min_value=1, max_value=3)
    if check is checks.any_text:
        return st.sampled_from(["a", "running", "completed", "p"]) | odd_text
    return st.sampled_from(["a", "b", "w", "a.go", "k1"])


# Well-formed values of record fields, by name, that reach deep into the store.
def field_values(world: World) -> dict[str, st.SearchStrategy[Any]]:
    runs = st.sampled_from([*world.run_ids, "run_nope"])
    return {
        "run_id": runs,
        "child_id": runs,
        "position": st.integers(min_value=0, max_value=3),
        "attempt": st.integers(min_value=0, max_value=2),
        "name": st.sampled_from(["p", "q", "a", "nope"]),
        "id": st.sampled_from(["tool.x", "a", "sleep"]),
        "step_id": st.sampled_from(["tool.x", "sleep"]),
        "events": st.lists(st.sampled_from(["a.*", "b.go", "c.>"]), max_size=2),
        "triggers": st.lists(st.sampled_from(["a.*", "b.go", "c.>"]), max_size=2),
        "event": st.sampled_from(["a.go", "b.go"]),
        "wake_in": st.sampled_from([0.0, 0.01, 3600.0]),
        "since": st.sampled_from([0.0, 1.7e9]),
        "wake_at": st.sampled_from([None, 0.0, 1.7e9, 4e9]),
        "deadline": st.sampled_from([None, 1.7e9, 4e9]),
        "started_at": st.floats(min_value=0, max_value=2e9),
        "ended_at": st.floats(min_value=0, max_value=2e9),
        "from_position": st.integers(min_value=0, max_value=4),
        "to_position": st.integers(min_value=0, max_value=4),
        "partitions": st.dictionaries(st.sampled_from(["", "k1", "k2"]), json_values, max_size=2),
        "after_seq": st.integers(min_value=0, max_value=5),
        "skip": st.lists(st.integers(min_value=0, max_value=5), max_size=2),
        # Mostly none; else a flow spec of any shape, which its checks mostly refuse.
        "flow": st.none() | st.none() | st.deferred(lambda: valid_typed(FlowSpec, world)),
        "filter": st.sampled_from([None, "data.n > 1", "(((", "data.k == 'x'"]),
    }


def valid_typed(tp: Any, world: World) -> st.SearchStrategy[Any]:
    """A well-formed JSON value of type ``tp``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any or tp is object:
        return json_values
    if tp is str:
        return st.sampled_from(["a", "tool.x", "completed", "x"])
    if tp is bool:
        return st.booleans()
    if tp is int:
        return st.integers(min_value=0, max_value=5)
    if tp is float:
        return st.floats(min_value=0, max_value=2e9)
    if origin is typing.Literal:
        return st.sampled_from(args)
    if origin in (typing.Union, types.UnionType):
        return st.one_of([valid_typed(a, world) for a in args])
    if tp is type(None):
        return st.none()
    if origin in (tuple, list, set, frozenset):
        return st.lists(valid_typed(args[0], world), max_size=3)
    if origin is dict:
        return st.dictionaries(st.sampled_from(["k", "a"]), valid_typed(args[1], world), max_size=2)
    if attrs.has(tp):
        return valid_record(tp, world)
    raise AssertionError(f"no strategy for the type {tp}")


def valid_record(tp: type, world: World) -> st.SearchStrategy[dict[str, Any]]:
    """A JSON object of the record ``tp`` that its checks accept, mostly."""
    if tp is WorkerInfo:
        return st.just(converter.unstructure(W))
    hints = typing.get_type_hints(tp)
    known = field_values(world)

    def value(f: Any) -> st.SearchStrategy[Any]:
        return known[f.name] if f.name in known else valid_typed(hints[f.name], world)

    fields = attrs.fields(tp)
    return st.fixed_dictionaries(
        {f.name: value(f) for f in fields if f.default is attrs.NOTHING},
        optional={f.name: value(f) for f in fields if f.default is not attrs.NOTHING},
    )


@st.composite
def spoiled(draw: st.DrawFn, good: dict[str, Any]) -> Any:
    """``good`` with one thing wrong: a field hostile, missing or unknown, or worse."""
    how = draw(st.sampled_from(["field", "field", "missing", "unknown", "nested", "other"]))
    keys = sorted(good)
    if how == "field" and keys:
        return {**good, draw(st.sampled_from(keys)): draw(hostile_values | hostile_text)}
    if how == "missing" and keys:
        return {k: v for k, v in good.items() if k != draw(st.sampled_from(keys))}
    if how == "unknown":
        return {**good, "unexpected": 1}
    if how == "nested":
        # Spoil a field inside a nested record or list (a step's error, a write's states).
        for key in keys:
            inner = good[key]
            if isinstance(inner, dict) and inner:
                return {**good, key: draw(spoiled(inner))}
            if isinstance(inner, list) and inner and isinstance(inner[0], dict):
                return {**good, key: [draw(spoiled(inner[0])), *inner[1:]]}
    return draw(hostile_values)


def valid_for(kind: Kind, world: World) -> st.SearchStrategy[Any]:
    """Values of an argument's kind its checks accept (nearly always)."""
    if isinstance(kind, Checked):
        return names_for(kind.check, world)
    if isinstance(kind, Int):
        return st.integers(min_value=kind.lo, max_value=min(kind.hi, kind.lo + 5))
    if isinstance(kind, Number):
        return st.floats(min_value=kind.lo, max_value=min(kind.hi, kind.lo + SHORT_WAIT))
    if isinstance(kind, Flag):
        return st.booleans()
    if isinstance(kind, Data):
        return json_values
    if isinstance(kind, Record):
        if typing.get_origin(kind.tp) is list:
            return st.lists(valid_record(typing.get_args(kind.tp)[0], world), max_size=2)
        return valid_record(kind.tp, world)
    if isinstance(kind, Many):
        return st.lists(valid_for(kind.item, world), max_size=3)
    if isinstance(kind, Maybe):
        return st.none() | valid_for(kind.inner, world)
    if isinstance(kind, HistoryDocument):
        # The history of one of the world's runs, as `ironflow run export` writes it.
        return st.sampled_from(world.run_ids).map(
            lambda run_id: history_to_json(export_history(world.store, run_id))
        )
    raise AssertionError(f"no strategy for the kind {kind!r}: add one to this test")


def hostile_for(kind: Kind, world: World) -> st.SearchStrategy[Any]:
    """Values of an argument's kind that are wrong in some way."""
    if isinstance(kind, Checked):
        return hostile_text | hostile_values
    if isinstance(kind, Int):
        return st.sampled_from([kind.lo - 1, kind.hi + 1, 2**64, 1.5, "1", True, None, []])
    if isinstance(kind, Number):
        return st.sampled_from([kind.lo - 1, kind.hi * 10, 1e308, -1e308, "1", True, None])
    if isinstance(kind, Flag):
        return hostile_values
    if isinstance(kind, Data):
        return hostile_values
    if isinstance(kind, Record | Many):
        return (
            valid_for(kind, world).flatmap(
                lambda v: (
                    spoiled(v)
                    if isinstance(v, dict)
                    else st.lists(
                        valid_for(kind, world).flatmap(
                            lambda x: spoiled(x) if isinstance(x, dict) else st.just(x)
                        ),
                        max_size=2,
                    )
                )
            )
            | hostile_values
        )
    if isinstance(kind, Maybe):
        return hostile_for(kind.inner, world)
    if isinstance(kind, HistoryDocument):
        return valid_for(kind, world).flatmap(spoiled) | hostile_values
    raise AssertionError(f"no strategy for the kind {kind!r}: add one to this test")


@st.composite
def requests(draw: st.DrawFn, route: StoreRoute, world: World) -> tuple[str, bytes | None]:
    """A request for ``route``, (path with query, body): every argument well-formed, or
    all but one (which is hostile, left out, or joined by an unknown field)."""
    spoil = draw(st.sampled_from([None, None, *route.args, "unknown"]))
    path = route.path
    query: list[tuple[str, str]] = []
    body: dict[str, Any] = {}
    for arg in route.args:
        value = draw(hostile_for(arg.kind, world) if arg is spoil else valid_for(arg.kind, world))
        if arg.name in ("wait", "timeout") and isinstance(value, float) and value > SHORT_WAIT:
            value = SHORT_WAIT
        if arg.at == "path":
            text = value if isinstance(value, str) else json.dumps(value)
            piece = urllib.parse.quote(text.encode("utf-8", "surrogatepass"), safe="")
            path = path.replace("{" + arg.name + "}", piece)
        elif arg.at == "query":
            if value is not None and (arg is spoil or draw(st.booleans())):
                query.append((arg.name, value if isinstance(value, str) else json.dumps(value)))
        elif not (arg is spoil and draw(st.booleans())):  # the hostile one may be left out
            body[arg.name] = value
    if query:
        path += "?" + urllib.parse.urlencode(
            [(k, v.encode("utf-8", "surrogatepass")) for k, v in query]
        )
    if not route.has_body:
        return path, None
    if spoil == "unknown":
        body["unexpected"] = True
    return path, json.dumps(body).encode("utf-8", "surrogatepass")


def send(url: str, method: str, path: str, body: bytes | None) -> tuple[int, Any]:
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=60)
    try:
        conn.request(method, "/api/v1" + path, body=body)
        reply = conn.getresponse()
        raw = reply.read()
    finally:
        conn.close()
    return reply.status, json.loads(raw) if raw else None


@pytest.mark.parametrize("route", STORE_ROUTES, ids=lambda r: r.name)
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_a_store_route_never_fails_and_a_refusal_changes_nothing(
    world: World, route: StoreRoute, data: st.DataObject
) -> None:
    """Any request to a store route: 2xx, or a JSON 4xx that left the store unchanged."""
    path, body = data.draw(requests(route, world), label="request")
    before = fingerprint(world.store)
    status, reply = send(world.url, route.method, path, body)
    assert status < 500, reply
    if status >= 400:
        assert isinstance(reply, dict) and reply["error"]["code"], reply
        assert len(reply["error"]["message"]) > 10, reply
        assert fingerprint(world.store) == before, (status, reply)
    world.store.check_valid()

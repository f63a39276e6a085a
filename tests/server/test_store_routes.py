"""The store's route table: it covers the Store protocol, and its checks answer 4xx.

Regression tests for issue 12 item 6 (worker endpoints answered 500 to a step holding
2**64, a 300-deep input, or ``wake_in=1e308``) and item 7 (a client hanging up
mid-body logged a traceback at ERROR).
"""

from __future__ import annotations

import hashlib
import http.client
import inspect
import json
import logging
import socket
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest

from ironflow.errors import InvalidInputError, NotSerializableError
from ironflow.server import BackgroundServer
from ironflow.store import AgentSpec, LmdbStore, Store, WorkerInfo
from ironflow.store._backend import TABLES
from ironflow.store._codec import converter
from ironflow.store._routes import ROUTES, STORE_ROUTES

W = WorkerInfo(id="w1", host="elsewhere", pid=4242)


def fingerprint(store: LmdbStore) -> str:
    """A digest of every key and value the store holds: equal means nothing changed."""
    digest = hashlib.sha256()
    with store._read() as txn:
        for table in TABLES:
            for key, value in txn.scan(table):
                digest.update(table.encode() + b"\x00" + bytes(key) + b"\x00" + bytes(value))
    return digest.hexdigest()


def post(url: str, path: str, body: Any) -> tuple[int, Any]:
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)
    try:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        conn.request("POST", "/api/v1" + path, body=raw)
        reply = conn.getresponse()
        return reply.status, json.loads(reply.read())
    finally:
        conn.close()


@pytest.fixture
def held(store: LmdbStore) -> Iterator[tuple[LmdbStore, str, str]]:
    """A server over a store where worker W holds one run: (store, url, run id)."""
    store.register_agents([AgentSpec("a", ("a.*",))])
    store.emit("a.go", {})
    [leased] = store.lease_runs(W, ["a"], limit=1, ttl=600)
    with BackgroundServer(store) as url:
        yield store, url, leased.run.id


def step_body(run_id: str, **fields: Any) -> dict[str, Any]:
    step = {
        "run_id": run_id,
        "position": 0,
        "id": "tool.x",
        "status": "completed",
        "input": None,
        "output": None,
        "started_at": 1.0,
        "ended_at": 2.0,
        **fields,
    }
    return {"worker": converter.unstructure(W), "step": step}


def test_every_store_method_has_one_route_with_its_parameters() -> None:
    """The table covers the Store protocol: one row per method (but close), whose
    arguments are the method's parameters, by name."""
    methods = {
        name
        for name, fn in inspect.getmembers(Store, inspect.isfunction)
        if not name.startswith("_") and name != "close"
    }
    assert {r.name for r in STORE_ROUTES} == methods
    assert len(ROUTES) == len(STORE_ROUTES)
    for route in STORE_ROUTES:
        params = list(inspect.signature(getattr(Store, route.name)).parameters)[1:]
        assert [a.name for a in route.args if a.param] == params, route.name
    assert len({(r.method, r.path) for r in STORE_ROUTES}) == len(STORE_ROUTES)


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        ({"input": {"n": 2**64}}, "64 bits"),
        ({"output": [2**64]}, "64 bits"),
        ({"output": -(2**63) - 1}, "64 bits"),
    ],
)
def test_a_step_holding_a_huge_integer_is_422_and_stores_nothing(
    held: tuple[LmdbStore, str, str], fields: dict[str, Any], needle: str
) -> None:
    """Issue 12 item 6: a step with 2**64 in it answered 500; now 422 naming the path."""
    store, url, run_id = held
    before = fingerprint(store)
    status, reply = post(url, "/store/steps", step_body(run_id, **fields))
    assert status == 422, reply
    assert needle in reply["error"]["message"]
    assert fingerprint(store) == before
    assert store.get_steps(run_id) == []


def test_a_step_nested_300_deep_is_422_and_stores_nothing(
    held: tuple[LmdbStore, str, str],
) -> None:
    """Issue 12 item 6: a 300-deep step input answered 500; now 422 saying how deep."""
    store, url, run_id = held
    body = json.dumps(step_body(run_id)).replace(
        '"input": null', '"input": ' + "[" * 300 + "]" * 300
    )
    before = fingerprint(store)
    status, reply = post(url, "/store/steps", body.encode())
    assert status == 422, reply
    assert "200 levels deep" in reply["error"]["message"]
    assert fingerprint(store) == before


@pytest.mark.parametrize("wake_in", [1e308, 1e12, -1.0])
def test_a_suspension_too_far_away_is_422_and_the_run_stays_held(
    held: tuple[LmdbStore, str, str], wake_in: float
) -> None:
    """Issue 12 item 6: ``wake_in=1e308`` answered 500 and left the run sleeping with no
    timer (check_valid crashed); now 422, and the run is still held as it was."""
    store, url, run_id = held
    before = fingerprint(store)
    body = {
        "worker": converter.unstructure(W),
        "suspension": {"kind": "sleep", "position": 0, "step_id": "sleep", "wake_in": wake_in},
        "attempt": 1,
    }
    status, reply = post(url, f"/store/runs/{run_id}/suspend", body)
    assert status == 422, reply
    assert "wake_in" in reply["error"]["message"]
    assert fingerprint(store) == before
    assert store.get_run(run_id).status == "running"
    store.check_valid()


def test_the_local_store_refuses_the_same_values(store: LmdbStore) -> None:
    """The checks the routes use are the store's own: a local caller gets them too."""
    from ironflow.store import Suspension

    store.register_agents([AgentSpec("a", ("a.*",))])
    store.emit("a.go", {})
    [leased] = store.lease_runs(W, ["a"], limit=1, ttl=600)
    with pytest.raises(InvalidInputError, match="wake_in"):
        store.suspend_run(
            W,
            leased.run.id,
            Suspension(kind="sleep", position=0, step_id="sleep", wake_in=1e308),
            attempt=leased.run.attempt,
        )
    deep: list[Any] = []
    for _ in range(250):
        deep = [deep]
    with pytest.raises(NotSerializableError, match="levels deep"):
        store.emit("a.go", {"deep": deep})
    store.check_valid()
    assert store.get_run(leased.run.id).status == "running"


def test_a_body_with_an_unknown_field_is_422() -> None:
    """A misspelt field is refused, never silently dropped."""
    route = ROUTES["emit"]
    with pytest.raises(InvalidInputError, match=r"unknown fields.*'dat'"):
        route.parse({}, {}, {"name": "a", "dat": {}})


def test_the_wire_takes_no_lookalike_values() -> None:
    """A string is not a number and a number is not a string on the wire."""
    route = ROUTES["record_step"]
    good = step_body("run_1")
    assert route.parse({}, {}, good)["step"].position == 0
    for field, value in [("position", "0"), ("position", 0.0), ("id", 5), ("started_at", "1")]:
        bad = step_body("run_1", **{field: value})
        with pytest.raises(InvalidInputError, match=field):
            route.parse({}, {}, bad)
    with pytest.raises(InvalidInputError, match="worker"):
        route.parse({}, {}, {**good, "worker": {**good["worker"], "pid": True}})


@pytest.mark.parametrize(
    ("path", "content_type", "start"),
    [
        ("/api/v1/store/events", "application/json", b'{"name": "a.'),
        ("/api/v1/events", "application/json", b'{"name": "a.'),
        ("/ui/login", "application/x-www-form-urlencoded", b"token=abc"),
    ],
)
def test_a_client_that_hangs_up_mid_body_logs_one_line(
    held: tuple[LmdbStore, str, str],
    caplog: pytest.LogCaptureFixture,
    path: str,
    content_type: str,
    start: bytes,
) -> None:
    """Issue 12 item 7: a hung-up client logged a traceback at ERROR; now one INFO line,
    on a store route, a people's route and the dashboard's login alike."""
    _, url, _ = held
    parts = urllib.parse.urlsplit(url)
    caplog.set_level(logging.DEBUG, logger="ironflow")
    for _ in range(3):
        with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
            sock.sendall(
                f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n".encode()
                + f"Content-Type: {content_type}\r\n\r\n".encode()
                + start
            )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        lines = [r for r in caplog.records if "hung up" in r.getMessage()]
        if len(lines) == 3:
            break
        time.sleep(0.02)
    assert len(lines) == 3, [r.getMessage() for r in caplog.records]
    assert all(r.levelno == logging.INFO and r.exc_info is None for r in lines)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]

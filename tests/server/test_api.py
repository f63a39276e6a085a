"""The HTTP API as curl sees it: JSON views, JSON errors, limits, tokens."""

from __future__ import annotations

import http.client
import json
import urllib.parse
from typing import Any

import pytest

from ironflow.server import BackgroundServer
from ironflow.server._app import ROUTES
from ironflow.server._views import run_json, run_with_steps_json
from ironflow.store import AgentSpec, LmdbStore, RemoteStore, StepRecord, WorkerInfo

WORKER = WorkerInfo(id="w1", host="elsewhere", pid=4242)


def request(
    url: str,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    """One request; the reply's status and its JSON body."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        raw = response.read()
        assert response.getheader("Content-Type", "").startswith("application/json"), raw
        return response.status, json.loads(raw)
    finally:
        conn.close()


def assert_error(reply: tuple[int, Any], status: int, code: str) -> str:
    got_status, body = reply
    assert (got_status, body["error"]["code"]) == (status, code), body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return str(body["error"]["message"])


def test_health(server_url: str) -> None:
    """GET /api/v1/health answers ok with the version."""
    status, body = request(server_url, "GET", "/api/v1/health")
    assert status == 200 and body["status"] == "ok" and body["version"]


def test_views_are_the_clis(server_url: str, backend: LmdbStore) -> None:
    """GET /runs and /runs/{id} return run_json and run_with_steps_json, as the CLI prints."""
    backend.register_agents([AgentSpec(id="doc", triggers=("doc.received",))])
    status, emitted = request(
        server_url,
        "POST",
        "/api/v1/events",
        json.dumps({"name": "doc.received", "data": {"docId": "d1"}}).encode(),
    )
    assert status == 200 and emitted["created"] and len(emitted["run_ids"]) == 1
    run_id = emitted["run_ids"][0]
    backend.emit("doc.received", {"docId": "d2"})
    backend.lease_runs(WORKER, ["doc"], limit=1, ttl=60)
    backend.record_step(
        WORKER,
        StepRecord(run_id, 0, "tool.ocr", "completed", {"u": 1}, {"text": "t"}, 1.0, 2.0),
    )

    status, runs = request(server_url, "GET", "/api/v1/runs")
    expected = [
        run_json(r, backend.get_lease(r.id) if r.status == "running" else None)
        for r in backend.list_runs()
    ]
    assert status == 200 and runs == expected
    assert runs[0]["event"]["data"] == {"docId": "d2"}  # newest first
    status, runs = request(server_url, "GET", "/api/v1/runs?limit=1&status=running&agent=doc")
    assert [r["id"] for r in runs] == [run_id]

    status, one = request(server_url, "GET", f"/api/v1/runs/{run_id}")
    run = backend.get_run(run_id)
    assert status == 200
    assert one == run_with_steps_json(run, backend.get_steps(run_id), backend.get_lease(run_id))
    assert [s["id"] for s in one["steps"]] == ["tool.ocr"]


def test_cancel(server_url: str, backend: LmdbStore) -> None:
    """POST /runs/{id}/cancel cancels a pending run and answers with the run."""
    backend.register_agents([AgentSpec(id="doc", triggers=("doc.received",))])
    run_id = backend.emit("doc.received", {}).run_ids[0]
    status, body = request(server_url, "POST", f"/api/v1/runs/{run_id}/cancel")
    assert status == 200 and body["status"] == "cancelled" and body["id"] == run_id


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code"),
    [
        ("GET", "/api/v1/runs/run_nope", None, 404, "run_not_found"),
        ("POST", "/api/v1/runs/run_nope/cancel", None, 404, "run_not_found"),
        ("GET", "/api/v1/nothing", None, 404, "not_found"),
        ("GET", "/nothing", None, 404, "not_found"),  # "/" is the dashboard
        ("DELETE", "/api/v1/runs", None, 405, "method_not_allowed"),
        ("GET", "/api/v1/runs?limit=0", None, 422, "invalid_input"),
        ("GET", "/api/v1/runs?limit=abc", None, 422, "invalid_input"),
        ("POST", "/api/v1/events", b"{not json", 400, "bad_json"),
        ("POST", "/api/v1/events", b"[1]", 400, "bad_json"),
        ("POST", "/api/v1/events", b'{"name": "a", "data": NaN}', 400, "bad_json"),
        ("POST", "/api/v1/events", b'{"name": "a", "data": 1e999}', 400, "bad_json"),
        ("POST", "/api/v1/events", b'{"name": "a", "data": "\\ud800"}', 400, "bad_json"),
        ("POST", "/api/v1/events", b"\xff\xfe", 400, "bad_json"),
        ("POST", "/api/v1/events", b"[" * 100_000, 400, "bad_json"),
        ("POST", "/api/v1/events", b'{"data": {}}', 422, "invalid_input"),
        ("POST", "/api/v1/events", b'{"name": ""}', 422, "invalid_input"),
        ("POST", "/api/v1/events", b'{"name": "a", "id": 5}', 422, "invalid_input"),
        ("POST", "/api/v1/store/leases", b"{}", 422, "invalid_input"),
        (
            "POST",
            "/api/v1/store/leases",
            b'{"worker": {"id": "w", "host": "h", "pid": 99999999999}, "agents": ["a"],'
            b' "limit": 1, "ttl": 1}',
            422,
            "invalid_input",
        ),
        ("POST", "/api/v1/store/steps", b"{}", 422, "invalid_input"),
        (
            "POST",
            "/api/v1/store/runs/run_nope/release",
            b'{"worker": {"id": "w", "host": "h", "pid": 1}}',
            422,
            "invalid_input",
        ),
        (
            "POST",
            "/api/v1/store/runs/run_nope/release",
            b'{"worker": {"id": "w", "host": "h", "pid": 1}, "attempt": 1}',
            409,
            "lease_lost",
        ),
        (
            "POST",
            "/api/v1/store/agents",
            b'{"agents": [{"id": "a", "triggers": ["x..y"]}]}',
            422,
            "invalid_input",
        ),
    ],
)
def test_errors_are_json(
    server_url: str, method: str, path: str, body: bytes | None, status: int, code: str
) -> None:
    """Bad requests get a JSON error with the fitting 4xx status and code."""
    assert_error(request(server_url, method, path, body), status, code)


def test_body_over_the_limit_is_413(backend: LmdbStore) -> None:
    """A body over --max-body gets 413 too_large, naming the limit."""
    with BackgroundServer(backend, max_body=2048) as url:
        body = json.dumps({"name": "a", "data": {"x": "x" * 4096}}).encode()
        message = assert_error(request(url, "POST", "/api/v1/events", body), 413, "too_large")
        assert "2048" in message
        ok = json.dumps({"name": "a", "data": {"x": "x" * 100}}).encode()
        assert request(url, "POST", "/api/v1/events", ok)[0] == 200


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": "Basic dG9rZW4="},
        {"Authorization": "Bearer"},
        {"Authorization": "s3cret"},
    ],
)
def test_token_required(backend: LmdbStore, headers: dict[str, str]) -> None:
    """With a token, every request without the right Bearer token gets 401, even /health."""
    with BackgroundServer(backend, token="s3cret") as url:
        for path in ("/api/v1/health", "/api/v1/runs", "/api/v1/nothing"):
            assert_error(request(url, "GET", path, headers=headers), 401, "unauthorized")
        good = {"Authorization": "Bearer s3cret"}
        assert request(url, "GET", "/api/v1/health", headers=good)[0] == 200


def test_every_route_is_reachable(server_url: str) -> None:
    """Each route in the table answers (a 4xx for an empty request), never 404 not_found."""
    for route in ROUTES:
        path = "/api/v1" + route.path.format(
            run_id="run_nope", parent_id="run_nope", name="nope", stream_id="s"
        )
        body = b"{}" if route.method == "POST" else None
        status, reply = request(server_url, route.method, path, body)
        assert status < 500, (route, reply)
        if status == 404:
            assert reply["error"]["code"] in ("run_not_found", "projection_not_found"), route


def test_remote_store_lists_what_the_api_shows(remote: RemoteStore, server_url: str) -> None:
    """run_json over RemoteStore's records equals GET /runs: one rendering either way."""
    remote.register_agents([AgentSpec(id="doc", triggers=("doc.received",))])
    remote.emit("doc.received", {"x": 1})
    through_store = [run_json(r) for r in remote.list_runs()]
    assert request(server_url, "GET", "/api/v1/runs")[1] == through_store

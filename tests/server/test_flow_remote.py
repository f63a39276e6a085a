"""Flow control over HTTP: the store calls a RemoteStore makes, and the people's routes."""

from __future__ import annotations

import http.client
import json
import urllib.parse
from typing import Any

import pytest

from ironflow._worker._identity import this_worker
from ironflow.errors import InvalidInputError
from ironflow.store import AgentSpec, LmdbStore, Store
from ironflow.store._flowspec import CancelOn, ConcurrencyLimit, FlowSpec
from tests.helpers import completed_step

ME = this_worker()


def test_flow_specs_pause_resume_and_rerun_on_either_store(any_store: Store) -> None:
    """Filters, versions, slots and cancel-on work through the server as in LmdbStore;
    pause, resume and resume from a step too."""
    flow = FlowSpec(
        filter="data.n >= 0",
        concurrency=ConcurrencyLimit(1, "data.k"),
        cancel_on=(CancelOn("stop", "data.k"),),
        version="v9",
    )
    any_store.register_agents([AgentSpec(id="f", triggers=("go",), flow=flow)])
    assert any_store.agents()[0].flow == flow
    assert any_store.emit("go", {"n": -1, "k": 1}).run_ids == ()
    (first,) = any_store.emit("go", {"n": 1, "k": 1}).run_ids
    (second,) = any_store.emit("go", {"n": 2, "k": 1}).run_ids
    assert any_store.get_run(second).status == "queued"
    assert any_store.get_run(first).version == "v9"
    assert [lr.run.id for lr in any_store.lease_runs(ME, ["f"], limit=5, ttl=60)] == [first]
    assert any_store.pause_run(first).status == "running"
    assert any_store.record_step(ME, completed_step(first, 0)).pause_requested
    any_store.release_run(ME, first, attempt=1)
    assert any_store.get_run(first).status == "paused"
    assert any_store.resume_run(first).status == "pending"
    assert [lr.run.id for lr in any_store.lease_runs(ME, ["f"], limit=5, ttl=60)] == [first]
    any_store.finish_run(ME, first, status="completed", attempt=2)
    with pytest.raises(InvalidInputError, match="no step 'zz'"):
        any_store.resume_run(first, from_step="zz")
    with pytest.raises(InvalidInputError, match=r"has finished \(completed\).*steps are: s0"):
        any_store.resume_run(first)  # not a silent no-op
    rerun = any_store.resume_run(first, from_step="s0")
    assert (rerun.status, [r.from_step for r in rerun.reruns]) == ("pending", ["s0"])
    assert any_store.get_steps(first) == []
    any_store.emit("stop", {"k": 1})
    assert {any_store.get_run(r).status for r in (first, second)} == {"cancelled"}


def _post(url: str, path: str, body: Any = None) -> tuple[int, Any]:
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    try:
        raw = json.dumps(body).encode() if body is not None else None
        conn.request("POST", path, body=raw, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def test_people_routes_pause_and_resume_a_run(server_url: str, backend: LmdbStore) -> None:
    """POST /api/v1/runs/{id}/pause and /resume answer with the run's JSON view."""
    backend.register_agents([AgentSpec(id="p", triggers=("go",))])
    (run_id,) = backend.emit("go", {}).run_ids
    status, body = _post(server_url, f"/api/v1/runs/{run_id}/pause")
    assert (status, body["status"]) == (200, "paused")
    status, body = _post(server_url, f"/api/v1/runs/{run_id}/resume")
    assert (status, body["status"]) == (200, "pending")
    status, body = _post(server_url, f"/api/v1/runs/{run_id}/resume", {"from_step": "x"})
    assert status == 422 and body["error"]["code"] == "invalid_input"
    status, body = _post(server_url, "/api/v1/runs/run_nope/pause")
    assert status == 404

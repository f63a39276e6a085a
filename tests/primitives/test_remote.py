"""The waiting primitives through a real server: a worker on RemoteStore, answers over HTTP."""

from __future__ import annotations

import http.client
import json
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ironflow import AgentContext, agent, current_step, tool
from ironflow._worker._identity import this_worker
from ironflow.server import BackgroundServer
from ironflow.store import LmdbStore, RemoteStore, Suspension
from ironflow.testing import FakeClock
from tests.primitives.conftest import emit, register, serving, wait_status, wait_until


@tool(retries=1, backoff=0)
def shaky(n: int) -> int:
    info = current_step()
    assert info is not None
    if info.retry == 0:
        raise RuntimeError("first try fails")
    return n + 1


@agent(id="remote-child", triggers=[])
def remote_child(ctx: AgentContext) -> int:
    return int(ctx.event.data["n"]) * 2


@agent(id="remote-all", triggers=["remote.all"])
def remote_all(ctx: AgentContext) -> dict[str, Any]:
    ctx.sleep("10m")
    ping = ctx.wait_for_event("remote.ping", match={"id": ctx.event.data["id"]})
    answer = ctx.approve("ship", {"id": ctx.event.data["id"]})
    bumped = shaky(n=ping.data["n"])
    doubled = ctx.spawn(remote_child, {"n": bumped}).result()
    return {"approved": answer.approved, "reason": answer.reason, "doubled": doubled}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def backend(tmp_path: Path, clock: FakeClock) -> Iterator[LmdbStore]:
    """The server's store, its timers on a fake clock."""
    store = LmdbStore(tmp_path / "server-data", sync=False, clock=clock)
    yield store
    store.close()


@pytest.fixture
def server_url(backend: LmdbStore) -> Iterator[str]:
    with BackgroundServer(backend) as url:
        yield url


@pytest.fixture
def remote(server_url: str) -> Iterator[RemoteStore]:
    store = RemoteStore(server_url, long_poll=0.2, give_up_after=5.0)
    yield store
    store.close()


def post(url: str, path: str, body: Any = None) -> tuple[int, Any]:
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    try:
        payload = None if body is None else json.dumps(body).encode()
        conn.request("POST", "/api/v1" + path, body=payload)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def test_every_primitive_through_the_server(
    remote: RemoteStore, backend: LmdbStore, server_url: str, clock: FakeClock
) -> None:
    """A remote worker sleeps, waits, is approved over HTTP, retries and spawns, to the end."""
    run_id = emit(remote, "remote.all", {"id": "r1"}, remote_all)
    with serving(remote, [remote_all, remote_child]):
        wait_status(remote, run_id, "sleeping")
        clock.advance("10m")
        wait_status(remote, run_id, "waiting")
        post(server_url, "/events", {"name": "remote.ping", "data": {"id": "r1", "n": 4}})
        run = wait_until_waiting_on(remote, run_id, "approve.ship")
        status, reply = post(
            server_url, f"/runs/{run_id}/approvals/ship", {"approved": True, "reason": "lgtm"}
        )
        assert status == 200, reply
        assert reply["event"] == "agent.approve.ship" and reply["data"]["run_id"] == run_id
        run = wait_status(remote, run_id, "completed", "failed")
    assert run.status == "completed", run.error
    assert run.output == {"approved": True, "reason": "lgtm", "doubled": 10}
    shaky_step = next(s for s in remote.get_steps(run_id) if s.id == "tool.shaky")
    assert shaky_step.tries is not None and len(shaky_step.tries) == 1
    backend.check_valid()


def wait_until_waiting_on(store: RemoteStore, run_id: str, step_id: str) -> Any:
    return wait_until(
        lambda: (
            (r := store.get_run(run_id)).status == "waiting"
            and r.suspension is not None
            and r.suspension.step_id == step_id
            and r
        ),
        what=f"run {run_id} to wait at {step_id}",
    )


def test_the_approval_route_checks_its_input(server_url: str, remote: RemoteStore) -> None:
    """Unknown run: 404; approved not a bool or a bad name: 422; no body approves."""
    status, reply = post(server_url, "/runs/run_nope/approvals/ship", {})
    assert status == 404 and reply["error"]["code"] == "run_not_found"
    run_id = emit(remote, "remote.all", {"id": "r2"}, remote_all)
    status, reply = post(server_url, f"/runs/{run_id}/approvals/ship", {"approved": "yes"})
    assert status == 422 and "'approved' must be true or false" in reply["error"]["message"]
    status, reply = post(server_url, f"/runs/{run_id}/approvals/no%20spaces", {})
    assert status == 422 and "approval name" in reply["error"]["message"]
    status, reply = post(server_url, f"/runs/{run_id}/approvals/ship")
    assert status == 200 and reply["data"] == {"run_id": run_id, "approved": True}


def test_suspend_and_spawn_over_http_match_the_store(
    remote: RemoteStore, backend: LmdbStore
) -> None:
    """suspend_run and spawn_run answer as the LmdbStore does, idempotent on a repeat."""
    register(remote, remote_all, remote_child)
    run_id = remote.emit("remote.all", {"id": "r3"}).run_ids[0]
    worker = this_worker()
    assert len(remote.lease_runs(worker, ["remote-all"], limit=1, ttl=30)) == 1
    args = (worker, run_id, "spawn.remote-child", "remote-child", {"n": 1})
    child = remote.spawn_run(*args, attempt=1)
    again = remote.spawn_run(*args, attempt=1)
    assert again.id == child.id and child.parent_id == run_id
    wait = Suspension(kind="child", position=1, step_id="x", child_id=child.id)
    result = remote.suspend_run(worker, run_id, wait, attempt=1)
    assert result.suspended and backend.get_run(run_id).status == "waiting"
    assert backend.get_lease(run_id) is None
    backend.check_valid()


def test_the_http_cancel_ends_a_sleeping_run_at_once(
    remote: RemoteStore, backend: LmdbStore, server_url: str, clock: FakeClock
) -> None:
    """POST /runs/{id}/cancel on a sleeping run answers cancelled; it never wakes."""
    run_id = emit(remote, "remote.all", {"id": "r4"}, remote_all)
    with serving(remote, [remote_all, remote_child]):
        wait_status(remote, run_id, "sleeping")
        status, reply = post(server_url, f"/runs/{run_id}/cancel")
        assert status == 200 and reply["status"] == "cancelled"
        clock.advance("1h")
    assert remote.get_run(run_id).status == "cancelled"
    assert remote.get_steps(run_id) == []
    backend.check_valid()

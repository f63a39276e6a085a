"""ctx.spawn: child runs as steps; the parent waits for a result suspended, not blocking."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from ironflow import AgentContext, ChildRun, StepFailedError, Worker, agent
from ironflow._cli._main import main
from ironflow._worker._identity import this_worker
from ironflow.store import LmdbStore
from ironflow.testing import FakeClock
from tests.primitives.conftest import emit, register, serving, wait_status


@agent(id="squarer", triggers=[])
def squarer(ctx: AgentContext) -> int:
    n = ctx.event.data["n"]
    if n < 0:
        raise ValueError(f"no square of {n} here")
    if ctx.event.data.get("slow"):
        ctx.sleep("1m")
    return int(n) * int(n)


@agent(id="parent", triggers=["parent"])
def parent(ctx: AgentContext) -> dict[str, Any]:
    handle = ctx.spawn(squarer, {"n": ctx.event.data["n"], "slow": ctx.event.data.get("slow")})
    assert isinstance(handle, ChildRun)
    try:
        return {"child": handle.run_id, "square": handle.result()}
    except StepFailedError as exc:
        return {"child": handle.run_id, "failed": exc.error_type, "message": exc.message}


@agent(id="fan-out", triggers=["fan.out"])
async def fan_out(ctx: AgentContext) -> list[int]:
    handles = [await ctx.spawn("squarer", {"n": n}) for n in ctx.event.data["ns"]]
    return list(await asyncio.gather(*(h.result() for h in handles)))


def test_a_parent_waits_for_its_child_and_gets_its_output(
    timed_store: LmdbStore, clock: FakeClock
) -> None:
    """The parent is `waiting` (no lease) while its child sleeps; the child's end resumes it."""
    run_id = emit(timed_store, "parent", {"n": 7, "slow": True}, parent)
    with serving(timed_store, [parent, squarer]):
        run = wait_status(timed_store, run_id, "waiting")
        assert run.suspension is not None and run.suspension.kind == "child"
        child_id = run.suspension.child_id
        assert child_id is not None
        child = wait_status(timed_store, child_id, "sleeping")
        assert child.parent_id == run_id and child.event.data["n"] == 7
        assert timed_store.get_lease(run_id) is None
        clock.advance("1m")
        run = wait_status(timed_store, run_id, "completed")
    assert run.output == {"child": child_id, "square": 49}
    assert [s.id for s in timed_store.get_steps(run_id)] == [
        "spawn.squarer",
        "spawn.squarer.result",
    ]
    timed_store.check_valid()


def test_a_child_that_finished_first_resumes_nothing(store: LmdbStore) -> None:
    """When the child is done before the parent asks, the result is recorded without waiting."""
    run_id = emit(store, "parent", {"n": 3}, parent)
    worker = Worker([parent, squarer], store=store, concurrency=1)
    worker.run(until_idle=True, ready_message=False)
    run = store.get_run(run_id)
    assert run.status == "completed" and run.output["square"] == 9


def test_a_failed_child_fails_the_parents_wait(store: LmdbStore) -> None:
    """The child's error reaches the parent as StepFailedError naming it, and is recorded."""
    run_id = emit(store, "parent", {"n": -1}, parent)
    Worker([parent, squarer], store=store).run(until_idle=True, ready_message=False)
    run = store.get_run(run_id)
    assert run.output["failed"] == "ValueError"
    assert "no square of -1 here" in run.output["message"]
    assert run.output["child"] in run.output["message"]
    assert store.get_steps(run_id)[1].status == "failed"


def test_spawning_is_idempotent_per_parent_and_step(store: LmdbStore) -> None:
    """spawn_run twice with the same (parent, step id) returns the first child, starts one."""
    register(store, parent, squarer)
    run_id = store.emit("parent", {"n": 2}).run_ids[0]
    worker = this_worker()
    assert len(store.lease_runs(worker, ["parent"], limit=1, ttl=30)) == 1
    first = store.spawn_run(worker, run_id, "spawn.squarer", "squarer", {"n": 2}, attempt=1)
    again = store.spawn_run(worker, run_id, "spawn.squarer", "squarer", {"n": 99}, attempt=1)
    other = store.spawn_run(worker, run_id, "spawn.squarer#2", "squarer", {"n": 5}, attempt=1)
    assert again.id == first.id and other.id != first.id
    assert first.status == "pending" and first.parent_id == run_id
    assert len(store.list_runs(agent="squarer")) == 2


def test_async_parents_gather_their_childrens_results(store: LmdbStore) -> None:
    """An async parent spawns three children and awaits their results with gather."""
    run_id = emit(store, "fan.out", {"ns": [2, 3, 4]}, fan_out)
    with serving(store, [fan_out, squarer]):
        run = wait_status(store, run_id, "completed", "failed")
    assert run.status == "completed", run.error
    assert run.output == [4, 9, 16]


def test_a_child_is_given_object_data_or_nothing_is_spawned(store: LmdbStore) -> None:
    """ctx.spawn(agent, [1, 2]) fails in the parent before any step: a child's
    ctx.event.data is an object, like any event's."""

    @agent(id="list-parent", triggers=["list.parent"])
    def list_parent(ctx: AgentContext) -> Any:
        return ctx.spawn(squarer, [1, 2]).result()

    run_id = emit(store, "list.parent", {}, list_parent, squarer)
    Worker([list_parent, squarer], store=store).run(until_idle=True, ready_message=False)
    run = store.get_run(run_id)
    assert run.status == "failed" and run.error is not None
    assert run.error.type == "InvalidInputError"
    assert "ctx.spawn of 'squarer': the data must be a JSON object, not an array" in (
        run.error.message
    )
    assert store.get_steps(run_id) == [] and len(store.list_runs()) == 1


def test_inspect_shows_parent_and_children(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`ironflow inspect` names a parent's children with their status, and a child's parent."""
    monkeypatch.delenv("IRONFLOW_URL", raising=False)
    path = tmp_path / "data"
    store = LmdbStore(path, sync=False)
    run_id = emit(store, "parent", {"n": 4}, parent)
    Worker([parent, squarer], store=store).run(until_idle=True, ready_message=False)
    child_id = store.get_run(run_id).output["child"]
    store.close()
    assert main(["inspect", run_id, "--data-dir", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"children {child_id} squarer (completed)" in out
    assert main(["inspect", child_id, "--data-dir", str(path), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["parent_id"] == run_id and shown["output"] == 16
    assert main(["inspect", run_id, "--data-dir", str(path), "--json"]) == 0
    children = json.loads(capsys.readouterr().out)["children"]
    assert children == [{"id": child_id, "agent": "squarer", "step": "spawn.squarer"}]

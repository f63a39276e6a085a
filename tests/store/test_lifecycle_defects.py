"""Rules of a run's life that release 1 got wrong, each on every local backend.

- Cancelling a run cancels its whole tree of child runs, whatever its depth (issue
  12, item 5): release 1 stopped at depth 100, and a 131-deep chain kept 30 runs
  waiting after its root was cancelled.
- ``cancel_on`` with a match path the event lacks matches nothing (issue 11, defect
  6): release 1 took a missing value as equal to another missing value, so a cancel
  event without the field (or a typo in the path) cancelled every run whose trigger
  lacked it too.
- Re-running a run from its spawn step starts a new child run (issue 11, defect 7):
  release 1 handed back the first child, so the re-run started nothing.
"""

from __future__ import annotations

from typing import Any

from ironflow import AgentContext, Worker, agent
from ironflow._worker._identity import this_worker
from ironflow.store import AgentSpec, Suspension
from ironflow.store._flowspec import CancelOn, FlowSpec
from ironflow.store._machine import StoreMachine

ME = this_worker("chain-builder")


def _chain(machine: StoreMachine, depth: int) -> list[str]:
    """A root run and ``depth`` generations of children, each waiting for its own child."""
    machine.register_agents([AgentSpec("link", ("chain.start",))])
    ids = [machine.emit("chain.start", {}).run_ids[0]]
    for _ in range(depth):
        [leased] = machine.lease_runs(ME, ["link"], limit=1, ttl=600)
        parent = leased.run
        assert parent.id == ids[-1]
        child = machine.spawn_run(ME, parent.id, "spawn.link", "link", {}, attempt=parent.attempt)
        wait = Suspension(kind="child", position=0, step_id="spawn.link.result", child_id=child.id)
        assert machine.suspend_run(ME, parent.id, wait, attempt=parent.attempt).suspended
        ids.append(child.id)
    return ids


def test_cancelling_the_root_of_a_deep_chain_cancels_every_run_in_it(
    machine: StoreMachine,
) -> None:
    """A 150-deep chain of waiting runs: one cancel of the root cancels all 151, at once."""
    ids = _chain(machine, 150)
    assert {machine.get_run(i).status for i in ids[:-1]} == {"waiting"}
    assert machine.request_cancel(ids[0]).status == "cancelled"
    assert [machine.get_run(i).status for i in ids] == ["cancelled"] * len(ids)
    assert machine.lease_runs(ME, ["link"], limit=10, ttl=60) == []
    machine.check_valid()


def test_cancel_on_matches_nothing_where_the_field_is_missing(machine: StoreMachine) -> None:
    """A cancel event without orderId cancels nothing; one with it cancels only its order's run."""
    flow = FlowSpec(cancel_on=(CancelOn("order.cancelled", "data.orderId"),))
    machine.register_agents([AgentSpec("ship", ("order.created",), flow=flow)])
    (with_id,) = machine.emit("order.created", {"orderId": 1}).run_ids
    (other,) = machine.emit("order.created", {"orderId": 2}).run_ids
    (without,) = machine.emit("order.created", {"note": "no order id"}).run_ids
    machine.emit("order.cancelled", {"reason": "bulk"})
    machine.emit("order.cancelled", {"orderId": None})
    assert {machine.get_run(r).status for r in (with_id, other, without)} == {"pending"}
    machine.emit("order.cancelled", {"orderId": 1})
    statuses = [machine.get_run(r).status for r in (with_id, other, without)]
    assert statuses == ["cancelled", "pending", "pending"]
    machine.check_valid()


@agent(id="kid", triggers=[])
def kid(ctx: AgentContext) -> dict[str, Any]:
    return {"kid_run": ctx.run_id}


@agent(id="raiser", triggers=["raise.kid"])
def raiser(ctx: AgentContext) -> dict[str, Any]:
    child = ctx.spawn(kid, {})
    return {"child": child.run_id, "result": child.result()}


def test_rerunning_from_the_spawn_step_starts_a_new_child(machine: StoreMachine) -> None:
    """resume --from-step spawn.kid: a second child runs, and the parent returns its output."""
    worker = Worker([raiser, kid], store=machine)  # registers the agents
    run_id = machine.emit("raise.kid", {}).run_ids[0]
    worker.run(until_idle=True, ready_message=False)
    first = machine.get_run(run_id)
    assert first.status == "completed"
    first_child = first.output["child"]
    machine.resume_run(run_id, from_step="spawn.kid")
    Worker([raiser, kid], store=machine).run(until_idle=True, ready_message=False)
    again = machine.get_run(run_id)
    assert again.status == "completed"
    assert again.output["child"] != first_child
    assert again.output["result"] == {"kid_run": again.output["child"]}
    children = [r for r in machine.list_runs() if r.parent_id == run_id]
    assert len(children) == 2 and {c.status for c in children} == {"completed"}
    machine.check_valid()

"""Each store write applies whole or leaves nothing (issue 12, item 2).

Release 1's group commit caught an operation's exception after its first writes and
committed the shared transaction anyway. Two ways it showed: an emit that failed on
its second agent kept the first agent's run but not the event; a sleep of 1e303
seconds kept the run ``sleeping`` with its lease deleted and no timer, so it never
woke and ``check_valid`` itself crashed. The backend-level test with an injected
failure is in ``test_backend.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ironflow import AgentContext, Worker, agent
from ironflow._worker._identity import this_worker
from ironflow.errors import InvalidInputError
from ironflow.store import AgentSpec, LmdbStore, Suspension
from ironflow.store._flowctl import FlowControl
from ironflow.store._machine import StoreMachine


def test_an_emit_that_fails_halfway_leaves_no_run_and_no_event(
    machine: StoreMachine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second agent's run fails to be made: the first agent's run is not kept either."""
    machine.register_agents([AgentSpec("first", ("x.go",)), AgentSpec("second", ("x.go",))])
    made = FlowControl.new_run

    def fail_second(self: FlowControl, txn: Any, spec: AgentSpec, *rest: Any) -> str:
        if spec.id == "second":
            raise RuntimeError("injected after the first agent's run was written")
        return made(self, txn, spec, *rest)

    monkeypatch.setattr(FlowControl, "new_run", fail_second)
    with pytest.raises(RuntimeError, match="injected"):
        machine.emit("x.go", {}, id="E1")
    assert machine.list_runs() == [] and machine.events() == []
    machine.check_valid()
    monkeypatch.undo()
    assert machine.emit("x.go", {}, id="E1").created
    assert sorted(r.agent for r in machine.list_runs()) == ["first", "second"]


@pytest.mark.parametrize("wait", [{"wake_in": 1e303}, {"wake_at": 1e303}, {"wake_in": 1e12}])
def test_a_wake_up_no_timer_can_hold_is_refused_and_the_run_stays_as_it_was(
    machine: StoreMachine, wait: dict[str, float]
) -> None:
    """suspend_run of sleep(1e303): InvalidInputError; the run stays running, leased, valid."""
    machine.register_agents([AgentSpec("a", ("go",))])
    run_id = machine.emit("go", {}).run_ids[0]
    me = this_worker()
    machine.lease_runs(me, ["a"], limit=1, ttl=60)
    sleep = Suspension(kind="sleep", position=0, step_id="sleep", **wait)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="9999"):
        machine.suspend_run(me, run_id, sleep, attempt=1)
    run = machine.get_run(run_id)
    assert run.status == "running" and run.suspension is None
    assert machine.get_lease(run_id) is not None
    machine.check_valid()


@agent(id="sleeps-forever", triggers=["sleep.forever"])
def sleeps_forever(ctx: AgentContext) -> str:
    ctx.sleep(1e303)
    return "woke"


def test_ctx_sleep_of_1e303_fails_the_run_instead_of_losing_it(tmp_path: Path) -> None:
    """The issue's reproduction: the run ends failed, with a clear error; nothing dangles."""
    with LmdbStore(tmp_path / "data", sync=False) as store:
        worker = Worker([sleeps_forever], store=store)
        run_id = store.emit("sleep.forever", {}).run_ids[0]
        worker.run(until_idle=True, ready_message=False)
        run = store.get_run(run_id)
        assert run.status == "failed", run
        assert run.error is not None and "sleep" in (run.error.message + run.error.type).lower()
        assert store.get_lease(run_id) is None
        store.check_valid()

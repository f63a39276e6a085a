"""ctx.approve: a human gate as an ordinary event, answered by `ironflow approve` or anyone."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ironflow import AgentContext, ApproveResult, Worker, agent
from ironflow._agent._primitives import approval_event
from ironflow._cli._main import main
from ironflow.errors import InvalidInputError
from ironflow.store import LmdbStore
from ironflow.testing import FakeClock
from tests.primitives.conftest import emit, serving, wait_status


@agent(id="deployer", triggers=["deploy.requested"])
def deployer(ctx: AgentContext) -> dict[str, Any]:
    answer = ctx.approve("deploy", {"version": ctx.event.data["version"]}, ttl="2h")
    assert isinstance(answer, ApproveResult)
    return {
        "approved": answer.approved,
        "approver": answer.approver,
        "reason": answer.reason,
        "payload": answer.payload,
        "timed_out": answer.timed_out,
    }


@agent(id="async-deployer", triggers=["async.deploy"])
async def async_deployer(ctx: AgentContext) -> bool:
    answer = await ctx.approve("ship")
    return answer.approved


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A data directory the CLI opens (through IRONFLOW_DATA_DIR, no server)."""
    monkeypatch.delenv("IRONFLOW_URL", raising=False)
    path = tmp_path / "data"
    monkeypatch.setenv("IRONFLOW_DATA_DIR", str(path))
    return path


def _waiting_run(path: Path, version: int) -> str:
    """A deployer run left waiting for its approval, with the store closed again."""
    store = LmdbStore(path, sync=False)
    try:
        run_id = emit(store, "deploy.requested", {"version": version}, deployer)
        Worker([deployer], store=store).run(until_idle=True, ready_message=False)
        assert store.get_run(run_id).status == "waiting"
    finally:
        store.close()
    return run_id


def _finish(path: Path, run_id: str) -> Any:
    store = LmdbStore(path, sync=False)
    try:
        Worker([deployer], store=store).run(until_idle=True, ready_message=False)
        run = store.get_run(run_id)
        assert run.status == "completed", run
        store.check_valid()
        return run.output
    finally:
        store.close()


def test_ironflow_approve_answers_a_waiting_run(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`ironflow approve RUN deploy` resumes the run with approved, approver, reason, payload."""
    run_id = _waiting_run(data_dir, 3)
    code, out, _ = run_cli(capsys, "run", "list", "--status", "waiting", "--json")
    assert code == 0 and [r["id"] for r in json.loads(out)] == [run_id]
    code, out, _ = run_cli(capsys, "inspect", run_id)
    assert "approve.deploy: event agent.approve.deploy" in out
    code, out, _ = run_cli(
        capsys, "approve", run_id, "deploy", "--reason", "tests pass", "--approver", "ann"
    )
    assert code == 0 and "deploy approved" in out and "continues now" in out
    assert _finish(data_dir, run_id) == {
        "approved": True,
        "approver": "ann",
        "reason": "tests pass",
        "payload": {"version": 3},
        "timed_out": False,
    }


def test_ironflow_approve_reject(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--reject answers with approved=False and the reason given."""
    run_id = _waiting_run(data_dir, 4)
    code, out, _ = run_cli(capsys, "approve", run_id, "deploy", "--reject", "--reason", "no")
    assert code == 0 and "deploy rejected" in out
    output = _finish(data_dir, run_id)
    assert output["approved"] is False and output["reason"] == "no"
    assert output["timed_out"] is False


def test_approving_a_finished_run_is_a_one_line_error(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run that already finished has nothing to approve: exit 2 and say so."""
    run_id = _waiting_run(data_dir, 5)
    run_cli(capsys, "approve", run_id, "deploy")
    _finish(data_dir, run_id)
    code, _, err = run_cli(capsys, "approve", run_id, "deploy")
    assert code == 2 and "already finished (completed)" in err
    code, _, err = run_cli(capsys, "approve", run_id, "no such name!")
    assert code == 2 and "approval name" in err


def test_an_approval_for_another_run_does_not_count(store: LmdbStore) -> None:
    """The approval event carries the run id; one for another run leaves this one waiting."""
    run_id = emit(store, "deploy.requested", {"version": 1}, deployer)
    with serving(store, [deployer]):
        wait_status(store, run_id, "waiting")
        store.emit(*approval_event("run_someone_else", "deploy"))
        store.emit(*approval_event(run_id, "other-gate"))
        assert store.get_run(run_id).status == "waiting"
        store.emit(*approval_event(run_id, "deploy", approver="bob"))
        run = wait_status(store, run_id, "completed")
    assert run.output["approver"] == "bob"


def test_no_answer_within_the_ttl_times_out(timed_store: LmdbStore, clock: FakeClock) -> None:
    """Past the ttl the result says timed_out, approved False, with the payload asked about."""
    run_id = emit(timed_store, "deploy.requested", {"version": 6}, deployer)
    with serving(timed_store, [deployer]):
        wait_status(timed_store, run_id, "waiting")
        clock.advance("2h")
        run = wait_status(timed_store, run_id, "completed")
    assert run.output == {
        "approved": False,
        "approver": None,
        "reason": None,
        "payload": {"version": 6},
        "timed_out": True,
    }


def test_an_async_agent_awaits_its_approval(store: LmdbStore) -> None:
    """`await ctx.approve(...)` in an async agent suspends and resumes the same way."""
    run_id = emit(store, "async.deploy", {}, async_deployer)
    with serving(store, [async_deployer]):
        wait_status(store, run_id, "waiting")
        store.emit(*approval_event(run_id, "ship"))
        run = wait_status(store, run_id, "completed")
    assert run.output is True


def test_approval_names_are_checked() -> None:
    """An approval name that cannot be part of an event name is refused up front."""
    with pytest.raises(InvalidInputError, match="approval name"):
        approval_event("run_1", "two words")

"""The ironflow command: output shapes, and one-line errors with exit status 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ironflow._cli._main import main
from ironflow._worker._identity import this_worker
from ironflow.store import AgentSpec, LmdbStore, StepRecord
from ironflow.store._flowspec import FlowSpec


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("IRONFLOW_URL", raising=False)
    monkeypatch.delenv("IRONFLOW_SERVER_URL", raising=False)
    path = tmp_path / "data"
    monkeypatch.setenv("IRONFLOW_DATA_DIR", str(path))
    s = LmdbStore(path)
    s.register_agents([AgentSpec("doc-processor", ("doc.received",))])
    s.close()
    return path


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_emit_prints_event_and_run_ids(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """emit starts the triggered run and says so; --json gives both ids."""
    code, out, _ = run_cli(capsys, "emit", "doc.received", "--data", '{"docId":"doc-1"}')
    assert code == 0
    assert out.splitlines()[0].startswith("event evt_")
    assert out.splitlines()[1].startswith("run run_")
    code, out, _ = run_cli(capsys, "emit", "doc.received", "--id", "k1", "--json")
    first = json.loads(out)
    code, out, _ = run_cli(capsys, "emit", "doc.received", "--id", "k1", "--json")
    again = json.loads(out)
    assert first["run_ids"] == again["run_ids"] and again["created"] is False


def test_emit_without_a_matching_agent_warns(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An event no agent listens for is stored, with a warning saying why nothing ran."""
    code, _, err = run_cli(capsys, "emit", "nobody.listens")
    assert code == 0
    assert "no agent is triggered by 'nobody.listens'" in err
    # What does listen, and the likeliest typo, whether or not the command waits.
    for wait in ([], ["--wait"]):
        code, _, err = run_cli(capsys, "emit", "doc.recieved", *wait)
        assert code == (1 if wait else 0)
        assert "(did you mean 'doc.received'?)" in err
        assert "the registered agents listen for: doc.received (doc-processor)" in err


def test_emit_rejected_by_a_filter_names_the_agent_whose_filter_did_not_match(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An agent is triggered by order.* but its filter said no: the warning says that,
    not that no agent is triggered."""
    s = LmdbStore(data_dir)
    s.register_agents(
        [AgentSpec("vip-orders", ("order.*",), flow=FlowSpec(filter='data.tier == "vip"'))]
    )
    s.close()
    code, out, err = run_cli(capsys, "emit", "order.created", "--data", '{"tier": "basic"}')
    assert code == 0 and out.startswith("event evt_")
    assert "no agent is triggered" not in err
    assert (
        "warning: no run started: the filter of agent 'vip-orders' (data.tier == \"vip\") "
        "did not match"
    ) in err
    code, out, err = run_cli(capsys, "emit", "order.created", "--data", '{"tier": "vip"}')
    assert code == 0 and "run run_" in out and err == ""


@pytest.mark.parametrize(("data", "kind"), [("[1,2]", "an array"), ('"str"', "a string")])
def test_emit_refuses_data_that_is_not_an_object(
    data_dir: Path, capsys: pytest.CaptureFixture[str], data: str, kind: str
) -> None:
    """--data must be a JSON object: anything else exits 2 saying so, and stores nothing."""
    code, out, err = run_cli(capsys, "emit", "doc.received", "--data", data)
    assert code == 2 and out == ""
    assert f"event 'doc.received' data must be a JSON object, not {kind}" in err
    assert '{"value": ' in err
    code, out, _ = run_cli(capsys, "run", "list", "--json")
    assert json.loads(out) == []


def test_run_list_json_shape_newest_first(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """run list --json is an array, newest first, with the documented fields."""
    for i in range(3):
        run_cli(capsys, "emit", "doc.received", "--data", json.dumps({"i": i}))
    code, out, _ = run_cli(capsys, "run", "list", "--json", "--limit", "2")
    runs = json.loads(out)
    assert code == 0 and len(runs) == 2
    assert [r["event"]["data"]["i"] for r in runs] == [2, 1]
    for key in ("id", "agent", "status", "event", "output", "error", "created_at", "updated_at"):
        assert key in runs[0]
    assert runs[0]["status"] == "pending"
    code, out, _ = run_cli(capsys, "run", "list")
    assert out.splitlines()[0].split() == ["ID", "AGENT", "STATUS", "ATTEMPT", "CREATED", "EVENT"]


def test_inspect_shows_steps_and_orphaned_runs(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """inspect --json carries the steps; a run held by a dead worker reads as orphaned."""
    run_cli(capsys, "emit", "doc.received")
    s = LmdbStore(data_dir)
    run_id = s.list_runs()[0].id
    worker = this_worker()
    s.lease_runs(worker, ["doc-processor"], limit=1, ttl=-1)  # a lapsed lease
    s.record_step(
        worker,
        StepRecord(run_id, 0, "tool.ocr", "completed", {"image_url": "u"}, {"text": "t"}, 1.0, 1.5),
    )
    s.close()
    code, out, _ = run_cli(capsys, "inspect", run_id, "--json")
    obj = json.loads(out)
    assert code == 0
    assert obj["status"] == "running" and obj["orphaned"] is True
    assert obj["steps"][0]["id"] == "tool.ocr" and obj["steps"][0]["duration_ms"] == 500.0
    code, out, _ = run_cli(capsys, "inspect", run_id)
    assert "running (orphaned)" in out and "tool.ocr" in out
    code, out, _ = run_cli(capsys, "run", "list")
    assert "running (orphaned)" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["emit", "x", "--data", "{bad"], "--data is not valid JSON"),
        (["inspect", "run_nope"], "no run with id 'run_nope'"),
        (["run", "list", "--limit", "0"], "--limit must be at least 1"),
        (["run", "cancel", "run_nope"], "no run with id"),
        (["emit", "x", "--id", "k" * 300], "event id must be"),
        (
            ["run", "list", "--store", "http://me:pw@127.0.0.1:9123"],
            "server's address: to go through `ironflow serve`, set "
            "IRONFLOW_URL=http://127.0.0.1:9123 and give no --store",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    data_dir: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    """Each mistake gets one line naming the fix, status 2, no traceback."""
    code, _, err = run_cli(capsys, *argv)
    assert code == 2
    assert message in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_missing_data_directory_is_explained(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reading commands do not create an empty store; they say where they looked."""
    monkeypatch.delenv("IRONFLOW_URL", raising=False)
    code, _, err = run_cli(capsys, "run", "list", "--data-dir", str(tmp_path / "none"))
    assert code == 2 and "no Ironflow data directory at" in err


def test_every_command_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    """--help works on each command and says what it does."""
    for argv in (
        ["--help"],
        ["emit", "--help"],
        ["run", "list", "--help"],
        ["run", "cancel", "--help"],
        ["inspect", "--help"],
        ["worker", "--help"],
    ):
        code, out, _ = run_cli(capsys, *argv)
        assert code == 0 and "usage:" in out


def test_every_argument_and_command_says_what_it_is() -> None:
    """No blank line in any --help: each command has a description, each argument (the
    RUN_ID and NAME positionals too) a help text."""
    import argparse

    from ironflow._cli._main import build_parser

    missing = []

    def walk(parser: argparse.ArgumentParser, path: str) -> None:
        if path and not parser.description:
            missing.append(f"{path}: no description")
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, f"{path} {name}".strip())
            elif not action.help:
                missing.append(f"{path} {action.dest}: no help")

    walk(build_parser(), "")
    assert missing == []


@pytest.mark.parametrize(
    ("module", "message"),
    [
        ("no_such_module_xyz", "not found"),
        ("tests/unit/_broken_agent_module.py", "failed to import: ZeroDivisionError"),
        ("json", "defines no @agent functions"),
    ],
)
def test_worker_with_a_bad_module_exits_2_with_one_line(
    tmp_path: Path, module: str, message: str
) -> None:
    """A worker module that does not import (or defines nothing) is a one-line error."""
    proc = subprocess.run(
        [sys.executable, "-m", "ironflow.run", "worker", module, "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr

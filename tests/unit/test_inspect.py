"""A failed run says where it failed; retries say why and when the next try runs.

The worker log and ``ironflow inspect`` show the user's innermost frame (file, line and
the line of code); ``inspect --traceback`` shows the whole traceback; a retried tool
logs each failed try. A run's *attempt* and a step's *try* are named apart.
"""

from __future__ import annotations

import json
import logging
import traceback
from pathlib import Path
from typing import Any

import pytest

from ironflow import AgentContext, LmdbStore, Worker, agent, tool
from ironflow._cli._main import main as cli_main
from ironflow._pure._frames import user_frame
from ironflow.store import FINISHED

THIS_FILE = Path(__file__).resolve()


def _line_of(text: str) -> int:
    """The line number in this file of the first line containing ``text``."""
    lines = THIS_FILE.read_text().splitlines()
    return next(
        i for i, line in enumerate(lines, start=1) if text in line and "_line_of" not in line
    )


@tool
def classify(text: str) -> dict[str, Any]:
    return {"category": text["category"]}  # type: ignore[index]  # the bug under test


FLAKY: dict[str, int] = {}


@tool(retries=2, backoff="10ms")
def notify(key: str) -> str:
    FLAKY[key] = FLAKY.get(key, 0) + 1
    if FLAKY[key] < 3:
        raise ConnectionError(f"connection refused ({FLAKY[key]})")
    return "sent"


@agent(id="inspect-buggy", triggers=["inspect.buggy"])
def buggy(ctx: AgentContext) -> Any:
    notify(key=ctx.run_id)
    return classify(text="an invoice")


def run_to_the_end(data_dir: Path, caplog: pytest.LogCaptureFixture) -> str:
    """Emit one event and serve it (a new worker per wake-up) until the run finishes."""
    with LmdbStore(data_dir, sync=False) as store:
        Worker([buggy], store=store).run(until_idle=True, ready_message=False)
        run_id = store.emit("inspect.buggy", {}).run_ids[0]
        with caplog.at_level(logging.INFO, logger="ironflow"):
            for _ in range(200):
                Worker([buggy], store=store).run(until_idle=True, ready_message=False)
                if store.get_run(run_id).status in FINISHED:
                    break
        assert store.get_run(run_id).status == "failed"
    return run_id


def inspect(capsys: pytest.CaptureFixture[str], data_dir: Path, *args: str) -> str:
    assert cli_main(["inspect", *args, "--data-dir", str(data_dir)]) == 0
    return capsys.readouterr().out


def test_the_worker_log_and_inspect_show_the_users_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    """The TypeError is shown at this file's `classify` line, with the code, in both places."""
    data_dir = tmp_path / "data"
    run_id = run_to_the_end(data_dir, caplog)
    line = _line_of('return {"category": text["category"]}')
    where = f'test_inspect.py:{line} in classify: return {{"category": text["category"]}}'

    logged = [r.getMessage() for r in caplog.records if r.name == "ironflow.worker"]
    assert any("failed at tool.classify: TypeError" in m for m in logged), logged
    assert any("raised at" in m and where in m for m in logged), logged

    out = inspect(capsys, data_dir, run_id)
    assert "error    TypeError: string indices must be integers" in out
    assert out.count(where) == 2, out  # under the run's error and under the failed step
    assert "Traceback (most recent call last)" not in out
    assert f"ironflow inspect {run_id} --traceback" in out


def test_inspect_traceback_prints_each_failure_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    """--traceback adds the whole traceback of the step and of each failed try."""
    data_dir = tmp_path / "data"
    run_id = run_to_the_end(data_dir, caplog)
    out = inspect(capsys, data_dir, run_id, "--traceback")
    assert out.count("Traceback (most recent call last)") == 3, out  # 2 tries + the step
    assert "traceback of tool.notify, try 1:" in out
    assert "traceback of tool.classify:" in out
    assert "ConnectionError: connection refused (2)" in out
    # --json always carried it; it still does.
    obj = json.loads(inspect(capsys, data_dir, run_id, "--json"))
    assert "Traceback" in obj["error"]["traceback"]


def test_a_failed_try_is_logged_with_why_and_when_the_next_runs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`tool.notify: try 1 of 3 failed: ConnectionError: ...; next try in ...`, per try."""
    run_to_the_end(tmp_path / "data", caplog)
    messages = [r.getMessage() for r in caplog.records]
    tries = [m for m in messages if "tool.notify: try" in m and "failed" in m]
    assert len(tries) == 2, messages
    assert "try 1 of 3 failed: ConnectionError: connection refused (1); next try in" in tries[0]
    assert "try 2 of 3 failed: ConnectionError: connection refused (2); next try in" in tries[1]
    # The wake-up for the next try says which try it is, not "restarting from the top".
    assert any("try 2 of tool.notify" in m for m in messages), messages
    assert not any("restarting from the top" in m for m in messages), messages


def test_inspect_names_the_runs_attempt_and_the_steps_try_apart(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    """The retried step reads `attempt 3, try 3`, and a legend says what each counts."""
    data_dir = tmp_path / "data"
    run_id = run_to_the_end(data_dir, caplog)
    out = inspect(capsys, data_dir, run_id)
    step_line = next(line for line in out.splitlines() if "tool.notify" in line)
    assert "attempt 3, try 3  worker " in step_line, step_line
    assert "try 1 failed: ConnectionError" in out
    assert "attempt N: the run's Nth execution" in out and "try N: a retried step's" in out


def test_inspect_names_the_worker_that_recorded_each_step(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each step line ends with the id of the worker that recorded it."""
    data_dir = tmp_path / "data"
    run_id = run_to_the_end(data_dir, caplog)
    with LmdbStore(data_dir, sync=False) as store:
        steps = store.get_steps(run_id)
    assert steps and all(s.worker for s in steps)
    out = inspect(capsys, data_dir, run_id)
    for s in steps:
        line = next(line for line in out.splitlines() if f"#{s.position} " in line)
        assert line.endswith(f"worker {s.worker}"), line


def _raise_in_json() -> None:
    json.loads("{not json")


def test_the_users_frame_skips_the_standard_library_and_ironflow() -> None:
    """An error raised inside json.loads points at the user's call; none without a traceback."""
    try:
        _raise_in_json()
    except ValueError as exc:
        text = "".join(traceback.format_exception(exc))
    frame = user_frame(text)
    assert frame is not None
    assert Path(frame.file).resolve() == THIS_FILE
    assert frame.function == "_raise_in_json"
    assert frame.line == _line_of('json.loads("{not json")')
    assert frame.code == 'json.loads("{not json")'
    assert user_frame(None) is None and user_frame("") is None
    assert user_frame("ValueError: no frames at all") is None

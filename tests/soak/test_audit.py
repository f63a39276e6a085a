"""The soak's audit itself: it must catch what it claims to catch, or its PASS means nothing."""

from __future__ import annotations

import os
from pathlib import Path

from ironflow.store import StepRecord
from tests.soak.harness import Report, Soak


def soak(tmp_path: Path) -> Soak:
    return Soak(seconds=0, root=tmp_path, log=lambda _: None)


def write_log(s: Soak, pid: int, *lines: bytes) -> None:
    with open(s.exec_dir / f"exec-{pid}.log", "ab") as f:
        for line in lines:
            f.write(line)


def step(nonce: str, ended_at: float = 100.0) -> StepRecord:
    output = {"value": 1, "exec": {"pid": 1, "nonce": nonce}}
    return StepRecord("run_a", 0, "tool.fetch", "completed", {}, output, 99.0, ended_at)


def audit(s: Soak, record: StepRecord) -> Report:
    found = s.executions().get(("run_a", "tool.fetch"), [])
    s._audit_step(s.report, "run_a", record, found)
    return s.report


def test_a_torn_last_line_is_ignored_and_counted(tmp_path: Path) -> None:
    """A line cut short by kill -9 (no trailing ' .') neither counts nor breaks parsing."""
    s = soak(tmp_path)
    write_log(s, 11, b"X run_a tool.fetch 11 aaa 99.5 .\n", b"X run_a tool.fetch 11 bb")
    assert s.executions() == {("run_a", "tool.fetch"): [(11, "aaa", 99.5)]}
    assert s.report.torn_lines == 1


def test_a_rerun_in_a_killed_process_is_allowed_and_counted(tmp_path: Path) -> None:
    """The in-flight execution of a killed worker plus the recorded one: passes, 1 extra."""
    s = soak(tmp_path)
    s.killed_pids.add(11)
    write_log(s, 11, b"X run_a tool.fetch 11 aaa 99.1 .\n")
    write_log(s, 12, b"X run_a tool.fetch 12 bbb 99.5 .\n")
    report = audit(s, step("bbb"))
    assert report.problems == []
    assert (report.steps_reexecuted, report.extra_executions) == (1, 1)


def test_a_rerun_by_a_live_process_is_caught(tmp_path: Path) -> None:
    """A second execution by a worker that was never killed is a completed step run again."""
    s = soak(tmp_path)
    write_log(s, 12, b"X run_a tool.fetch 12 aaa 99.1 .\n", b"X run_a tool.fetch 12 bbb 99.5 .\n")
    problems = audit(s, step("bbb")).problems
    assert any("never killed" in p for p in problems)
    assert any("more than once" in p for p in problems)


def test_an_execution_after_the_record_is_caught(tmp_path: Path) -> None:
    """An execution that started after the step was recorded ran a completed step again."""
    s = soak(tmp_path)
    s.killed_pids.add(11)
    write_log(s, 11, b"X run_a tool.fetch 11 aaa 100.5 .\n")
    write_log(s, 12, b"X run_a tool.fetch 12 bbb 99.5 .\n")
    assert any("after it was recorded" in p for p in audit(s, step("bbb")).problems)


def test_a_record_no_execution_produced_is_caught(tmp_path: Path) -> None:
    """A recorded output whose execution was never logged means the audit lost track."""
    s = soak(tmp_path)
    write_log(s, 12, b"X run_a tool.fetch 12 aaa 99.5 .\n")
    assert any("no logged execution" in p for p in audit(s, step("zzz")).problems)
    assert os.listdir(s.exec_dir) == ["exec-12.log"]

"""The pytest plugin: its fixtures reach any project through the pytest11 entry point."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

PROJECT_TEST = """
import pytest
from ironflow import AgentContext, agent, tool

@tool
def greet(name: str) -> str:
    return f"hello {name}"

@agent(id="sleepy", triggers=["sleepy.go"])
def sleepy(ctx: AgentContext) -> dict:
    first = greet(name=ctx.event.data["name"])
    ctx.sleep("7d")
    ok = ctx.approve("send", {"text": first})
    return {"text": first, "sent": ok.approved}

def test_runs_to_the_end_in_no_time(ironflow_worker, ironflow_clock, ironflow_store):
    start = ironflow_clock()
    run = ironflow_worker.run(sleepy, {"name": "ann"}, approve=lambda name, payload: True)
    assert run.output == {"text": "hello ann", "sent": True}
    assert ironflow_clock() - start >= 7 * 86400
    assert ironflow_store.get_run(run.id).status == "completed"

@pytest.mark.ironflow_lmdb
def test_crash_matrix(ironflow_crash_matrix):
    report = ironflow_crash_matrix(sleepy, {"name": "bo"}, approve=lambda name, payload: True)
    assert report.passed and len(report.cases) >= 7
"""


def test_a_project_gets_the_fixtures_from_the_entry_point(tmp_path: Path) -> None:
    """A fresh pytest run in another directory: no conftest, only the installed plugin."""
    (tmp_path / "test_project.py").write_text(textwrap.dedent(PROJECT_TEST))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--strict-markers", "-s"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 passed" in done.stdout
    assert "crash matrix of sleepy:" in done.stdout and "all survived" in done.stdout

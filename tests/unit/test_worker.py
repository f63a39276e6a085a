"""The Worker's lifecycle as a user drives it from Python."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ironflow import AgentContext, LmdbStore, Worker, WorkerStoppedError, agent


@agent(id="lifecycle-echo", triggers=["echo"])
def echo(ctx: AgentContext) -> Any:
    return ctx.event.data


def test_run_twice_raises_instead_of_leaving_runs_pending(store: LmdbStore) -> None:
    """A second Worker.run() says a worker serves once; a new Worker on the store serves."""
    worker = Worker([echo], store=store)
    worker.run(until_idle=True, ready_message=False)
    run_id = store.emit("echo", {"n": 1}).run_ids[0]
    with pytest.raises(WorkerStoppedError, match="new Worker") as caught:
        worker.run(until_idle=True, ready_message=False)
    assert isinstance(caught.value, RuntimeError)
    assert store.get_run(run_id).status == "pending"
    Worker([echo], store=worker.store).run(until_idle=True, ready_message=False)
    assert store.get_run(run_id).status == "completed"


def _worker_options(parser: argparse.ArgumentParser) -> dict[str, Any]:
    """The worker subcommand's arguments: each one's flags, default and help."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    worker = sub.choices["worker"]
    return {
        a.dest: (tuple(a.option_strings), a.default, a.help)
        for a in worker._actions
        if a.dest != "help"
    }


def test_ironflow_worker_and_python_m_ironflow_run_worker_take_the_same_arguments() -> None:
    """One parser for both spellings: --lease-ttl, --quiet and --pid-file exist under each."""
    from ironflow import run
    from ironflow._cli._main import build_parser

    cli, module = _worker_options(build_parser()), _worker_options(run._parser())
    assert cli == module
    assert {"lease_ttl", "quiet", "pid_file", "concurrency", "data_dir", "module"} <= set(cli)


def test_a_pid_file_of_a_running_process_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--pid-file naming a live process: exit 2 before serving; a dead pid's file is reused."""
    from ironflow import run
    from ironflow._cli._worker import _check_pid_file

    pid_file = tmp_path / "worker.pid"
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        pid_file.write_text(f"{other.pid}\n")
        argv = ["worker", "tests.unit.test_worker", "--pid-file", str(pid_file)]
        assert run.main([*argv, "--data-dir", str(tmp_path / "data")]) == 2
        err = capsys.readouterr().err
        assert f"holds pid {other.pid}, which is running" in err and err.count("\n") == 1
    finally:
        os.kill(other.pid, signal.SIGKILL)
        other.wait()
    _check_pid_file(pid_file)  # its process is gone: the next worker may take the file
    pid_file.write_text("not a pid\n")
    with pytest.raises(Exception, match="does not hold a pid"):
        _check_pid_file(pid_file)

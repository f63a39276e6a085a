"""ironflow replay and replay_history: today's code against a record, nothing run."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ironflow.errors import NonDeterminismError
from ironflow.store import LmdbStore
from ironflow.store._history import dump_history, export_history
from ironflow.testing import replay_history
from tests.debug import agents
from tests.debug._serve import parent_run
from tests.debug.test_history import cli

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def history_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An exported completed debug-parent run (with its child), as a file."""
    monkeypatch.delenv("IRONFLOW_URL", raising=False)
    with LmdbStore(tmp_path / "data", sync=False) as store:
        run = parent_run(store)
        assert run.status == "completed", run.error
        path = tmp_path / "run.json"
        dump_history(export_history(store, run.id), path)
    return path


def changed_module(tmp_path: Path, name: str, body: str) -> Path:
    """A module defining debug-parent anew (the tools and child come from the agents)."""
    path = tmp_path / f"{name}.py"
    path.write_text(
        textwrap.dedent(
            """
            from ironflow import agent, Memory
            from tests.debug.agents import child, fetch, flaky, notes

            @agent(id="debug-parent", triggers=["debug.parent"],
                   memory=Memory(stream="debug-notes", projection="debug-notes"))
            def parent(ctx):
            """
        )
        + textwrap.indent(textwrap.dedent(body), "    ")
    )
    return path


def test_the_same_code_fits_and_runs_nothing(
    history_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Exit 0, each step printed as it replays, child included, no tool body called."""
    agents.CALLS.clear()
    code, out, err = cli(capsys, "replay", str(history_file), "--module", "tests.debug.agents")
    assert code == 0, out + err
    assert "replaying run " in out and "replaying child run " in out
    for step in ("tool.fetch", "tool.flaky", "memory.append", "spawn.debug-child", "tool.double"):
        assert f" {step}  → " in out
    assert out.rstrip().splitlines()[-1].startswith("fits: ")
    assert agents.CALLS == {}


def test_a_changed_input_exits_1_with_both_calls_and_a_diff(
    history_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    module = changed_module(
        tmp_path,
        "changed_input",
        """
        page = fetch(url=ctx.event.data["url"] + "?v=2")
        return page
        """,
    )
    agents.CALLS.clear()
    code, out, _ = cli(capsys, "replay", str(history_file), "--module", str(module))
    assert code == 1
    assert "does not fit at step position 0" in out
    assert "recorded  'tool.fetch' with input" in out
    assert '-  "url": "https://example.com/a"' in out
    assert '+  "url": "https://example.com/a?v=2"' in out
    assert "NonDeterminismError" in out and agents.CALLS == {}


def test_a_new_step_after_a_completed_run_does_not_fit(
    history_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The record says the run completed; a call past it is a divergence, and is not run."""
    module = changed_module(
        tmp_path,
        "one_more",
        """
        page = fetch(url=ctx.event.data["url"])
        shout = flaky(key="k")
        ctx.memory.append("note.added", {"key": "first", "value": page["words"]})
        kid = ctx.spawn(child, {"n": page["words"]}).result()
        ctx.memory.append("note.added", {"key": "second", "value": kid["doubled"]})
        fetch(url="https://example.com/more")
        return {}
        """,
    )
    agents.CALLS.clear()
    code, out, _ = cli(capsys, "replay", str(history_file), "--module", str(module))
    assert code == 1 and agents.CALLS == {}
    assert "does not fit at step position 8" in out
    assert "no further step (the run completed)" in out and "'tool.fetch#2'" in out


def test_a_different_output_does_not_fit(history_file: Path, tmp_path: Path) -> None:
    """Every step fits but the handler returns something else: an AssertionError, diffed."""
    module = changed_module(
        tmp_path,
        "other_output",
        """
        page = fetch(url=ctx.event.data["url"])
        shout = flaky(key="k")
        ctx.memory.append("note.added", {"key": "first", "value": page["words"]})
        kid = ctx.spawn(child, {"n": page["words"]}).result()
        ctx.memory.append("note.added", {"key": "second", "value": kid["doubled"]})
        return {"words": page["words"]}
        """,
    )
    from ironflow._worker._loader import load_module

    fn = load_module(str(module)).parent
    with pytest.raises(AssertionError, match="every recorded step fits, but the run completed"):
        replay_history(history_file, fn, agents=[agents.child])


def test_replay_history_raises_the_divergence(history_file: Path, tmp_path: Path) -> None:
    from ironflow._worker._loader import load_module

    module = changed_module(
        tmp_path,
        "skips_flaky",
        """
        page = fetch(url=ctx.event.data["url"])
        return page
        """,
    )
    with pytest.raises(NonDeterminismError) as caught:
        replay_history(history_file, load_module(str(module)).parent)
    assert caught.value.position == 1 and caught.value.inputs is None
    report = replay_history(history_file, agents.parent, agents=[agents.child])
    assert [r.history.run.agent for r in report.runs] == ["debug-parent", "debug-child"]


def test_a_run_id_in_the_store_replays_too(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("IRONFLOW_URL", raising=False)
    with LmdbStore(tmp_path / "data", sync=False) as store:
        run = parent_run(store)
    argv = [
        "replay",
        run.id,
        "--module",
        "tests.debug.agents",
        "--data-dir",
        str(tmp_path / "data"),
    ]
    code, out, _ = cli(capsys, *argv)
    assert code == 0 and "fits: " in out


def test_bad_arguments_are_one_line(history_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(capsys, "replay", str(history_file), "--module", "ironflow.testing")
    assert code == 2 and "defines no @agent 'debug-parent'" in err
    argv = ["replay", str(history_file), "--module", "tests.debug.agents", "--break-at", "tool.x"]
    code, _, err = cli(capsys, *argv)
    assert code == 2 and "--break-at 'tool.x': run " in err and "tool.fetch, tool.flaky" in err


def test_break_at_stops_in_pdb_with_input_and_output(history_file: Path) -> None:
    """Driven through stdin: pdb stops before tool.flaky returns; input and output print."""
    commands = "p input\np output\nc\n"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("IRONFLOW_URL", None)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "ironflow._cli._main",
            "replay",
            str(history_file),
            "--module",
            "tests.debug.agents",
            "--break-at",
            "tool.flaky",
        ],
        input=commands,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=60,
    )
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert "--break-at tool.flaky: run " in out and "(Pdb)" in out
    assert "{'key': 'k'}" in out  # p input
    assert "'K'" in out  # p output
    assert "goes to your code, tests/debug/agents.py" in out
    assert out.rstrip().splitlines()[-1].startswith("fits: ")

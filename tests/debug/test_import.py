"""ironflow run import: a history loaded into another store, whole or not at all."""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest

from ironflow import Client
from ironflow.errors import InvalidInputError
from ironflow.server import BackgroundServer
from ironflow.store import LmdbStore, Run
from ironflow.store._history import History, dump_history, export_history
from ironflow.testing import MemoryStore, replay_history
from tests.debug import agents
from tests.debug._serve import parent_run
from tests.debug.test_history import cli


@pytest.fixture
def history(tmp_path: Path) -> History:
    with LmdbStore(tmp_path / "source", sync=False) as store:
        run = parent_run(store)
        assert run.status == "completed"
        return export_history(store, run.id)


def test_an_import_gives_back_the_runs_steps_children_and_memory(history: History) -> None:
    target = MemoryStore()
    run = target.import_history(history)
    assert (
        run.id == history.run.id and run.status == "completed" and run.output == history.run.output
    )
    again = export_history(target, run.id)
    assert again.steps == history.steps
    [kid] = again.children
    assert kid.run.id == history.children[0].run.id and kid.steps == history.children[0].steps
    # The memory events are on their stream, once each.
    events = target.read_stream("debug-notes")
    assert [(e.name, e.data) for e in events] == [(e.name, e.data) for e in history.memory]
    target.check_valid()
    # A replay of the imported run fits as the original did.
    replay_history(again, agents.parent, agents=[agents.child])


def test_a_taken_id_refuses_the_whole_import_and_new_ids_remap_children(
    history: History,
) -> None:
    target = MemoryStore()
    target.import_history(history)
    with pytest.raises(
        InvalidInputError, match="already in this store; import the history under new"
    ):
        target.import_history(history)
    assert len(target.list_runs(limit=10)) == 2  # nothing half-written
    copy = target.import_history(history, new_ids=True)
    assert copy.id != history.run.id
    spawn = next(s for s in target.get_steps(copy.id) if s.id == "spawn.debug-child")
    child = target.get_run(spawn.output["run_id"])
    assert child.id != history.children[0].run.id and child.parent_id == copy.id
    # Appended once per imported run: keyed by the run and its step.
    assert len(target.read_stream("debug-notes")) == 2 * len(history.memory)
    target.check_valid()


def test_an_unfinished_run_is_imported_paused(history: History) -> None:
    unfinished = attrs.evolve(
        history,
        run=attrs.evolve(history.run, status="running", output=None),
        steps=history.steps[:3],
        memory=history.memory[:1],
        children=(),
    )
    target = MemoryStore()
    run = target.import_history(unfinished)
    assert run.status == "paused" and [s.id for s in target.get_steps(run.id)] == [
        "tool.fetch",
        "tool.flaky",
        "memory.append",
    ]
    target.check_valid()
    resumed = target.resume_run(run.id)
    assert resumed.status == "pending"
    target.check_valid()


def test_the_cli_imports_into_a_data_directory_and_through_a_server(
    history: History,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("IRONFLOW_URL", raising=False)
    path = tmp_path / "run.json"
    dump_history(history, path)
    dev = str(tmp_path / "dev")
    code, out, err = cli(capsys, "run", "import", str(path), "--data-dir", dev)
    assert code == 0, err
    summary = "(completed, 9 step(s), 1 child run(s), 2 memory append(s))"
    assert f"run {history.run.id} {summary} imported under its own id" in out
    code, _, err = cli(capsys, "run", "import", str(path), "--data-dir", dev)
    assert code == 2 and "already in this store" in err
    code, out, _ = cli(capsys, "run", "import", str(path), "--new-id", "--data-dir", dev)
    assert code == 0 and "imported as run_" in out
    code, _, err = cli(capsys, "run", "import", str(tmp_path / "nope.json"), "--data-dir", dev)
    assert code == 2 and "cannot read the history" in err

    with LmdbStore(tmp_path / "served", sync=False) as served, BackgroundServer(served) as url:
        with Client(url=url) as client:
            run: Run = client.store.import_history(history, new_ids=True)
        assert served.get_run(run.id).status == "completed"
        assert len(served.get_steps(run.id)) == len(history.steps)

"""Run histories: export a run with its steps, tries, children and memory; read it back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ironflow._cli._main import main
from ironflow.errors import InvalidInputError
from ironflow.store import LmdbStore
from ironflow.store._history import (
    HISTORY_VERSION,
    export_history,
    history_from_json,
    history_to_json,
    load_history,
)
from tests.debug._serve import parent_run


@pytest.fixture
def finished(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, str]:
    """A data directory holding one completed debug-parent run; its id."""
    monkeypatch.delenv("IRONFLOW_URL", raising=False)
    path = tmp_path / "data"
    with LmdbStore(path, sync=False) as store:
        run = parent_run(store)
        assert run.status == "completed", run.error
    return path, run.id


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_export_holds_run_steps_tries_children_and_memory(
    finished: tuple[Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The file has everything a replay or an import needs, and reads back as it was."""
    path, run_id = finished
    out_file = tmp_path / "run.json"
    argv = ["run", "export", run_id, "-o", str(out_file), "--data-dir", str(path)]
    code, out, _ = cli(capsys, *argv)
    assert code == 0 and out_file.name in out and "1 child run(s)" in out
    raw = json.loads(out_file.read_text())
    assert raw["format"] == "ironflow.history" and raw["version"] == HISTORY_VERSION
    history = load_history(out_file)
    with LmdbStore(path, sync=False) as store:
        assert history == export_history(store, run_id)
        assert history.run == store.get_run(run_id)
        assert list(history.steps) == store.get_steps(run_id)
    ids = [s.id for s in history.steps]
    assert ids == [
        "tool.fetch",
        "tool.flaky",
        "memory.append",
        "memory.append.wait",
        "spawn.debug-child",
        "spawn.debug-child.result",
        "memory.append#2",
        "memory.append.wait#2",
    ]
    flaky = history.step("tool.flaky")
    assert flaky.tries is not None and flaky.tries[0].error.type == "ConnectionError"
    [kid] = history.children
    assert kid.run.parent_id == run_id and [s.id for s in kid.steps] == ["tool.double"]
    assert [(e.name, e.data["key"]) for e in history.memory] == [
        ("note.added", "first"),
        ("note.added", "second"),
    ]
    assert all(e.stream == "debug-notes" for e in history.memory)


def test_export_to_standard_output(
    finished: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """Without -o the history is printed, and reads back the same."""
    path, run_id = finished
    code, out, _ = cli(capsys, "run", "export", run_id, "--data-dir", str(path))
    assert code == 0
    assert history_from_json(json.loads(out)).run.id == run_id


def test_export_of_an_unknown_run_is_one_line(
    finished: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = finished
    code, _, err = cli(capsys, "run", "export", "run_nope", "--data-dir", str(path))
    assert code == 2 and "no run with id 'run_nope'" in err


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda h: {"format": "something"}, "is not an Ironflow history"),
        (lambda h: {**h, "version": 99}, "version 99 history; this Ironflow reads versions up to"),
        (lambda h: {**h, "version": "1"}, '"version" must be a positive integer'),
        (lambda h: {k: v for k, v in h.items() if k != "run"}, "$.run is missing"),
        (lambda h: {**h, "steps": {}}, "$.steps must be an array, not an object"),
        (
            lambda h: {**h, "steps": [{**h["steps"][0], "position": "x"}]},
            "expected int @ $.steps[0].position",
        ),
        (lambda h: {**h, "steps": h["steps"][::-1]}, "$.steps must be in position order"),
        (
            lambda h: {**h, "steps": [{**h["steps"][0], "run_id": "run_other"}]},
            "$.steps[0].run_id is 'run_other'",
        ),
        (
            lambda h: {**h, "children": [{"run": h["run"]}]},
            "$.children[0] is run",
        ),
    ],
)
def test_a_damaged_history_is_refused_naming_the_field(
    finished: tuple[Path, str], change: object, message: str
) -> None:
    """Never half-read: the error names the file's field at fault."""
    path, run_id = finished
    with LmdbStore(path, sync=False) as store:
        good = history_to_json(export_history(store, run_id))
    with pytest.raises(InvalidInputError) as caught:
        history_from_json(change(good), source="run.json")  # type: ignore[operator]
    assert message in str(caught.value)
    assert str(caught.value).startswith("run.json")


def test_a_file_that_is_not_json_says_where(tmp_path: Path) -> None:
    bad = tmp_path / "run.json"
    bad.write_text('{"format": ')
    with pytest.raises(InvalidInputError, match=r"run.json is not JSON \(.* at line 1"):
        load_history(bad)
    with pytest.raises(InvalidInputError, match="cannot read the history"):
        load_history(tmp_path / "missing.json")

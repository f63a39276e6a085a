"""Golden histories: runs recorded by earlier code, replayed against today's.

Each file under ``histories/`` is a run recorded once (``python -m tests.golden.record``)
and never edited. Replaying it against the agents in ``agents.py`` must call every
recorded step again, in order, with the recorded input, and end the run as it ended,
running no tool and writing nothing. So a change to the stored format, to step ids or
positions, or to replay itself fails here. The files under ``diverged/`` were recorded
by code that has since changed without ``ctx.patched``: replaying them must raise
:class:`~ironflow.NonDeterminismError`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ironflow import NonDeterminismError
from ironflow._agent._dsl import AgentDefinition
from ironflow.store._history import HISTORY_FORMAT, load_history
from ironflow.testing import replay_history
from tests.golden.agents import AGENTS
from tests.golden.record import SCENARIOS, main

HERE = Path(__file__).resolve().parent
HISTORIES = sorted((HERE / "histories").glob("*.json"))
DIVERGED = sorted((HERE / "diverged").glob("*.json"))
BY_ID: dict[str, Any] = {AgentDefinition.must_from_fn(a).id: a for a in AGENTS}


def _name(path: Path) -> str:
    return path.name


@pytest.mark.parametrize("path", HISTORIES, ids=_name)
def test_a_recorded_history_replays_against_todays_code(path: Path) -> None:
    """Every recorded step of the run (and of its child runs) is met again, in order and
    with its input, and the run ends as recorded: same status, output or error."""
    history = load_history(path)
    report = replay_history(history, BY_ID[history.run.agent], agents=AGENTS)
    assert [r.history.run.id for r in report.runs] == [h.run.id for h in history.walk()]
    assert report.skipped == ()
    for run in report.runs:
        recorded = run.history.run
        assert run.fits and run.note is None, run.note
        assert sorted(s.position for s in run.replayed) == [s.position for s in run.history.steps]
        assert run.outcome.status == recorded.status
        assert run.outcome.output == recorded.output
        if recorded.error is not None:
            assert run.outcome.error is not None
            assert (run.outcome.error.type, run.outcome.error.message) == (
                recorded.error.type,
                recorded.error.message,
            )


@pytest.mark.parametrize("path", DIVERGED, ids=_name)
def test_a_history_of_code_changed_without_a_patch_raises_non_determinism(path: Path) -> None:
    """Code that no longer makes the recorded calls is refused, never replayed half-way."""
    history = load_history(path)
    with pytest.raises(NonDeterminismError) as info:
        replay_history(history, BY_ID[history.run.agent], agents=AGENTS)
    assert info.value.run_id == history.run.id


def test_the_diverged_history_names_the_position_and_both_calls() -> None:
    """golden-diverged recorded add(x=3, y=3) at position 1; today's code calls double."""
    [path] = [p for p in DIVERGED if p.name.startswith("diverged.")]
    with pytest.raises(NonDeterminismError) as info:
        replay_history(path, BY_ID["golden-diverged"])
    assert info.value.position == 1
    assert info.value.recorded == "'tool.add#2'" and info.value.attempted == "'tool.double'"


def test_the_patched_histories_take_the_path_their_code_took() -> None:
    """The run recorded before ctx.patched replays the old branch; the one after, the new."""
    old = replay_history(HERE / "histories" / "patched-old-code.v1.json", BY_ID["golden-patched"])
    new = replay_history(HERE / "histories" / "patched-new-code.v1.json", BY_ID["golden-patched"])
    assert [s.id for s in old.runs[0].replayed] == ["tool.add", "tool.add#2"]
    assert [s.id for s in new.runs[0].replayed] == ["tool.add", "patch.double-it", "tool.double"]


def test_every_scenario_has_its_golden_file_and_every_file_its_scenario() -> None:
    """No scenario left unrecorded, no file whose scenario or format version is unknown."""
    expected = {scenario.path(name) for name, scenario in SCENARIOS.items()}
    assert set(HISTORIES) | set(DIVERGED) == expected
    for path in expected:
        doc = json.loads(path.read_text())
        assert doc["format"] == HISTORY_FORMAT
        assert path.name.endswith(f".v{doc['version']}.json")
        assert doc["run"]["agent"] in BY_ID


def test_the_recorder_never_overwrites_a_golden_history(capsys: pytest.CaptureFixture[str]) -> None:
    """Re-recording an existing scenario is refused and leaves its file as it was."""
    path = SCENARIOS["tools"].path("tools")
    before = path.read_bytes()
    assert main(["tools"]) == 1
    assert "is never re-recorded" in capsys.readouterr().err
    assert path.read_bytes() == before

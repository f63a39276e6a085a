"""ironflow inspect --at: the run as it stood just after a step, or at a time."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ironflow.server._views import iso
from ironflow.store import LmdbStore, Run, StepRecord
from tests.debug._serve import parent_run
from tests.debug.test_history import cli


@pytest.fixture
def done(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, Run, list[StepRecord]]:
    """A data directory with a completed debug-parent run: (dir, run, steps)."""
    monkeypatch.delenv("IRONFLOW_URL", raising=False)
    path = tmp_path / "data"
    with LmdbStore(path, sync=False) as store:
        run = parent_run(store)
        steps = store.get_steps(run.id)
    return str(path), run, steps


def at(capsys: pytest.CaptureFixture[str], data: str, run: Run, moment: str, *more: str) -> dict:
    code, out, err = cli(
        capsys, "inspect", run.id, "--at", moment, "--json", "--data-dir", data, *more
    )
    assert code == 0, err
    return json.loads(out)  # type: ignore[no-any-return]


def test_just_after_a_step_shows_the_steps_so_far_and_the_memory_folded(
    done: tuple[str, Run, list[StepRecord]], capsys: pytest.CaptureFixture[str]
) -> None:
    data, run, _ = done
    obj = at(capsys, data, run, "memory.append", "--module", "tests.debug.agents")
    assert [s["id"] for s in obj["steps"]] == ["tool.fetch", "tool.flaky", "memory.append"]
    assert obj["status"] == "running" and obj["output"] is None
    # The attempt that recorded its latest step then (the retry of tool.flaky was the 2nd).
    assert obj["attempt"] == 2 and obj["orphaned"] is False and obj["worker"] is None
    assert obj["at"]["step"] == "memory.append" and obj["at"]["status_now"] == "completed"
    assert obj["at"]["status_inferred"] is True and obj["children"] == []
    memory = obj["memory"]
    assert memory["projection"] == "debug-notes" and memory["stream"] == "debug-notes"
    assert memory["state"] == {"first": 21} and memory["position"] == 2
    later = at(capsys, data, run, "memory.append#2", "--module", "tests.debug.agents")
    assert later["memory"]["state"] == {"first": 21, "second": 42}
    assert [c["agent"] for c in later["children"]] == ["debug-child"]


def test_without_the_module_it_says_what_is_shown(
    done: tuple[str, Run, list[StepRecord]], capsys: pytest.CaptureFixture[str]
) -> None:
    data, run, _ = done
    obj = at(capsys, data, run, "memory.append")
    assert obj["memory"]["state"] is None and "pass --module MODULE" in obj["memory"]["shown"]
    assert obj["memory"]["appended"] == [
        {"stream": "debug-notes", "name": "note.added", "data": {"key": "first", "value": 21}}
    ]
    code, out, _ = cli(capsys, "inspect", run.id, "--at", "tool.flaky", "--data-dir", data)
    assert code == 0
    assert (
        "just after step tool.flaky was recorded: running (inferred from the records), 2 of 8"
        in out
    )
    assert "tool.fetch" in out and "memory.append" not in out


def test_a_time_inside_a_wait_is_waiting_and_after_the_end_is_final(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The parent suspends only if its child has not finished by the time it asks for the
    # result; when the child is first (the worker runs both at once), the result step is
    # recorded at once, with no time inside it, and the run never waited. Serve runs until
    # one waited (nearly every one does; each run is a few milliseconds).
    monkeypatch.delenv("IRONFLOW_URL", raising=False)
    for attempt in range(20):
        data = str(tmp_path / f"data{attempt}")
        with LmdbStore(data, sync=False) as store:
            run = parent_run(store)
            steps = store.get_steps(run.id)
        wait = next(s for s in steps if s.id == "spawn.debug-child.result")
        if wait.ended_at - wait.started_at > 1e-4:  # room for "+S" to 6 decimals inside
            break
        instant = at(capsys, data, run, f"+{wait.started_at - run.created_at:.6f}")
        assert instant["status"] == "running"  # a result already there is no wait
    else:
        pytest.fail("in 20 runs the child always finished before its parent asked")
    middle = (wait.started_at + wait.ended_at) / 2
    obj = at(capsys, data, run, f"+{middle - run.created_at:.6f}")
    assert obj["status"] == "waiting"
    assert "spawn.debug-child.result" not in [s["id"] for s in obj["steps"]]
    end = at(capsys, data, run, iso(run.updated_at + 1) or "")
    assert end["status"] == "completed" and end["output"] == run.output
    assert len(end["steps"]) == len(steps) and end["at"]["status_inferred"] is False


def test_bad_moments_are_one_line(
    done: tuple[str, Run, list[StepRecord]], capsys: pytest.CaptureFixture[str]
) -> None:
    data, run, _ = done
    code, _, err = cli(capsys, "inspect", run.id, "--at", "tool.nope", "--data-dir", data)
    assert code == 2 and "no step of run" in err and "tool.fetch, tool.flaky" in err
    code, _, err = cli(
        capsys, "inspect", run.id, "--at", "2000-01-01T00:00:00Z", "--data-dir", data
    )
    assert code == 2 and "is before run" in err
    code, _, err = cli(capsys, "inspect", run.id, "--module", "x", "--data-dir", data)
    assert code == 2 and "--module is for --at" in err
    argv = ["inspect", run.id, "--at", "memory.append", "--module", "tests.debug._serve"]
    code, _, err = cli(capsys, *argv, "--data-dir", data)
    assert code == 2 and "defines no @projection named 'debug-notes'" in err

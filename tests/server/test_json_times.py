"""One shape for times: ISO 8601 UTC strings in every JSON output, datetimes in Python.

A run that waited for an approval is the case that used to leak a float: the approve
step records the event it took, with the event's ``ts`` as Unix seconds.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ironflow import AgentContext, LmdbStore, Worker, agent
from ironflow._agent._primitives import approval_event
from ironflow._cli._main import main as cli_main
from ironflow.server import BackgroundServer
from ironflow.server._views import run_with_steps_json
from tests.server.conftest import get_json

ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
#: Keys whose values are times in the views.
TIME_KEYS = {"ts", "created_at", "updated_at", "started_at", "ended_at", "since", "wake_at", "at"}


@agent(id="times-approver", triggers=["times.go"])
def approver(ctx: AgentContext) -> dict[str, Any]:
    answer = ctx.approve("ship", {"n": 1})
    ctx.now()
    return {"approved": answer.approved}


def times_in(value: Any, path: str = "$") -> Iterator[tuple[str, Any]]:
    """Every (path, value) under a time key, however deep (step outputs included)."""
    if isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}"
            if key in TIME_KEYS or key.endswith("_at"):
                yield where, item
            yield from times_in(item, where)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from times_in(item, f"{path}[{i}]")


def assert_iso_times(document: Any, what: str) -> int:
    """Every time in ``document`` is an ISO 8601 UTC string (or null); how many there were."""
    found = list(times_in(document))
    bad = [
        (p, v) for p, v in found if v is not None and not (isinstance(v, str) and ISO_UTC.match(v))
    ]
    assert bad == [], f"{what}: times not in ISO 8601 UTC: {bad}"
    return len(found)


@pytest.fixture
def approved_run(tmp_path: Path) -> tuple[Path, str]:
    """A data directory holding a completed run that waited for, and got, an approval."""
    data_dir = tmp_path / "data"
    with LmdbStore(data_dir, sync=False) as store:
        Worker([approver], store=store).run(until_idle=True, ready_message=False)
        run_id = store.emit("times.go", {}).run_ids[0]
        Worker([approver], store=store).run(until_idle=True, ready_message=False)
        assert store.get_run(run_id).status == "waiting"
        store.emit(*approval_event(run_id, "ship", approver="ana"))
        Worker([approver], store=store).run(until_idle=True, ready_message=False)
        assert store.get_run(run_id).status == "completed"
        store.append_to_stream("times-stream", "noted", {"n": 1})
    return data_dir, run_id


def test_the_approval_event_of_inspect_json_has_an_iso_ts(approved_run: tuple[Path, str]) -> None:
    """The approve step's recorded event shows its ts as ISO 8601, as every other time."""
    data_dir, run_id = approved_run
    with LmdbStore(data_dir) as store:
        obj = run_with_steps_json(store.get_run(run_id), store.get_steps(run_id))
    step = next(s for s in obj["steps"] if s["id"] == "approve.ship")
    assert ISO_UTC.match(step["output"]["ts"]), step["output"]
    assert step["output"]["data"]["approver"] == "ana"
    assert assert_iso_times(obj, "inspect --json") >= 8


def test_every_cli_json_output_shows_times_as_iso(
    approved_run: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """inspect, run list, projection list, emit: --json has no time as a number."""
    data_dir, run_id = approved_run
    for argv in (
        ["inspect", run_id, "--json"],
        ["run", "list", "--json"],
        ["projection", "list", "--json"],
        ["emit", "times.other", "--json"],
    ):
        assert cli_main([*argv, "--data-dir", str(data_dir)]) == 0
        out = capsys.readouterr().out
        assert_iso_times(json.loads(out), " ".join(argv))


def test_every_http_json_output_shows_times_as_iso(approved_run: tuple[Path, str]) -> None:
    """GET /runs, /runs/{id} and /streams/{id}: no time as a number."""
    data_dir, run_id = approved_run
    with LmdbStore(data_dir) as store, BackgroundServer(store) as url:
        for path in ("/runs", f"/runs/{run_id}", "/streams/times-stream"):
            assert assert_iso_times(get_json(url + "/api/v1" + path), path) > 0


def test_records_give_their_times_as_utc_datetimes(approved_run: tuple[Path, str]) -> None:
    """run.created, run.updated, step.started, step.ended, event.time: aware UTC datetimes."""
    data_dir, run_id = approved_run
    with LmdbStore(data_dir) as store:
        run = store.get_run(run_id)
        steps = store.get_steps(run_id)
    moments = [run.created, run.updated, run.event.time]
    moments += [t for s in steps for t in (s.started, s.ended)]
    for moment in moments:
        assert isinstance(moment, dt.datetime) and moment.utcoffset() == dt.timedelta(0)
    assert run.created.timestamp() == pytest.approx(run.created_at)
    assert run.created <= steps[0].started <= steps[-1].ended <= run.updated


def test_a_time_no_date_can_show_is_shown_as_the_nearest_one_not_an_error() -> None:
    """A wake-up stored before durations had a bound (ctx.sleep(1e12): year 33715) is
    shown as the last instant a date holds, so one such run never breaks a listing."""
    from ironflow.store import Event, Run, StepRecord, Suspension

    event = Event(id="evt_1", name="nap", data={}, ts=1.0, seq=1)
    run = Run(
        id="run_far",
        agent="napper",
        status="sleeping",
        event=event,
        created_at=1.0,
        updated_at=1.0,
        suspension=Suspension(
            kind="sleep", position=0, step_id="sleep", since=1.0, wake_at=1e12 + 1.0
        ),
    )
    step = StepRecord(
        run_id="run_far",
        position=0,
        id="tool.x",
        status="completed",
        input=None,
        output=None,
        started_at=-1e13,
        ended_at=1e15,
    )
    shown = run_with_steps_json(run, [step])
    assert shown["suspension"]["wake_at"] == "9999-12-31T23:59:59.999Z"
    assert shown["steps"][0]["started_at"] == "0001-01-01T00:00:00.000Z"
    assert all(ISO_UTC.match(v) for _, v in times_in(shown) if isinstance(v, str))

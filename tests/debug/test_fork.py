"""Forking a run from a step: the store operation, the CLI, Client.runs.fork and HTTP."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from ironflow import Client
from ironflow.errors import InvalidInputError, RunNotFoundError
from ironflow.server import BackgroundServer
from ironflow.store import LmdbStore, Store
from ironflow.testing import Driver, FakeClock, MemoryStore
from tests.debug import matrix_agents
from tests.debug.matrix_agents import journey
from tests.debug.test_history import cli

TRIP = {"trip": "rome"}
YES = {"approve": lambda name, payload: True}


@pytest.fixture(params=["memory", "lmdb"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    clock = FakeClock()
    s: Store = (
        MemoryStore(clock=clock)
        if request.param == "memory"
        else LmdbStore(tmp_path / "data", sync=False, clock=clock)
    )
    s.clock = clock  # type: ignore[attr-defined]
    yield s
    s.close()


def driver(store: Store, approve: bool = True) -> Driver:
    return Driver(store, [journey], clock=store.clock, approve=lambda n, p: approve)  # type: ignore[attr-defined]


def test_a_fork_copies_the_records_before_its_step_and_runs_on(store: Store) -> None:
    original = driver(store).run(journey, TRIP)
    before = store.get_steps(original.id)
    booked = matrix_agents.RUNS.get("book", 0)

    fork = store.fork_run(original.id, from_step="approve.confirm")
    assert fork.id != original.id and fork.status == "pending" and fork.agent == original.agent
    assert fork.forked_from is not None
    assert (fork.forked_from.run_id, fork.forked_from.from_step, fork.forked_from.position) == (
        original.id,
        "approve.confirm",
        2,
    )
    assert fork.event.data == TRIP and fork.event.id != original.event.id
    copied = store.get_steps(fork.id)
    assert [(s.id, s.output) for s in copied] == [(s.id, s.output) for s in before[:2]]
    assert all(s.run_id == fork.id for s in copied)
    # The original is untouched, but for its link to the fork.
    now = store.get_run(original.id)
    assert now.forks == (fork.id,) and store.get_steps(original.id) == before
    assert (now.status, now.output, now.updated_at) == (
        original.status,
        original.output,
        original.updated_at,
    )

    done = driver(store, approve=False).drive(fork.id)
    assert done.status == "completed" and done.output["approved"] is False
    assert matrix_agents.RUNS.get("book", 0) == booked, "a copied step ran again"
    assert [s.id for s in store.get_steps(fork.id)][:2] == ["tool.book", "sleep"]


def test_a_fork_with_new_data_from_the_first_step(store: Store) -> None:
    original = driver(store).run(journey, TRIP)
    fork = store.fork_run(original.id, from_step="tool.book", data={"trip": "oslo"})
    assert store.get_steps(fork.id) == []
    done = driver(store).drive(fork.id)
    assert done.output["booking"] == "B-oslo"


def test_new_data_that_a_copied_step_depended_on_does_not_fit(store: Store) -> None:
    """The copy of tool.book was for rome: the fork for oslo diverges at it, and says so."""
    original = driver(store).run(journey, TRIP)
    fork = store.fork_run(original.id, from_step="sleep", data={"trip": "oslo"})
    done = driver(store).drive(fork.id)
    assert done.status == "failed" and done.error is not None
    assert done.error.type == "NonDeterminismError" and "'oslo'" in done.error.message


def test_bad_forks_are_refused_and_a_repeated_id_forks_once(store: Store) -> None:
    original = driver(store).run(journey, TRIP)
    with pytest.raises(InvalidInputError, match=r"has no step 'nope'; its steps are: tool.book"):
        store.fork_run(original.id, from_step="nope")
    with pytest.raises(RunNotFoundError):
        store.fork_run("run_nope", from_step="sleep")
    with pytest.raises(InvalidInputError, match="JSON object"):
        store.fork_run(original.id, from_step="sleep", data=[1, 2])
    with pytest.raises(InvalidInputError, match="must be a run id"):
        store.fork_run(original.id, from_step="sleep", id="mine")
    first = store.fork_run(original.id, from_step="sleep", id="run_01M8RSZRCGRRNFJ6H9GNRF10WE")
    again = store.fork_run(original.id, from_step="sleep", id="run_01M8RSZRCGRRNFJ6H9GNRF10WE")
    assert first == again and store.get_run(original.id).forks == (first.id,)
    with pytest.raises(InvalidInputError, match="exists already"):
        store.fork_run(original.id, from_step="tool.book", id=first.id)


def test_the_cli_forks_and_inspect_links_both_ways(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("IRONFLOW_URL", raising=False)
    path = str(tmp_path / "data")
    clock = FakeClock()
    with LmdbStore(path, sync=False, clock=clock) as store:
        original = Driver(store, approve=lambda n, p: True, clock=clock).run(journey, TRIP)
    argv = ["run", "fork", original.id, "--from-step", "tool.book", "--data", '{"trip": "lima"}']
    code, out, err = cli(capsys, *argv, "--data-dir", path)
    assert code == 0, err
    assert f"forked from {original.id} at tool.book: 0 record(s) copied, it is pending" in out
    fork_id = out.split()[1]
    code, out, _ = cli(capsys, "inspect", fork_id, "--data-dir", path)
    assert f"forked   from {original.id} at tool.book (#0)" in out
    code, out, _ = cli(capsys, "inspect", original.id, "--json", "--data-dir", path)
    assert json.loads(out)["forks"] == [fork_id]
    code, _, err = cli(capsys, "run", "fork", original.id, "--from-step", "x", "--data-dir", path)
    assert code == 2 and "has no step 'x'" in err
    code, _, err = cli(
        capsys,
        "run",
        "fork",
        original.id,
        "--from-step",
        "sleep",
        "--data",
        "[",
        "--data-dir",
        path,
    )
    assert code == 2 and "--data is not valid JSON" in err


def test_over_http_the_client_and_the_api_fork(tmp_path: Path) -> None:
    clock = FakeClock()
    with LmdbStore(tmp_path / "data", sync=False, clock=clock) as store:
        original = Driver(store, clock=clock, **YES).run(journey, TRIP)  # type: ignore[arg-type]
        with BackgroundServer(store) as url, Client(url=url) as client:
            fork = client.runs.fork(original.id, from_step="sleep", data=None)
            assert fork.forked_from is not None and fork.forked_from.run_id == original.id
            request = urllib.request.Request(
                f"{url}/api/v1/runs/{original.id}/fork",
                data=json.dumps({"from_step": "approve.confirm"}).encode(),
                headers={"Content-Type": "application/json"},
                method="POST",
            )
            with urllib.request.urlopen(request, timeout=30) as reply:
                shown = json.loads(reply.read())
            assert shown["forked_from"]["from_step"] == "approve.confirm"
            assert shown["forked_from"]["run_id"] == original.id
            bad = urllib.request.Request(
                f"{url}/api/v1/runs/{original.id}/fork",
                data=json.dumps({"from_step": "nope"}).encode(),
                headers={"Content-Type": "application/json"},
                method="POST",
            )
            with pytest.raises(urllib.error.HTTPError) as caught:
                urllib.request.urlopen(bad, timeout=30)
            caught.value.close()
            assert caught.value.code == 422
        assert store.get_run(original.id).forks == (fork.id, shown["id"])

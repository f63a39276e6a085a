"""Registering an agent checks its whole spec; one agent's spec never breaks another's emits.

Issue 12, item 3: the store used to check only triggers, so a filter ``(((`` made
every later emit fail, for every agent, across restarts; a bad cron or time zone, a
concurrency limit of 0 and a negative debounce were stored too. Now the store runs the
decorator's own rules (``store/_flowspec.py``) on every spec it is given, however it
arrives, and a spec stored before that (release 1) starts no runs instead of failing
everyone's emits.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import lmdb
import pytest

from ironflow._cli._main import main
from ironflow.errors import InvalidInputError
from ironflow.server import BackgroundServer
from ironflow.store import AgentSpec, LmdbStore, RemoteStore
from ironflow.store._codec import encode_record
from ironflow.store._flowspec import ConcurrencyLimit, CronTrigger, Debounce, FlowSpec
from ironflow.store._machine import StoreMachine

GOOD = AgentSpec("good", ("x.go",))
BAD = [
    (FlowSpec(filter="((("), "filter: expected a value"),
    (FlowSpec(crons=(CronTrigger("0 9 * *"),)), "it needs five"),
    (FlowSpec(crons=(CronTrigger("0 9 * * *", "Mars/Olympus"),)), "unknown time zone"),
    (FlowSpec(concurrency=ConcurrencyLimit(0)), "concurrency limit must be"),
    (FlowSpec(concurrency=ConcurrencyLimit(-3)), "concurrency limit must be"),
    (FlowSpec(debounce=Debounce(-5.0)), "debounce period must be more than 0"),
    (FlowSpec(debounce=Debounce(5.0, max_wait=1.0)), "shorter than its period"),
]


@pytest.mark.parametrize(("flow", "words"), BAD)
def test_a_bad_spec_is_refused_naming_the_agent_and_what_is_wrong(
    machine: StoreMachine, flow: FlowSpec, words: str
) -> None:
    """InvalidInputError naming the agent and the field; nothing of the call is stored."""
    with pytest.raises(InvalidInputError) as info:
        machine.register_agents([GOOD, AgentSpec("poison", (">",), flow=flow)])
    assert "agent 'poison'" in str(info.value) and words in str(info.value)
    assert machine.agents() == []


def test_after_a_refused_spec_emitting_one_id_three_times_starts_one_run(
    machine: StoreMachine,
) -> None:
    """The issue's reproduction: trigger '>' with filter '(((', then x.go --id E1 three times."""
    machine.register_agents([GOOD])
    with pytest.raises(InvalidInputError, match="poison"):
        machine.register_agents([AgentSpec("poison", (">",), flow=FlowSpec(filter="((("))])
    results = [machine.emit("x.go", {}, id="E1") for _ in range(3)]
    assert [r.created for r in results] == [True, False, False]
    assert len({r.run_ids for r in results}) == 1
    assert [e.id for e in machine.events()] == ["E1"]
    assert [r.agent for r in machine.list_runs()] == ["good"]
    machine.check_valid()


def _store_as_release_1_did(path: Path, spec: AgentSpec) -> None:
    """Write a spec straight into the data directory, as release 1 accepted any."""
    env = lmdb.open(str(path), max_dbs=64)
    try:
        with env.begin(write=True) as txn:
            txn.put(spec.id.encode(), encode_record(spec), db=env.open_db(b"agents", txn=txn))
    finally:
        env.close()


def test_a_broken_spec_stored_before_never_breaks_another_agents_emits(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A stored filter that does not parse starts no runs; every other emit works (CLI too)."""
    path = tmp_path / "data"
    LmdbStore(path, sync=False).close()
    poison = FlowSpec(filter="(((", concurrency=ConcurrencyLimit(0), debounce=Debounce(-5.0))
    _store_as_release_1_did(path, AgentSpec("poison", (">",), flow=poison))
    with LmdbStore(path, sync=False) as store:
        store.register_agents([GOOD])
        results = [store.emit("x.go", {"n": 1}, id="E1") for _ in range(3)]
        assert [r.created for r in results] == [True, False, False]
        assert [e.id for e in store.events()] == ["E1"]
        assert [r.agent for r in store.list_runs()] == ["good"]
        store.check_valid()
    for _ in range(2):
        assert main(["emit", "x.go", "--id", "E2", "--data-dir", str(path)]) == 0
    out = capsys.readouterr()
    assert "Traceback" not in out.err and "filter" not in out.err
    with LmdbStore(path, sync=False) as store:
        assert [e.id for e in store.events()] == ["E1", "E2"]
        assert [r.agent for r in store.list_runs()] == ["good", "good"]


def test_over_http_a_bad_spec_is_a_422_naming_the_agent(tmp_path: Path) -> None:
    """The server refuses it as the store does: 422, and RemoteStore raises InvalidInputError."""
    with LmdbStore(tmp_path / "data", sync=False) as store, BackgroundServer(store) as url:
        body = {
            "agents": [
                {"id": "poison", "triggers": [">"], "flow": {"filter": "((("}},
            ]
        }
        request = urllib.request.Request(
            url + "/api/v1/store/agents",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(request, timeout=10)
        assert info.value.code == 422
        message = json.load(info.value)["error"]["message"]
        assert "poison" in message and "filter" in message
        remote = RemoteStore(url, give_up_after=5.0)
        try:
            with pytest.raises(InvalidInputError, match="concurrency limit"):
                remote.register_agents(
                    [AgentSpec("zero", ("a",), flow=FlowSpec(concurrency=ConcurrencyLimit(0)))]
                )
        finally:
            remote.close()
        assert store.agents() == []

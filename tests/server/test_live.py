"""Run and wait, and watch: ``Client.runs.wait``, ``?wait=``, the event stream, the commands.

A worker serves the agents below on a thread of this process; the store is used
directly (``lmdb``) and through a server on 127.0.0.1 (``remote``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ironflow import AgentContext, Client, Worker, agent
from ironflow.errors import InvalidInputError, WaitTimeoutError
from ironflow.server._background import BackgroundServer
from ironflow.store import Event, LmdbStore, RemoteStore, Store

REPO = Path(__file__).resolve().parents[2]
GATES: dict[str, threading.Event] = {}


@agent(id="live-echo", triggers=["live.echo"])
def live_echo(ctx: AgentContext) -> dict[str, Any]:
    """Returns its event data; waits for the gate named ``gate``, if any, first."""
    gate = ctx.event.data.get("gate")
    if gate is not None:
        assert GATES[gate].wait(60), "the test never opened the gate"
    return {"echo": ctx.event.data.get("x")}


@agent(id="live-fail", triggers=["live.fail"])
def live_fail(ctx: AgentContext) -> None:
    raise ValueError("no such document")


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[LmdbStore]:
    with LmdbStore(tmp_path / "data", sync=False) as store:
        yield store


@pytest.fixture
def worker(backend: LmdbStore) -> Iterator[Worker]:
    w = Worker([live_echo, live_fail], store=backend, poll_interval=0.02)
    thread = threading.Thread(target=lambda: w.run(ready_message=False))
    thread.start()
    yield w
    for gate in GATES.values():
        gate.set()
    w.stop()
    thread.join(30)
    assert not thread.is_alive()


@pytest.fixture
def url(backend: LmdbStore) -> Iterator[str]:
    with BackgroundServer(backend) as served:
        yield served


@pytest.fixture(params=["lmdb", "remote"])
def store(request: pytest.FixtureRequest, backend: LmdbStore, url: str) -> Iterator[Store]:
    if request.param == "lmdb":
        yield backend
    else:
        remote = RemoteStore(url, give_up_after=10.0)
        yield remote
        remote.close()


def _gate(name: str) -> threading.Event:
    GATES[name] = threading.Event()
    return GATES[name]


def test_runs_wait_returns_when_the_run_finishes(store: Store, worker: Worker) -> None:
    client = Client(store=store)
    gate = _gate(f"wait-{id(store)}")
    run_id = client.events.emit("live.echo", {"x": 1, "gate": f"wait-{id(store)}"}).run_ids[0]
    answer: list[Any] = []
    waiter = threading.Thread(target=lambda: answer.append(client.runs.wait(run_id, timeout=60)))
    waiter.start()
    time.sleep(0.3)
    assert not answer, "wait returned before the run finished"
    gate.set()
    started = time.monotonic()
    waiter.join(60)
    # Woken by the finish, not by running out its 60 s.
    assert time.monotonic() - started < 30
    assert answer[0].status == "completed" and answer[0].output == {"echo": 1}
    # A finished run comes back at once; a failed one with its error.
    assert client.runs.wait(run_id, timeout=0).output == {"echo": 1}
    failed = client.runs.wait(client.events.emit("live.fail").run_ids[0], timeout=60)
    assert failed.status == "failed" and failed.error is not None
    assert "no such document" in failed.error.message


def test_runs_wait_times_out_with_the_run_as_it_is(store: Store, worker: Worker) -> None:
    client = Client(store=store)
    _gate("never")
    run_id = client.events.emit("live.echo", {"gate": "never"}).run_ids[0]
    with pytest.raises(WaitTimeoutError) as info:
        client.runs.wait(run_id, timeout=0.3)
    assert info.value.run.id == run_id and info.value.run.status in ("pending", "running")
    assert f"run {run_id} did not finish within 0.3s" in str(info.value)


def test_get_run_with_wait_long_polls_until_it_finishes(url: str, worker: Worker) -> None:
    client = Client(url=url)
    gate = _gate("http")
    run_id = client.events.emit("live.echo", {"x": 7, "gate": "http"}).run_ids[0]
    threading.Timer(0.3, gate.set).start()
    with urllib.request.urlopen(f"{url}/api/v1/runs/{run_id}?wait=20s", timeout=60) as reply:
        body = json.load(reply)
    assert body["status"] == "completed" and body["output"] == {"echo": 7}
    assert [s["id"] for s in body["steps"]] == []
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(f"{url}/api/v1/runs/{run_id}?wait=5m", timeout=10)
    assert info.value.code == 422
    assert "at most 30s" in json.load(info.value)["error"]["message"]
    client.close()


def _collect(events: Iterator[Event], into: list[Event], ready: threading.Event) -> None:
    ready.set()
    into.extend(events)


def test_events_tail_streams_matching_events_and_resumes(store: Store) -> None:
    client = Client(store=store)
    client.events.emit("order.old", {"n": 0})
    seen: list[Event] = []
    ready = threading.Event()
    tail = client.events.tail("order.*", timeout=5)
    reader = threading.Thread(target=_collect, args=(tail, seen, ready))
    reader.start()
    ready.wait(10)
    time.sleep(0.5)  # the stream has found the end of the log
    client.events.emit("order.placed", {"n": 1})
    client.events.emit("invoice.sent", {"n": 2})
    client.events.emit("order.paid", {"n": 3})
    reader.join(30)
    assert [(e.name, e.data["n"]) for e in seen] == [("order.placed", 1), ("order.paid", 3)]
    # From a position: every later event, none missed or repeated.
    after = list(client.events.tail(after_seq=seen[0].seq, timeout=1))
    assert [e.name for e in after] == ["invoice.sent", "order.paid"]
    with pytest.raises(InvalidInputError):
        next(client.events.tail("order..x", timeout=1))


def test_event_stream_resumes_from_last_event_id(url: str) -> None:
    client = Client(url=url)
    for i in range(3):
        client.events.emit("tick", {"i": i})
    request = urllib.request.Request(
        f"{url}/api/v1/events/stream?pattern=tick", headers={"Last-Event-ID": "1"}
    )
    lines: list[str] = []
    with urllib.request.urlopen(request, timeout=10) as reply:
        assert reply.headers["Content-Type"].startswith("text/event-stream")
        while len([x for x in lines if x.startswith("data:")]) < 2:
            lines.append(reply.readline().decode().rstrip("\n"))
    assert "id: 2" in lines and "id: 3" in lines
    data = [json.loads(x[5:]) for x in lines if x.startswith("data:")]
    assert [d["data"]["i"] for d in data] == [1, 2]
    client.close()


def _cli(url: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IRONFLOW_")}
    env.update(IRONFLOW_URL=url, PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-m", "ironflow._cli._main", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


@pytest.mark.process
def test_invoke_and_emit_wait_print_outcomes_with_exit_codes(url: str, worker: Worker) -> None:
    done = _cli(url, "invoke", "live-echo", "--data", '{"x": "hi"}', "--timeout", "30s")
    assert (done.returncode, json.loads(done.stdout)) == (0, {"echo": "hi"}), done.stderr
    failed = _cli(url, "invoke", "live-fail", "--timeout", "30s")
    assert failed.returncode == 1
    assert "failed: ValueError: no such document" in failed.stderr
    unknown = _cli(url, "invoke", "nobody")
    assert unknown.returncode == 2 and "no agent 'nobody' is registered" in unknown.stderr
    _gate("cli")
    late = _cli(url, "invoke", "live-echo", "--data", '{"gate": "cli"}', "--timeout", "0.5s")
    assert late.returncode == 124 and "did not finish within 0.5s" in late.stderr
    waited = _cli(url, "emit", "live.echo", "--data", '{"x": 2}', "--wait", "--json")
    assert waited.returncode == 0, waited.stderr
    assert json.loads(waited.stdout)["output"] == {"echo": 2}
    nothing = _cli(url, "emit", "nobody.listens", "--wait")
    assert nothing.returncode == 1 and "started no run" in nothing.stderr


@pytest.mark.process
def test_events_tail_command_prints_events(url: str) -> None:
    client = Client(url=url)
    client.events.emit("order.placed", {"id": 1})
    client.events.emit("invoice.sent", {"id": 2})
    shown = _cli(url, "events", "tail", "order.>", "--from-start", "--timeout", "2s", "--json")
    assert shown.returncode == 0, shown.stderr
    assert [json.loads(line)["name"] for line in shown.stdout.splitlines()] == ["order.placed"]
    client.close()

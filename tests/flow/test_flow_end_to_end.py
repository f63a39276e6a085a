"""Flow control through a real Worker, the CLI and the HTTP API."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from ironflow import AgentContext, Worker, agent
from ironflow._agent._dsl import AgentDefinition
from ironflow._cli._main import main
from ironflow.store import LmdbStore
from tests.flow._helpers import run_agent, step_ids

executed: Counter[str] = Counter()
_lock = threading.Lock()
_running: Counter[str] = Counter()
_most: Counter[str] = Counter()


@pytest.fixture(autouse=True)
def _reset() -> None:
    executed.clear()
    _running.clear()
    _most.clear()


def _count(label: str) -> Any:
    def run() -> str:
        executed[label] += 1
        return label

    return run


@agent(id="gold-only", triggers=["order.*"], filter="data.amount > 100", version="v3")
def gold_only(ctx: AgentContext) -> Any:
    return ctx.step("a", _count("a"))


def test_filter_and_version_through_a_worker(store: LmdbStore) -> None:
    """@agent(filter=...) starts runs only for matching events; runs carry the version."""
    Worker([gold_only], store=store)
    assert store.emit("order.created", {"amount": 5}).run_ids == ()
    run = run_agent(store, gold_only, {"amount": 500})
    assert (run.status, run.version) == ("completed", "v3")


def _busy(key: str) -> None:
    with _lock:
        _running[key] += 1
        _most[key] = max(_most[key], _running[key])
    time.sleep(0.02)  # overlap with whatever else may run: the limit must prevent it
    with _lock:
        _running[key] -= 1


@agent(id="per-customer", triggers=["job"], concurrency={"limit": 1, "key": "data.customer"})
def per_customer(ctx: AgentContext) -> Any:
    key = ctx.event.data["customer"]
    ctx.step("work", lambda: _busy(key))
    return ctx.event.data["n"]


def test_a_concurrency_key_serializes_runs_across_worker_threads(store: LmdbStore) -> None:
    """With 4 worker threads and limit 1 per customer, one run per customer at a time."""
    worker = Worker([per_customer], store=store, concurrency=4)
    ids = [store.emit("job", {"customer": c, "n": n}).run_ids[0] for n, c in enumerate("aaabb")]
    statuses = [store.get_run(i).status for i in ids]
    assert statuses == ["pending", "queued", "queued", "pending", "queued"]
    worker.run(until_idle=True, ready_message=False)
    assert all(store.get_run(i).status == "completed" for i in ids)
    assert dict(_most) == {"a": 1, "b": 1}


@agent(
    id="ship",
    triggers=["order.created"],
    cancel_on=[{"event": "order.cancelled", "match": "data.orderId"}],
)
def ship(ctx: AgentContext) -> Any:
    return ctx.step("ship", _count(f"ship-{ctx.event.data['orderId']}"))


def test_cancel_on_event_through_a_worker(store: LmdbStore) -> None:
    """The cancelled order's run never ships; the other one does."""
    worker = Worker([ship], store=store)
    (one,) = store.emit("order.created", {"orderId": 1}).run_ids
    (two,) = store.emit("order.created", {"orderId": 2}).run_ids
    store.emit("order.cancelled", {"orderId": 1})
    worker.run(until_idle=True, ready_message=False)
    assert store.get_run(one).status == "cancelled"
    assert store.get_run(two).status == "completed"
    assert executed == Counter({"ship-2": 1})


_stores: dict[str, LmdbStore] = {}


@agent(id="pausable", triggers=["go"])
def pausable(ctx: AgentContext) -> Any:
    # The first step pauses its own run, as `ironflow run pause` would mid-run.
    ctx.step("a", lambda: (_stores["s"].pause_run(ctx.run_id), _count("a")())[1])
    ctx.step("b", _count("b"))
    ctx.step("c", _count("c"))
    return "done"


def test_pause_stops_at_the_next_step_and_resume_goes_on(store: LmdbStore) -> None:
    """Paused mid-run: the worker hands it back after step a; resumed, b and c run once."""
    _stores["s"] = store
    run = run_agent(store, pausable, {})
    assert run.status == "paused"
    assert step_ids(store, run.id) == ["a"]
    assert store.resume_run(run.id).status == "pending"
    Worker([pausable], store=store).run(until_idle=True, ready_message=False)
    assert store.get_run(run.id).status == "completed"
    assert executed == Counter({"a": 1, "b": 1, "c": 1})


@agent(id="three-steps", triggers=["three"])
def three_steps(ctx: AgentContext) -> Any:
    return [ctx.step(s, _count(s)) for s in ("a", "b", "c")]


def test_resume_from_step_via_the_cli_reruns_that_step_and_after(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`ironflow run resume RUN --from-step b`: a stays recorded, b and c run again."""
    data = tmp_path / "data"
    with LmdbStore(data, sync=False) as store:
        run = run_agent(store, three_steps, {})
    with pytest.raises(SystemExit) as exit_:
        main(["run", "resume", run.id, "--data-dir", str(data)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "has finished (completed): only a paused run resumes" in err and "a, b, c" in err
    assert main(["run", "resume", run.id, "--from-step", "b", "--data-dir", str(data)]) == 0
    assert "re-runs from step b" in capsys.readouterr().out
    with LmdbStore(data, sync=False) as store:
        Worker([three_steps], store=store).run(until_idle=True, ready_message=False)
        assert store.get_run(run.id).status == "completed"
    assert executed == Counter({"a": 1, "b": 2, "c": 2})
    assert main(["inspect", run.id, "--json", "--data-dir", str(data)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert [r["from_step"] for r in shown["reruns"]] == ["b"]
    assert shown["reruns"][0]["previous_status"] == "completed"
    assert main(["inspect", run.id, "--data-dir", str(data)]) == 0
    assert "re-runs  from b (#1)" in capsys.readouterr().out


def test_pause_and_resume_via_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`ironflow run pause` holds a pending run; `run resume` makes it pending again."""
    data = tmp_path / "data"
    with LmdbStore(data, sync=False) as store:
        store.register_agents([AgentDefinition.must_from_fn(three_steps).spec()])
        (run_id,) = store.emit("three", {}).run_ids
    assert main(["run", "pause", run_id, "--data-dir", str(data)]) == 0
    assert "paused" in capsys.readouterr().out
    assert main(["run", "list", "--status", "paused", "--json", "--data-dir", str(data)]) == 0
    assert [r["id"] for r in json.loads(capsys.readouterr().out)] == [run_id]
    assert main(["run", "resume", run_id, "--data-dir", str(data)]) == 0
    assert "resumed: pending" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["run", "resume", run_id, "--from-step", "x", "--data-dir", str(data)])
    assert "--from-step re-runs a finished run" in capsys.readouterr().err


class _Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0 - 1_800_000_000.0 % 60

    def __call__(self) -> float:
        return self.now


@agent(id="every-minute", triggers=[{"cron": "* * * * *", "timezone": "UTC"}])
def every_minute(ctx: AgentContext) -> Any:
    return ctx.event.data["tick"]


@agent(id="settle", triggers=["typed"], debounce={"period": "2s", "key": "data.doc"})
def settle(ctx: AgentContext) -> Any:
    return ctx.event.data["text"]


def test_cron_and_debounce_through_a_worker(tmp_path: Path) -> None:
    """A worker fires one run for three missed minutes, and one run for a typing burst."""
    clock = _Clock()
    with LmdbStore(tmp_path / "data", sync=False, clock=clock) as store:
        worker = Worker([every_minute, settle], store=store)
        for text in ("h", "he", "hel"):
            store.emit("typed", {"doc": 1, "text": text})
            clock.now += 1
        clock.now += 180
        worker.run(until_idle=True, ready_message=False)
        runs = store.list_runs(limit=10)
        outputs = sorted((r.agent, r.status, r.output) for r in runs)
        assert outputs == [
            ("every-minute", "completed", "2027-01-15T08:03:00Z"),
            ("settle", "completed", "hel"),
        ]


@agent(
    id="slow-ship",
    triggers=["order.created"],
    cancel_on=[{"event": "order.cancelled", "match": "data.orderId"}],
)
def slow_ship(ctx: AgentContext) -> Any:
    ctx.sleep("1h")
    return ctx.step("ship", _count("shipped"))


def test_cancel_on_event_ends_a_sleeping_run(store: LmdbStore) -> None:
    """A run asleep in the store is cancelled at once by a matching event."""
    run = run_agent(store, slow_ship, {"orderId": 7})
    assert run.status == "sleeping"
    store.emit("order.cancelled", {"orderId": 7})
    assert store.get_run(run.id).status == "cancelled"
    store.check_valid()
    assert executed == Counter()

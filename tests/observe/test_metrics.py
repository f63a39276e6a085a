"""Prometheus metrics after a known workload, read over HTTP with prometheus-client's parser."""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ironflow import AgentContext, Worker, agent, tool
from ironflow.contrib.prometheus import Metrics, StoreMetrics, process_registry, serve_metrics
from ironflow.llm import ScriptedProvider
from ironflow.store import AgentSpec, LmdbStore
from ironflow.store._records import ProjectionSpec
from ironflow.testing import CrashingStore, StandInWorker
from tests.helpers import serve_until_idle_or_crash

REPO = Path(__file__).resolve().parents[2]
CRASH: dict[str, Any] = {}
PROVIDER = ScriptedProvider(["three word answer"], repeat_last=True)
PROMPT = "count these five words"


@tool
def first(n: int) -> int:
    """Add one."""
    return n + 1


@tool
def second(n: int) -> int:
    """Double, unless this worker is to die here."""
    store = CRASH.pop("store", None)
    if store is not None:
        store.crash_now("inside second")
    return n * 2


@tool
def explode() -> None:
    """Always fails."""
    raise ValueError("boom")


@agent(id="counted", triggers=["counted.go"])
def counted(ctx: AgentContext) -> str:
    second(n=first(n=1))
    return str(ctx.llm(model="tiny-1", messages=PROMPT, provider=PROVIDER).text)


@agent(id="broken", triggers=["broken.go"])
def broken(ctx: AgentContext) -> None:
    explode()


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str) -> Samples:
    """Every sample at ``url``, parsed by prometheus-client: (name, labels) -> value."""
    with urllib.request.urlopen(url, timeout=30) as reply:
        text = reply.read().decode()
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[s.name, tuple(sorted(s.labels.items()))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[LmdbStore]:
    s = LmdbStore(tmp_path / "data", sync=False)
    yield s
    s.close()


def test_metrics_after_a_known_workload_are_exact(store: LmdbStore) -> None:
    """Three clean runs, one failing, one killed mid-step and taken over, a pending and a
    cancelled run no worker serves, a projection with no runner: every counter exact."""
    registry = process_registry()
    metrics = Metrics(registry=registry)
    store_metrics = StoreMetrics(store, registry)
    server = serve_metrics(registry, "127.0.0.1", 0)
    try:
        store.register_agents([AgentSpec(id="idle", triggers=("idle.go",))])
        store.register_projections([ProjectionSpec(name="tally", events=("counted.go",))])
        Worker([counted, broken], store=store)  # registers the agents
        crashed = store.emit("counted.go", {}).run_ids[0]

        doomed = StandInWorker("doomed")
        dying = CrashingStore(store)
        CRASH["store"] = dying
        one = Worker([counted], store=dying, lease_ttl=60, poll_interval=0.01, observers=[metrics])
        one.info = doomed.info
        serve_until_idle_or_crash(one)
        assert dying.crashed
        doomed.kill()

        for _ in range(3):
            store.emit("counted.go", {})
        store.emit("broken.go", {})
        store.emit("idle.go", {})
        store.request_cancel(store.emit("idle.go", {}).run_ids[0])
        two = Worker(
            [counted, broken], store=store, lease_ttl=60, poll_interval=0.01, observers=[metrics]
        )
        serve_until_idle_or_crash(two)
        assert store.get_run(crashed).status == "completed"

        got = scrape(f"http://127.0.0.1:{server.port}/metrics")
    finally:
        server.close()
        store_metrics.close()

    def v(name: str, **labels: str) -> float:
        return value(got, name, **labels)

    assert v("ironflow_runs_started_total", agent="counted") == 4
    assert v("ironflow_runs_started_total", agent="broken") == 1
    assert v("ironflow_runs_finished_total", agent="counted", status="completed") == 4
    assert v("ironflow_runs_finished_total", agent="broken", status="failed") == 1
    assert v("ironflow_run_duration_seconds_count", agent="counted", status="completed") == 4
    # The killed attempt never ended: only the four that did are counted.
    assert v("ironflow_run_attempts_total", agent="counted", outcome="completed") == 4
    assert v("ironflow_run_attempts_total", agent="broken", outcome="failed") == 1
    assert v("ironflow_run_takeovers_total", agent="counted") == 1
    # 3 clean runs x 3 steps, plus the taken-over run's second tool and model call.
    assert v("ironflow_steps_executed_total", agent="counted") == 11
    assert v("ironflow_steps_replayed_total", agent="counted") == 1
    assert v("ironflow_steps_executed_total", agent="broken") == 1
    duration = "ironflow_step_duration_seconds_count"
    assert v(duration, step="tool.first", outcome="completed") == 4
    assert v(duration, step="tool.second", outcome="completed") == 4
    assert v(duration, step="tool.second", outcome="stopped") == 1
    assert v(duration, step="llm.tiny-1", outcome="completed") == 4
    assert v(duration, step="tool.explode", outcome="failed") == 1
    assert v("ironflow_llm_tokens_total", model="tiny-1", kind="input") == 4 * 4
    assert v("ironflow_llm_tokens_total", model="tiny-1", kind="output") == 4 * 3

    assert v("ironflow_runs", agent="idle", status="pending") == 1
    assert v("ironflow_runs", agent="idle", status="cancelled") == 1
    assert v("ironflow_runs", agent="counted", status="completed") == 4
    assert v("ironflow_runs", agent="broken", status="failed") == 1
    assert not [k for k in got if k[0] == "ironflow_runs" and ("status", "running") in k[1]]
    # counted.go x4, broken.go, idle.go x2: 7 events the projection never consumed.
    assert v("ironflow_projection_lag_events", projection="tally") == 7
    commits = v("ironflow_store_commit_duration_seconds_count")
    assert commits > 0 and v("ironflow_store_commit_batch_size_count") == commits
    assert v("ironflow_store_commit_batch_size_sum") >= commits
    assert v("process_cpu_seconds_total") > 0

    # The Grafana dashboard in docs/ queries only metrics that exist.
    dashboard = json.loads((REPO / "docs" / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    used = {name for e in exprs for name in re.findall(r"ironflow_[a-z_]+", e)}
    exported = {name for name, _ in got}
    assert used and used <= exported, sorted(used - exported)


def test_worker_without_metrics_imports_no_prometheus() -> None:
    """prometheus_client is loaded only by the observer that needs it."""
    import subprocess
    import sys

    probe = (
        "import sys, ironflow, ironflow._cli._worker, ironflow.server._main\n"
        "print('prometheus_client' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "False"


def test_the_census_counts_what_decoding_every_run_would(store: LmdbStore) -> None:
    """Runs by agent and status read from each record's first bytes equal a full decode,
    and a record written in another key order is decoded instead of missed."""
    from ironflow.contrib.prometheus._metrics import _ALL_STATUSES
    from ironflow.store._browse import run_census
    from ironflow.store._codec import converter

    store.register_agents(
        [AgentSpec(id="a", triggers=("a.go",)), AgentSpec(id="b-2", triggers=("b.go",))]
    )
    ids = [store.emit("a.go", {}).run_ids[0] for _ in range(3)]
    ids += [store.emit("b.go", {"x": '"status":"failed"'}).run_ids[0] for _ in range(2)]
    store.request_cancel(ids[0])
    odd = store.get_run(ids[1])
    shuffled = dict(reversed(list(converter.unstructure(odd).items())))
    store.backend.write(lambda txn: txn.put("runs", odd.id.encode(), json.dumps(shuffled).encode()))
    expected: dict[tuple[str, str], int] = {}
    for run in store.list_runs(limit=100):
        expected[run.agent, run.status] = expected.get((run.agent, run.status), 0) + 1
    assert (
        run_census(store, _ALL_STATUSES)
        == expected
        == {
            ("a", "cancelled"): 1,
            ("a", "pending"): 2,
            ("b-2", "pending"): 2,
        }
    )


def test_store_metrics_on_postgresql(pg_url: str) -> None:
    """On PostgreSQL the same census and lag, and every write transaction timed once,
    one write each (no group commit there)."""
    from prometheus_client import CollectorRegistry, generate_latest

    from ironflow.store._postgres import PostgresStore

    store = PostgresStore(pg_url)
    registry = CollectorRegistry()
    metrics = StoreMetrics(store, registry)
    try:
        store.register_agents([AgentSpec(id="a", triggers=("a.go",))])
        store.register_projections([ProjectionSpec(name="tally", events=("a.go",))])
        before = registry.get_sample_value("ironflow_store_commit_duration_seconds_count")
        ids = [store.emit("a.go", {}).run_ids[0] for _ in range(3)]
        store.request_cancel(ids[0])
        text = generate_latest(registry).decode()
    finally:
        metrics.close()
        store.close()
    got: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            got[s.name, tuple(sorted(s.labels.items()))] = s.value
    assert value(got, "ironflow_runs", agent="a", status="pending") == 2
    assert value(got, "ironflow_runs", agent="a", status="cancelled") == 1
    assert value(got, "ironflow_projection_lag_events", projection="tally") == 3
    commits = value(got, "ironflow_store_commit_duration_seconds_count")
    assert before is not None and commits - before == 4  # three emits and a cancel
    assert value(got, "ironflow_store_commit_batch_size_sum") == commits

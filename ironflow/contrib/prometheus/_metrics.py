"""Prometheus metrics: what workers do (an observer) and what a store holds (a collector).

Names follow Prometheus's conventions: an ``ironflow_`` prefix, base units in the name
(``_seconds``), ``_total`` on counters. The metrics a worker counts come from the
worker that did the work, so summing over workers never counts twice; the gauges of
what a store holds, and its commit timings, come from the process that has the store
open (``ironflow serve``, or a worker on a local data directory): take their ``max``
across such processes, not their sum.

Worker (:class:`Metrics`):

- ``ironflow_runs_started_total{agent}``: runs whose first attempt began;
- ``ironflow_runs_finished_total{agent,status}``: runs finished ``completed``, ``failed``
  or ``cancelled``;
- ``ironflow_run_duration_seconds{agent,status}``: from a run's creation to its end,
  sleeps and waits included (histogram);
- ``ironflow_run_attempts_total{agent,outcome}``: attempts by how they ended (finished
  statuses, or ``suspended``, ``released``, ``abandoned``);
- ``ironflow_run_takeovers_total{agent}``: runs taken over from a dead or stalled worker;
- ``ironflow_steps_executed_total{agent}`` and ``ironflow_steps_replayed_total{agent}``;
- ``ironflow_step_duration_seconds{step,outcome}``: executed steps (histogram); ``step``
  is the step id without its repeat and branch suffixes (``tool.ocr#2`` and
  ``map.fetch[3]`` are ``tool.ocr`` and ``map.fetch``), so its values come from code;
- ``ironflow_llm_tokens_total{model,kind}``: tokens of executed ``llm`` steps, ``kind``
  ``input`` or ``output`` (a replayed call spent none).

Store (:class:`StoreMetrics`: an ``LmdbStore``, a ``PostgresStore``, a ``MemoryStore``):

- ``ironflow_runs{agent,status}``: runs the store holds now, by status: pending,
  queued, running, sleeping, waiting, paused, and the finished ones it keeps (completed,
  failed, cancelled, until ``ironflow prune`` deletes them; a run cancelled before any
  worker took it is counted only here). One scan of the runs table per scrape, decoding
  nothing;
- ``ironflow_projection_lag_events{projection}``: events of the log a projection has
  not applied yet;
- ``ironflow_store_commit_duration_seconds``: one write transaction, fsync included
  (histogram; LMDB and PostgreSQL);
- ``ironflow_store_commit_batch_size``: writes one commit carried (LMDB's group commit;
  always 1 on PostgreSQL).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from ironflow.replay._engine import Execution, Outcome, StepInfo
from ironflow.replay._observer import AttemptObserver, Observer, StepOutcome
from ironflow.store import FINISHED, StepRecord, WorkerInfo
from ironflow.store._machine import StoreMachine

__all__ = ["LIVE_STATUSES", "Metrics", "StoreMetrics", "step_label"]

#: Every status a run can still leave.
LIVE_STATUSES = frozenset({"pending", "queued", "running", "sleeping", "waiting", "paused"})
_ALL_STATUSES = LIVE_STATUSES | FINISHED

# Steps take from a millisecond (a local tool) to minutes (a model call); runs, to days.
_STEP_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0)
_RUN_BUCKETS = (0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 3600.0, 86400.0)
_COMMIT_BUCKETS = (0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
_SUFFIX = re.compile(r"(#\d+|\[\d+\])+$")


def step_label(step_id: str) -> str:
    """A step id without its repeat (``#2``) and branch (``[3]``) suffixes."""
    return _SUFFIX.sub("", step_id)


class Metrics(Observer):
    """Count a worker's runs and steps: ``Worker(agents, observers=[Metrics()])``.

    The metrics live in ``registry`` (a fresh one by default; serve it with
    ``prometheus_client.start_http_server(port, registry=metrics.registry)``, or run
    ``ironflow worker --metrics-port``).
    """

    def __init__(self, *, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.runs_started = Counter(
            "ironflow_runs_started", "Runs whose first attempt began.", ["agent"], registry=r
        )
        self.runs_finished = Counter(
            "ironflow_runs_finished",
            "Runs that finished, by final status (completed, failed, cancelled).",
            ["agent", "status"],
            registry=r,
        )
        self.run_duration = Histogram(
            "ironflow_run_duration_seconds",
            "Seconds from a run's creation to its end, sleeps and waits included.",
            ["agent", "status"],
            buckets=_RUN_BUCKETS,
            registry=r,
        )
        self.attempts = Counter(
            "ironflow_run_attempts",
            "Attempts at runs, by how they ended.",
            ["agent", "outcome"],
            registry=r,
        )
        self.takeovers = Counter(
            "ironflow_run_takeovers",
            "Runs taken over from a worker that died or stalled holding them.",
            ["agent"],
            registry=r,
        )
        self.steps_executed = Counter(
            "ironflow_steps_executed", "Steps executed (not replayed).", ["agent"], registry=r
        )
        self.steps_replayed = Counter(
            "ironflow_steps_replayed",
            "Steps replayed from the record instead of executed.",
            ["agent"],
            registry=r,
        )
        self.step_duration = Histogram(
            "ironflow_step_duration_seconds",
            "Seconds an executed step took, by step name and outcome.",
            ["step", "outcome"],
            buckets=_STEP_BUCKETS,
            registry=r,
        )
        self.llm_tokens = Counter(
            "ironflow_llm_tokens",
            "Tokens of executed LLM steps, by model and kind (input, output).",
            ["model", "kind"],
            registry=r,
        )

    def attempt(
        self, execution: Execution, taken_from: WorkerInfo | None
    ) -> AttemptObserver | None:
        agent = execution.run.agent
        if execution.run.attempt == 1:
            self.runs_started.labels(agent).inc()
        if taken_from is not None:
            self.takeovers.labels(agent).inc()
        return _Attempt(self, execution)


class _Attempt(AttemptObserver):
    def __init__(self, metrics: Metrics, execution: Execution) -> None:
        self.metrics = metrics
        self.execution = execution

    def step_started(self, step: StepInfo, input: Any) -> Any:
        model = input.get("model") if isinstance(input, dict) else None
        return (time.perf_counter(), model)

    def step_ended(
        self,
        token: Any,
        step: StepInfo,
        outcome: StepOutcome,
        record: StepRecord | None,
        error: BaseException | None,
    ) -> None:
        started, model = token
        m = self.metrics
        m.step_duration.labels(step_label(step.step_id), outcome).observe(
            time.perf_counter() - started
        )
        if (
            record is not None
            and record.status == "completed"
            and step.step_id.startswith("llm.")
            and isinstance(record.output, dict)
        ):
            usage = record.output.get("usage")
            name = record.output.get("model") or model or step_label(step.step_id)[4:]
            if isinstance(usage, dict):
                for kind in ("input", "output"):
                    tokens = usage.get(f"{kind}_tokens")
                    if isinstance(tokens, int) and tokens > 0:
                        m.llm_tokens.labels(str(name), kind).inc(tokens)

    def ended(self, outcome: Outcome) -> None:
        m, execution = self.metrics, self.execution
        agent = execution.run.agent
        m.attempts.labels(agent, outcome.status).inc()
        if execution.steps_executed:
            m.steps_executed.labels(agent).inc(execution.steps_executed)
        if execution.steps_replayed:
            m.steps_replayed.labels(agent).inc(execution.steps_replayed)
        if outcome.status in FINISHED:
            m.runs_finished.labels(agent, outcome.status).inc()
            m.run_duration.labels(agent, outcome.status).observe(
                max(0.0, time.time() - execution.run.created_at)
            )


class StoreMetrics(Collector):
    """What a store holds, read at each scrape, and how long its commits take:
    ``StoreMetrics(store, registry)``.

    Any store that keeps the data itself (LMDB, PostgreSQL, memory; not a RemoteStore,
    whose server exports them). Registers itself in ``registry`` and times the store's
    commits, where it has them (LMDB, PostgreSQL), until :meth:`close`.
    """

    def __init__(self, store: StoreMachine, registry: CollectorRegistry) -> None:
        if not isinstance(store, StoreMachine):
            raise TypeError(
                f"StoreMetrics reads a store that keeps the data itself, not "
                f"{type(store).__name__}: export a store's metrics from the process that "
                "opens it (ironflow serve)"
            )
        self.store = store
        self.commit_duration = Histogram(
            "ironflow_store_commit_duration_seconds",
            "Seconds one write transaction took, fsync included.",
            buckets=_COMMIT_BUCKETS,
            registry=registry,
        )
        self.commit_batch = Histogram(
            "ironflow_store_commit_batch_size",
            "Writes one commit carried (group commit).",
            buckets=_BATCH_BUCKETS,
            registry=registry,
        )
        self._lock = threading.Lock()
        self._timed = hasattr(store, "commit_observer")
        if self._timed:
            store.commit_observer = self._committed  # type: ignore[attr-defined]
        registry.register(self)

    def _committed(self, seconds: float, writes: int) -> None:
        self.commit_duration.observe(seconds)
        self.commit_batch.observe(writes)

    def describe(self) -> Iterator[Any]:
        # Declared up front, so the registry needs no scan of the store to learn the names.
        yield GaugeMetricFamily("ironflow_runs", "", labels=["agent", "status"])
        yield GaugeMetricFamily("ironflow_projection_lag_events", "", labels=["projection"])

    def collect(self) -> Iterator[Any]:
        from ironflow.store._browse import last_seq, run_census

        with self._lock:  # one scan at a time, however many scrapers
            counts = run_census(self.store, _ALL_STATUSES)
            projections = self.store.list_projections()
            head = last_seq(self.store)
        runs = GaugeMetricFamily(
            "ironflow_runs",
            "Runs the store holds now, by agent and status (finished ones until pruned).",
            labels=["agent", "status"],
        )
        for (agent, status), n in sorted(counts.items()):
            runs.add_metric([agent, status], n)
        yield runs
        lag = GaugeMetricFamily(
            "ironflow_projection_lag_events",
            "Events of the log a projection has not applied yet.",
            labels=["projection"],
        )
        for p in projections:
            lag.add_metric([p.name], max(0, head - p.position))
        yield lag

    def close(self) -> None:
        """Stop timing the store's commits."""
        if self._timed and self.store.commit_observer == self._committed:  # type: ignore[attr-defined]
            self.store.commit_observer = None  # type: ignore[attr-defined]

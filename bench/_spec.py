"""What the benchmark measures: the systems, the workloads, their parameters and targets.

Kept free of imports of ironflow and the peers, so the parent process (and a peer's
interpreter, which may not have ironflow) can read it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: In the order each repetition visits them (A, B, C, A, B, C, ...).
SYSTEMS = (
    "floor",
    "ironflow",
    "dbos",
    "langgraph",
    "pg_floor",
    "ironflow_pg",
    "dbos_pg",
    "langgraph_pg",
)
PEERS = ("dbos", "langgraph", "dbos_pg", "langgraph_pg")
#: The systems on the one embedded PostgreSQL server the parent starts (``bench._pg``).
POSTGRES = ("pg_floor", "ironflow_pg", "dbos_pg", "langgraph_pg")
#: Each storage's floor: it runs whenever a system on that storage runs.
FLOORS = {"floor": ("ironflow", "dbos", "langgraph"), "pg_floor": POSTGRES[1:]}
#: The ironflow column each peer is compared with (its "Nx"): same storage.
OURS = {
    "dbos": "ironflow",
    "langgraph": "ironflow",
    "dbos_pg": "ironflow_pg",
    "langgraph_pg": "ironflow_pg",
}
LABELS = {
    "floor": "raw LMDB floor",
    "ironflow": "ironflow",
    "dbos": "DBOS (SQLite)",
    "langgraph": "LangGraph (SQLite)",
    "pg_floor": "PostgreSQL floor",
    "ironflow_pg": "ironflow (PostgreSQL)",
    "dbos_pg": "DBOS (PostgreSQL)",
    "langgraph_pg": "LangGraph (PostgreSQL)",
}
#: The PostgreSQL worker curve: one row per number of worker processes on one database.
PG_WORKERS = (1, 2, 4)


#: The checkpointer row: which LangGraph checkpointer each system's column measures, on
#: the same graph (``bench.peers.langgraph_savers``), durability="sync". A column
#: is added by a system here and, in its child (``bench._child``), a runner for
#: ``langgraph_saver_node_us`` that gives ``node_us`` its saver (PostgresSaver: issue 20).
LANGGRAPH_SAVERS = {
    "ironflow": "IronflowSaver on LMDB",
    "langgraph": "SqliteSaver",
    "ironflow_pg": "IronflowSaver on PostgreSQL",
    "langgraph_pg": "PostgresSaver",
}


@dataclass(frozen=True)
class Workload:
    key: str
    title: str
    unit: str
    #: "higher" or "lower": which way is better.
    better: str
    systems: tuple[str, ...]
    #: system -> why it is not measured (shown in the table instead of a number).
    skip: dict[str, str] = field(default_factory=dict)
    digits: int = 0


WORKLOADS: tuple[Workload, ...] = (
    Workload(
        "lmdb_commit_us",
        "one LMDB write txn, sync on",
        "µs",
        "lower",
        ("floor",),
    ),
    Workload("fdatasync_us", "append 200 B + fdatasync", "µs", "lower", ("floor",)),
    Workload(
        "pg_commit_us",
        "one PostgreSQL single-row INSERT commit, synchronous (psycopg)",
        "µs",
        "lower",
        ("pg_floor",),
    ),
    Workload(
        "per_step_us",
        "100-step agent: marginal cost per step",
        "µs",
        "lower",
        ("ironflow", "dbos", "langgraph", "ironflow_pg", "dbos_pg"),
    ),
    Workload(
        "three_step_runs_per_s",
        "3-step agent, sequential runs",
        "runs/s",
        "higher",
        ("ironflow", "dbos", "langgraph", "ironflow_pg", "dbos_pg"),
    ),
    Workload(
        "concurrent_steps_per_s",
        "16 concurrent 3-step runs: durable steps",
        "steps/s",
        "higher",
        ("ironflow", "dbos", "langgraph"),
    ),
    Workload(
        "processes_steps_per_s",
        "{runs} concurrent 3-step runs, live ironflow worker --processes {processes} "
        "--concurrency {concurrency}: durable steps",
        "steps/s",
        "higher",
        ("ironflow",),
    ),
    Workload(
        "concurrent_cpu_ms_per_run",
        "16 concurrent 3-step runs: CPU per run (all threads)",
        "ms",
        "lower",
        ("ironflow",),
        digits=2,
    ),
    Workload(
        "replay_ms",
        "replay {steps:,} recorded steps to the next",
        "ms",
        "lower",
        ("ironflow", "dbos", "langgraph"),
        skip={
            "dbos": "not measured",
            "langgraph": "not measured",
        },
        digits=1,
    ),
    Workload(
        "resume_s",
        "kill -9, fresh process to first resumed step",
        "s",
        "lower",
        ("ironflow", "dbos", "langgraph"),
        skip={"langgraph": "no worker process to restart"},
        digits=3,
    ),
    Workload(
        "remote_per_step_us",
        "remote mode (ironflow serve, loopback): per step",
        "µs",
        "lower",
        ("ironflow",),
    ),
    Workload(
        "emit_to_done_ms",
        "emit to completed, 3-step run, idle worker process on the same data: median",
        "ms",
        "lower",
        ("ironflow", "dbos", "langgraph"),
        digits=1,
    ),
    Workload(
        "emit_to_done_p99_ms",
        "emit to completed, 3-step run, idle worker process on the same data: p99",
        "ms",
        "lower",
        ("ironflow", "dbos", "langgraph"),
        digits=1,
    ),
    Workload(
        "serve_emit_to_done_ms",
        "emit to completed through ironflow serve (emitter, worker: IRONFLOW_URL): median",
        "ms",
        "lower",
        ("ironflow",),
        digits=1,
    ),
    Workload(
        "serve_emit_to_done_p99_ms",
        "emit to completed through ironflow serve (emitter, worker: IRONFLOW_URL): p99",
        "ms",
        "lower",
        ("ironflow",),
        digits=1,
    ),
    Workload(
        "idle_worker_cpu_pct",
        "idle worker process, {running:,} runs held by another live worker: CPU",
        "% of a core",
        "lower",
        ("ironflow",),
        digits=2,
    ),
    Workload(
        "sleeping_10k_mb",
        "worker holding 10,000 sleeping runs: memory",
        "MB",
        "lower",
        ("ironflow",),
    ),
    Workload(
        "observer_off_ns",
        "observer hooks, none configured: cost per step",
        "ns",
        "lower",
        ("ironflow",),
    ),
    Workload(
        "untraced_step_us",
        "100-step agent, fsync off: per step, no observer",
        "µs",
        "lower",
        ("ironflow",),
        digits=1,
    ),
    Workload(
        "traced_step_us",
        "100-step agent, fsync off: per step, OpenTelemetry tracing on",
        "µs",
        "lower",
        ("ironflow",),
        digits=1,
    ),
    Workload(
        "pydantic_ai_request_us",
        "Pydantic AI: overhead per model request + tool call",
        "µs",
        "lower",
        ("ironflow",),
    ),
    Workload(
        "openai_agents_request_us",
        "OpenAI Agents SDK: overhead per model call + tool call",
        "µs",
        "lower",
        ("ironflow",),
    ),
    Workload(
        "langgraph_saver_node_us",
        "LangGraph agent loop, {nodes} nodes, durable: per node, "
        + " vs ".join(LANGGRAPH_SAVERS.values()),
        "µs",
        "lower",
        tuple(LANGGRAPH_SAVERS),
    ),
    *(
        Workload(
            f"pg_workers_{n}_steps_per_s",
            f"{n} worker process{'es' if n > 1 else ''} on one database, 3-step runs: "
            "durable steps",
            "steps/s",
            "higher",
            ("ironflow_pg",),
        )
        for n in PG_WORKERS
    ),
    Workload(
        "import_ms",
        "import time in a fresh interpreter",
        "ms",
        "lower",
        ("ironflow", "dbos", "langgraph"),
    ),
)

BY_KEY = {w.key: w for w in WORKLOADS}

#: The concurrent row served by a worker command of two processes (one per core on the
#: 2-core machines we measure on), each executing up to 8 runs at once: room for the 16.
#: The same size with --quick, where it is short anyway.
_PROCESSES = {"runs": 16, "processes": 2, "concurrency": 8}


def params(quick: bool) -> dict[str, dict[str, Any]]:
    """Each workload's parameters: full (default) or ``--quick`` (small n, for the smoke test)."""
    if quick:
        return {
            "lmdb_commit_us": {"n": 50},
            "pg_commit_us": {"n": 50},
            **{f"pg_workers_{n}_steps_per_s": {"workers": n, "runs": 8 * n} for n in PG_WORKERS},
            "fdatasync_us": {"n": 50},
            "per_step_us": {"steps": 20, "reps": 1},
            "three_step_runs_per_s": {"n_runs": 10},
            "concurrent_steps_per_s": {"runs": 16},
            "concurrent_cpu_ms_per_run": {"runs": 16},
            "processes_steps_per_s": _PROCESSES,
            "replay_ms": {"steps": 1000},
            "resume_s": {},
            "remote_per_step_us": {"steps": 20, "reps": 1},
            "emit_to_done_ms": {"runs": 10},
            "emit_to_done_p99_ms": {"runs": 10},
            "serve_emit_to_done_ms": {"runs": 10},
            "serve_emit_to_done_p99_ms": {"runs": 10},
            "idle_worker_cpu_pct": {"running": 200, "seconds": 2.0},
            "sleeping_10k_mb": {"runs": 200},
            "observer_off_ns": {"loops": 10_000},
            "untraced_step_us": {"steps": 20, "reps": 1},
            "traced_step_us": {"steps": 20, "reps": 1},
            "pydantic_ai_request_us": {"rounds": 5, "reps": 1},
            "openai_agents_request_us": {"rounds": 5, "reps": 1},
            "langgraph_saver_node_us": {"nodes": 20, "reps": 1},
            "import_ms": {"samples": 1},
        }
    return {
        "lmdb_commit_us": {"n": 300},
        "pg_commit_us": {"n": 300},
        **{f"pg_workers_{n}_steps_per_s": {"workers": n, "runs": 120} for n in PG_WORKERS},
        "fdatasync_us": {"n": 300},
        "per_step_us": {"steps": 100, "reps": 5},
        "three_step_runs_per_s": {"n_runs": 100},
        "concurrent_steps_per_s": {"runs": 16},
        "concurrent_cpu_ms_per_run": {"runs": 16},
        "processes_steps_per_s": _PROCESSES,
        "replay_ms": {"steps": 10_000},
        "resume_s": {},
        "remote_per_step_us": {"steps": 100, "reps": 3},
        "emit_to_done_ms": {"runs": 100},
        "emit_to_done_p99_ms": {"runs": 100},
        "serve_emit_to_done_ms": {"runs": 100},
        "serve_emit_to_done_p99_ms": {"runs": 100},
        "idle_worker_cpu_pct": {"running": 2000, "seconds": 10.0},
        "sleeping_10k_mb": {"runs": 10_000},
        "observer_off_ns": {"loops": 1_000_000},
        "untraced_step_us": {"steps": 200, "reps": 5},
        "traced_step_us": {"steps": 200, "reps": 5},
        "pydantic_ai_request_us": {"rounds": 20, "reps": 5},
        "openai_agents_request_us": {"rounds": 20, "reps": 5},
        "langgraph_saver_node_us": {"nodes": 100, "reps": 5},
        "import_ms": {"samples": 5},
    }

"""One benchmark child process per system: ``python -m bench._child SYSTEM --workdir DIR``.

Each system runs in a process of its own, so one's imports, threads and garbage
(DBOS's singleton, LangGraph's modules) never tax another's numbers, while the parent
still interleaves the systems workload by workload.

Protocol: one JSON object per line. The child first says ``{"ready": true,
"version": ...}`` (or ``{"error": ...}`` if its system cannot be imported); then for
each request ``{"workload": KEY, "params": {...}}`` it answers ``{"value": x}``,
``{"skipped": why}`` or ``{"error": why}``. Anything else printing to stdout (a
library, a tool) is diverted to stderr so it cannot break the protocol.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import traceback
from collections.abc import Callable
from importlib import metadata
from typing import Any, TextIO

Runner = Callable[[str, dict[str, Any]], Any]


def _version(dist: str) -> str:
    try:
        return f"{dist} {metadata.version(dist)}"
    except metadata.PackageNotFoundError:
        return f"{dist} (not installed as a distribution)"


def _latency(measure: Callable[[str, dict[str, Any]], dict[str, float]]) -> tuple[Runner, Runner]:
    """The median row and the p99 row of one latency measurement.

    The p99 row follows its median row in each repetition, so it reports the p99 of
    the samples the median row just took instead of measuring again.
    """
    last: list[dict[str, float]] = []

    def median(wd: str, p: dict[str, Any]) -> float:
        last[:] = [measure(wd, p)]
        return last[0]["value"]

    def p99(wd: str, p: dict[str, Any]) -> float:
        result = last.pop() if last else measure(wd, p)
        return result["p99"]

    return median, p99


def _floor() -> tuple[str, dict[str, Runner]]:
    from bench.peers import floor

    def lmdb_commit(wd: str, p: dict[str, Any]) -> float:
        return statistics.median(floor.lmdb_sync_commit_us(os.path.join(wd, "lmdb-floor"), p["n"]))

    def fdatasync(wd: str, p: dict[str, Any]) -> float:
        return statistics.median(floor.fdatasync_us(os.path.join(wd, "fdatasync.log"), p["n"]))

    return _version("lmdb"), {"lmdb_commit_us": lmdb_commit, "fdatasync_us": fdatasync}


def _ironflow() -> tuple[str, dict[str, Runner]]:
    from bench import _frameworks as f
    from bench import _ironflow as w
    from bench._proc import import_ms

    def remote(wd: str, p: dict[str, Any]) -> Any:
        why = w.serve_available()
        if why is not None:
            return {"skipped": why}
        return w.remote_per_step_us(wd, p["steps"], p["reps"])

    local, local_p99 = _latency(lambda wd, p: w.emit_to_done_ms(wd, p["runs"], "local"))
    served, served_p99 = _latency(lambda wd, p: w.emit_to_done_ms(wd, p["runs"], "serve"))
    return _version("ironflow"), {
        "emit_to_done_ms": local,
        "emit_to_done_p99_ms": local_p99,
        "serve_emit_to_done_ms": served,
        "serve_emit_to_done_p99_ms": served_p99,
        "idle_worker_cpu_pct": lambda wd, p: w.idle_worker_cpu_pct(wd, p["running"], p["seconds"]),
        "per_step_us": lambda wd, p: w.per_step_us(wd, p["steps"], p["reps"]),
        "three_step_runs_per_s": lambda wd, p: w.three_step_runs_per_s(wd, p["n_runs"]),
        "concurrent_steps_per_s": lambda wd, p: w.concurrent_steps_per_s(wd, p["runs"]),
        "concurrent_cpu_ms_per_run": lambda wd, p: w.concurrent_cpu_ms_per_run(wd, p["runs"]),
        "processes_steps_per_s": lambda wd, p: w.processes_steps_per_s(
            wd, p["runs"], p["processes"], p["concurrency"]
        ),
        "replay_ms": lambda wd, p: w.replay_ms(wd, p["steps"]),
        "resume_s": lambda wd, p: w.resume_s(wd),
        "remote_per_step_us": remote,
        "sleeping_10k_mb": lambda wd, p: w.sleeping_mb(wd, p["runs"]),
        "observer_off_ns": lambda wd, p: w.observer_off_ns(p["loops"]),
        "untraced_step_us": lambda wd, p: w.observed_step_us(wd, p["steps"], p["reps"], "none"),
        "traced_step_us": lambda wd, p: w.observed_step_us(wd, p["steps"], p["reps"], "tracing"),
        "pydantic_ai_request_us": lambda wd, p: f.pydantic_ai_request_us(
            wd, p["rounds"], p["reps"]
        ),
        "openai_agents_request_us": lambda wd, p: f.openai_agents_request_us(
            wd, p["rounds"], p["reps"]
        ),
        "langgraph_saver_node_us": lambda wd, p: f.langgraph_saver_node_us(
            wd, p["nodes"], p["reps"]
        ),
        "import_ms": lambda wd, p: import_ms(sys.executable, "import ironflow", p["samples"]),
    }


def _dbos() -> tuple[str, dict[str, Runner]]:
    from bench._proc import import_ms
    from bench.peers import dbos_peer as d

    def per_step(wd: str, p: dict[str, Any]) -> float:
        if d.sqlite_synchronous(wd) < 2:
            raise RuntimeError("DBOS's SQLite system database is not synchronous=FULL")
        return d.per_step_us(wd, p["steps"], p["reps"])

    latency, latency_p99 = _latency(lambda wd, p: d.emit_to_done_ms(wd, p["runs"]))
    return _version("dbos"), {
        "emit_to_done_ms": latency,
        "emit_to_done_p99_ms": latency_p99,
        "per_step_us": per_step,
        "three_step_runs_per_s": lambda wd, p: d.three_step_runs_per_s(wd, p["n_runs"]),
        "concurrent_steps_per_s": lambda wd, p: d.concurrent_steps_per_s(wd, p["runs"]),
        "resume_s": lambda wd, p: d.resume_after_kill_s(wd),
        "import_ms": lambda wd, p: import_ms(sys.executable, "import dbos", p["samples"]),
    }


def _langgraph() -> tuple[str, dict[str, Runner]]:
    from bench._proc import import_ms
    from bench.peers import langgraph_peer as g

    def per_step(wd: str, p: dict[str, Any]) -> float:
        if g.sqlite_synchronous(wd) < 2:
            raise RuntimeError("SqliteSaver's connection is not synchronous=FULL")
        return g.per_step_us(wd, p["steps"], p["reps"])

    def saver_node(wd: str, p: dict[str, Any]) -> float:
        """SqliteSaver on the checkpointer row's graph (IronflowSaver's is the same)."""
        from bench.peers.langgraph_savers import node_us

        saver, conn = g.sqlite_saver(wd)
        try:
            if conn.execute("PRAGMA synchronous").fetchone()[0] < 2:
                raise RuntimeError("SqliteSaver's connection is not synchronous=FULL")
            return node_us(saver, p["nodes"], p["reps"])
        finally:
            conn.close()

    stmt = "import langgraph.graph, langgraph.checkpoint.sqlite"
    latency, latency_p99 = _latency(lambda wd, p: g.emit_to_done_ms(wd, p["runs"]))
    return _version("langgraph"), {
        "emit_to_done_ms": latency,
        "emit_to_done_p99_ms": latency_p99,
        "per_step_us": per_step,
        "langgraph_saver_node_us": saver_node,
        "three_step_runs_per_s": lambda wd, p: g.three_step_runs_per_s(wd, p["n_runs"]),
        "concurrent_steps_per_s": lambda wd, p: g.concurrent_steps_per_s(wd, p["runs"]),
        "import_ms": lambda wd, p: import_ms(sys.executable, stmt, p["samples"]),
    }


def _pg_floor() -> tuple[str, dict[str, Runner]]:
    from bench import _pg

    def commit(wd: str, p: dict[str, Any]) -> float:
        if _pg.synchronous_commit(_pg.server_url()) != "on":
            raise RuntimeError("the bench's PostgreSQL does not commit synchronously")
        return statistics.median(_pg.insert_commit_us(p["n"]))

    return f"{_version('psycopg')}, PostgreSQL {_pg.server_version()}", {"pg_commit_us": commit}


def _ironflow_pg() -> tuple[str, dict[str, Runner]]:
    from bench import _ironflow_pg as w
    from bench._spec import PG_WORKERS

    runners: dict[str, Runner] = {
        "per_step_us": lambda wd, p: w.per_step_us(p["steps"], p["reps"]),
        "three_step_runs_per_s": lambda wd, p: w.three_step_runs_per_s(p["n_runs"]),
        "langgraph_saver_node_us": lambda wd, p: w.langgraph_saver_node_us(p["nodes"], p["reps"]),
    }
    for n in PG_WORKERS:
        runners[f"pg_workers_{n}_steps_per_s"] = lambda wd, p: w.workers_steps_per_s(
            p["workers"], p["runs"]
        )
    return f"{_version('ironflow')}, {_version('psycopg')}", runners


def _dbos_pg() -> tuple[str, dict[str, Runner]]:
    from bench.peers import dbos_peer as d

    def per_step(wd: str, p: dict[str, Any]) -> float:
        if d.pg_synchronous_commit(wd) != "on":
            raise RuntimeError("DBOS's PostgreSQL connection does not commit synchronously")
        return d.per_step_us(wd, p["steps"], p["reps"], pg=True)

    return _version("dbos"), {
        "per_step_us": per_step,
        "three_step_runs_per_s": lambda wd, p: d.three_step_runs_per_s(wd, p["n_runs"], pg=True),
    }


def _langgraph_pg() -> tuple[str, dict[str, Runner]]:
    from bench.peers import langgraph_peer as g

    def saver_node(wd: str, p: dict[str, Any]) -> float:
        """PostgresSaver on the checkpointer row's graph, on a fresh database."""
        from bench.peers.langgraph_savers import node_us

        with g.postgres_saver() as saver:
            return node_us(saver, p["nodes"], p["reps"])

    return _version("langgraph-checkpoint-postgres"), {"langgraph_saver_node_us": saver_node}


_LOADERS: dict[str, Callable[[], tuple[str, dict[str, Runner]]]] = {
    "floor": _floor,
    "ironflow": _ironflow,
    "dbos": _dbos,
    "langgraph": _langgraph,
    "pg_floor": _pg_floor,
    "ironflow_pg": _ironflow_pg,
    "dbos_pg": _dbos_pg,
    "langgraph_pg": _langgraph_pg,
}


def _send(out: TextIO, obj: dict[str, Any]) -> None:
    out.write(json.dumps(obj) + "\n")
    out.flush()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench._child")
    ap.add_argument("system", choices=sorted(_LOADERS))
    ap.add_argument("--workdir", required=True)
    args = ap.parse_args(argv)

    # The protocol keeps the real stdout; fd 1 (print, tools, libraries) goes to stderr.
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    try:
        version, runners = _LOADERS[args.system]()
    except Exception as exc:
        _send(out, {"error": f"cannot load {args.system}: {type(exc).__name__}: {exc}"})
        return 1
    _send(out, {"ready": True, "version": version, "python": sys.version.split()[0]})
    os.makedirs(args.workdir, exist_ok=True)
    for line in sys.stdin:
        req = json.loads(line)
        runner = runners.get(req["workload"])
        if runner is None:
            _send(out, {"error": f"{args.system} has no workload {req['workload']!r}"})
            continue
        try:
            result = runner(args.workdir, req.get("params", {}))
        except Exception as exc:  # one failing workload must not hide the others' numbers
            traceback.print_exc()
            _send(out, {"error": f"{type(exc).__name__}: {exc}"})
            continue
        if isinstance(result, dict):
            _send(out, result)
        else:
            _send(out, {"value": float(result)})
    return 0


if __name__ == "__main__":
    sys.exit(main())

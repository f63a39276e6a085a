"""The Ironflow workloads on PostgreSQL: a ``PostgresStore`` on a fresh, migrated
database of the bench's embedded server (``bench._pg``), fsync and
``synchronous_commit`` on.

The single-process rows reuse the LMDB rows' timing (``bench._ironflow``), so the
two stores are timed by the same code. The worker-process curve starts N worker
processes (``python -m bench._pg_worker URL``) on one database: the runs are emitted
first, every worker opens its store and says it is ready, then all are told to go at
once; the clock runs from "go" until the last worker finds nothing left to do.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

from bench._ironflow import _SPECS, _THREE, _per_step_us, _timed_runs
from bench._pg import fresh_database
from bench._proc import REPO
from ironflow.store._postgres import PostgresStore, migrate


def store(prefix: str) -> PostgresStore:
    """A PostgresStore on a fresh migrated database, the bench's agents registered."""
    url = fresh_database(prefix)
    migrate(url)
    s = PostgresStore(url)
    s.register_agents(_SPECS)
    return s


def per_step_us(steps: int, reps: int) -> float:
    """As ``bench._ironflow.per_step_us``, on PostgreSQL."""
    with store("ifsteps") as s:
        return _per_step_us(s, steps, reps)


def three_step_runs_per_s(n_runs: int) -> float:
    """As ``bench._ironflow.three_step_runs_per_s``, on PostgreSQL."""
    with store("ifthree") as s:
        _timed_runs(s, _THREE, "bench.three", [{"i": -1}])
        dt = _timed_runs(s, _THREE, "bench.three", [{"i": i} for i in range(n_runs)])
    return n_runs / dt


def langgraph_saver_node_us(nodes: int, reps: int) -> float:
    """The checkpointer row's graph on IronflowSaver over a PostgresStore."""
    from bench.peers.langgraph_savers import node_us
    from ironflow.contrib.langgraph import IronflowSaver

    with store("iflg") as s:
        return node_us(IronflowSaver(s), nodes, reps)


def workers_steps_per_s(workers: int, runs: int, timeout: float = 300.0) -> float:
    """Durable steps/s of ``workers`` worker processes (concurrency 1 each) serving
    ``runs`` 3-step runs from one database."""
    with store("ifworkers") as s:
        url = s.url
        run_ids = [rid for i in range(runs) for rid in s.emit("bench.three", {"i": i}).run_ids]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "bench._pg_worker", url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": REPO},
        )
        for _ in range(workers)
    ]
    try:
        for p in procs:
            assert p.stdout is not None
            if p.stdout.readline().strip() != "READY":
                raise RuntimeError(f"worker {p.pid} did not start (exit {p.poll()})")
        done: list[float] = []

        def wait(p: subprocess.Popen[str]) -> None:
            assert p.stdout is not None
            if p.stdout.readline().strip() == "DONE":
                done.append(time.perf_counter())

        waiters = [threading.Thread(target=wait, args=(p,)) for p in procs]
        for w in waiters:
            w.start()
        t0 = time.perf_counter()
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        for w in waiters:
            w.join(timeout)
        if len(done) != workers:
            raise RuntimeError(f"{workers - len(done)} of {workers} workers did not finish")
        dt = max(done) - t0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()  # by its pid: only a worker that failed to finish is left
            p.wait()
    with PostgresStore(url) as s:
        not_done = [r for r in run_ids if s.get_run(r).status != "completed"]
    if not_done:
        raise RuntimeError(f"{len(not_done)} of {runs} runs did not complete")
    return runs * 3 / dt


__all__ = [
    "langgraph_saver_node_us",
    "per_step_us",
    "store",
    "three_step_runs_per_s",
    "workers_steps_per_s",
]

"""LangGraph peer: a chain of no-op nodes checkpointed by SqliteSaver, durability="sync".

Durability as shipped: ``SqliteSaver.setup()`` switches the file to
``journal_mode=WAL`` and leaves ``synchronous`` at SQLite's compiled default,
which is FULL (2) for the sqlite3 module here, so every checkpoint/writes
commit fsyncs the WAL. ``durability="sync"`` makes each superstep's
checkpoint persist before the next node starts. If a build ever reports
synchronous=OFF we raise it to FULL, since otherwise the comparison would not
be against durable writes.
"""

from __future__ import annotations

import os
import sqlite3
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, TypedDict

from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.graph import END, START, StateGraph

_SYNC_FULL = 2


class _State(TypedDict, total=False):
    x: int
    last: str


def _node(name: str) -> Any:
    def fn(state: _State) -> dict[str, Any]:
        return {"last": name}

    return fn


def _build(n_nodes: int, saver: SqliteSaver) -> Any:
    g = StateGraph(_State)
    prev = START
    for i in range(n_nodes):
        name = f"n{i}"
        g.add_node(name, _node(name))
        g.add_edge(prev, name)
        prev = name
    g.add_edge(prev, END)
    return g.compile(checkpointer=saver)


@contextmanager
def postgres_saver() -> Iterator[Any]:
    """LangGraph's PostgresSaver on a fresh database of the bench's PostgreSQL server, set
    up as its docs say (``from_conn_string``, then ``setup()``); the server commits
    synchronously (checked on the saver's own connection)."""
    from langgraph.checkpoint.postgres import PostgresSaver

    from bench._pg import fresh_database

    with PostgresSaver.from_conn_string(fresh_database("lgsaver")) as saver:
        saver.setup()
        row = saver.conn.execute("SHOW synchronous_commit").fetchone()
        setting = row["synchronous_commit"] if isinstance(row, dict) else row[0]
        if setting != "on":
            raise RuntimeError(f"PostgresSaver's connection has synchronous_commit={setting}")
        yield saver


def sqlite_saver(workdir: str) -> tuple[SqliteSaver, sqlite3.Connection]:
    """A SqliteSaver on a fresh file under ``workdir``, set up as shipped, and its connection."""
    os.makedirs(workdir, exist_ok=True)
    fresh = tempfile.mkdtemp(prefix="langgraph-", dir=workdir)
    # check_same_thread=False as the SqliteSaver docs suggest; it serialises
    # access with its own lock.
    conn = sqlite3.connect(os.path.join(fresh, "checkpoints.sqlite"), check_same_thread=False)
    saver = SqliteSaver(conn)
    saver.setup()
    if conn.execute("PRAGMA synchronous").fetchone()[0] == 0:
        conn.execute("PRAGMA synchronous=FULL")
    return saver, conn


def sqlite_synchronous(workdir: str) -> int:
    """The synchronous pragma a SqliteSaver connection ends up with (2 = FULL)."""
    _, conn = sqlite_saver(workdir)
    try:
        return int(conn.execute("PRAGMA synchronous").fetchone()[0])
    finally:
        conn.close()


def _invoke(graph: Any, steps: int) -> None:
    cfg = {"configurable": {"thread_id": uuid.uuid4().hex}, "recursion_limit": steps + 10}
    graph.invoke({"x": 0}, cfg, durability="sync")


def three_step_runs_per_s(workdir: str, n_runs: int) -> float:
    """Sequential throughput of a 3-node graph, fresh thread_id per run, in runs/s.

    One untimed warm-up run is done first so lazy initialisation is excluded.
    """
    saver, conn = sqlite_saver(workdir)
    try:
        graph = _build(3, saver)
        _invoke(graph, 3)
        t0 = time.perf_counter()
        for _ in range(n_runs):
            _invoke(graph, 3)
        dt = time.perf_counter() - t0
    finally:
        conn.close()
    return n_runs / dt


def per_step_us(workdir: str, steps: int = 100, reps: int = 5) -> float:
    """Marginal cost of one checkpointed node, in µs: median of (t_steps - t_1)/(steps - 1)."""
    saver, conn = sqlite_saver(workdir)
    samples: list[float] = []
    try:
        many = _build(steps, saver)
        one = _build(1, saver)
        _invoke(one, 1)
        _invoke(many, steps)
        for _ in range(reps):
            t0 = time.perf_counter()
            _invoke(many, steps)
            t_many = time.perf_counter() - t0
            t0 = time.perf_counter()
            _invoke(one, 1)
            t_one = time.perf_counter() - t0
            samples.append((t_many - t_one) / (steps - 1) * 1e6)
    finally:
        conn.close()
    return statistics.median(samples)


def concurrent_steps_per_s(workdir: str, runs: int = 16) -> float:
    """Total node throughput with `runs` 3-node graphs invoked from as many threads, in steps/s.

    All threads share one connection (SqliteSaver's lock serialises them),
    each with its own thread_id.
    """
    saver, conn = sqlite_saver(workdir)
    try:
        graph = _build(3, saver)
        _invoke(graph, 3)
        with ThreadPoolExecutor(max_workers=runs) as pool:
            t0 = time.perf_counter()
            futures = [pool.submit(_invoke, graph, 3) for _ in range(runs)]
            for f in futures:
                f.result(timeout=60)
            dt = time.perf_counter() - t0
    finally:
        conn.close()
    return runs * 3 / dt


def emit_to_done_ms(workdir: str, runs: int) -> dict[str, float]:
    """A 3-node graph invoked directly (durability="sync"), in ms: LangGraph's floor.

    LangGraph has no worker to hand a run to, so this is what a caller waits when it
    runs the graph itself: the lower bound for any hand-off. Same idle pause, median
    and p99 of ``runs`` (one warm-up) as the other systems' rows.
    """
    saver, conn = sqlite_saver(workdir)
    out = []
    try:
        graph = _build(3, saver)
        for i in range(runs + 1):
            time.sleep(0.02)
            t0 = time.perf_counter()
            _invoke(graph, 3)
            if i:
                out.append((time.perf_counter() - t0) * 1e3)
    finally:
        conn.close()
    ordered = sorted(out)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return {"value": statistics.median(ordered), "p99": p99}

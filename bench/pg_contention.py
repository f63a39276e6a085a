"""Why N workers on one PostgreSQL database go slower than one: counts, not timings.

``python -m bench.pg_contention [--runs N] [--workers 1,2,4]`` starts an embedded
PostgreSQL (fsync on, as ``make bench``), and for each worker count does what the
bench's worker curve does (``bench/_ironflow_pg.py``): ``--runs`` 3-step runs emitted
first, then N worker processes (concurrency 1 each) serve them all. Each worker counts,
per store call, its write transactions' attempts and why each failed attempt failed
(PostgreSQL's error and reason code); the database's ``pg_stat_database`` counters
(commits and rollbacks) are read before and after. The machine's load moves the
timings, not these counts' meaning: a rollback is a transaction done twice.

Needs the ``test`` extra (the server).
"""

from __future__ import annotations

import argparse
import collections
import functools
import json
import os
import subprocess
import sys
import threading
import time
from typing import Any

#: The store calls whose write transactions are counted.
_METHODS = (
    "lease_runs",
    "record_step",
    "finish_run",
    "finish_and_lease",
    "heartbeat",
    "release_run",
)


def _why(exc: BaseException) -> str:
    """A failed attempt's class: the SQLSTATE's name and PostgreSQL's reason."""
    diag = getattr(exc, "diag", None)
    detail = (getattr(diag, "message_detail", None) or "").split(".")[0]
    primary = (getattr(diag, "message_primary", None) or str(exc)).split(":")[0]
    return f"{type(exc).__name__}: {primary}" + (f" ({detail})" if detail else "")


def _inner(url: str) -> None:
    """One worker: serve the 3-step agent until idle, print the counts as JSON."""
    from bench import _agents
    from ironflow import Worker
    from ironflow._agent._dsl import AgentDefinition
    from ironflow.store._postgres import PostgresStore

    local = threading.local()
    calls: collections.Counter[str] = collections.Counter()
    attempts: collections.Counter[str] = collections.Counter()
    failures: collections.Counter[str] = collections.Counter()
    wakes = [0]
    lock = threading.Lock()
    store = PostgresStore(url)
    backend = store.backend
    attempt = backend._attempt

    def counted_attempt(op: Any) -> Any:
        name = getattr(local, "name", "(other)")
        with lock:
            attempts[name] += 1
        try:
            return attempt(op)
        except Exception as exc:
            with lock:
                failures[f"{name}: {_why(exc)}"] += 1
            raise

    backend._attempt = counted_attempt  # type: ignore[method-assign]

    def marked(name: str, method: Any) -> Any:
        @functools.wraps(method)
        def call(*args: Any, **kwargs: Any) -> Any:
            local.name = name
            with lock:
                calls[name] += 1
            try:
                return method(*args, **kwargs)
            finally:
                local.name = "(other)"

        return call

    for name in _METHODS:
        setattr(store, name, marked(name, getattr(store, name)))
    on_wake = backend.on_wake

    def woken() -> None:
        wakes[0] += 1
        if on_wake is not None:
            on_wake()

    backend.on_wake = woken
    worker = Worker([AgentDefinition.must_from_fn(_agents.three_steps)], store=store, concurrency=1)
    print("READY", flush=True)
    sys.stdin.readline()
    worker.run(until_idle=True, ready_message=False)
    out = {"calls": calls, "attempts": attempts, "failures": failures, "wakes": wakes[0]}
    print(json.dumps(out), flush=True)
    store.close()


def _stats(admin: str, db: str) -> dict[str, int]:
    import psycopg

    with psycopg.connect(admin, autocommit=True) as conn:
        # Stats are flushed by each backend at its transaction's end, read through a
        # snapshot cache: clear it so this read is current.
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute(
            "SELECT xact_commit, xact_rollback, deadlocks, conflicts FROM pg_stat_database "
            "WHERE datname = %s",
            (db,),
        ).fetchone()
    assert row is not None
    return dict(zip(("commits", "rollbacks", "deadlocks", "conflicts"), map(int, row), strict=True))


def _one(pg: Any, workers: int, runs: int) -> dict[str, Any]:
    from bench._ironflow import _SPECS
    from ironflow.store._postgres import PostgresStore, migrate

    db = f"contention_{workers}"
    url = pg.create_database(db)
    migrate(url)
    with PostgresStore(url) as s:
        s.register_agents(_SPECS)
        for i in range(runs):
            s.emit("bench.three", {"i": i})
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "bench.pg_contention", "--inner", url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(workers)
    ]
    results: list[dict[str, Any]] = []
    try:
        for p in procs:
            assert p.stdout is not None
            if p.stdout.readline().strip() != "READY":
                raise RuntimeError(f"worker {p.pid} did not start")
        time.sleep(0.5)  # the workers' own start-up transactions land before "before"
        before = _stats(pg.url("postgres"), db)
        t0 = time.perf_counter()
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        for p in procs:
            assert p.stdout is not None
            results.append(json.loads(p.stdout.readline()))
        dt = time.perf_counter() - t0
    finally:
        for p in procs:
            if p.poll() is None:
                p.wait(timeout=30)
    time.sleep(0.7)  # backends report their counters at most every 0.5 s when idle
    after = _stats(pg.url("postgres"), db)
    total: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    wakes = 0
    for r in results:
        for k in ("calls", "attempts", "failures"):
            total[k].update(r[k])
        wakes += r["wakes"]
    return {
        "workers": workers,
        "seconds": dt,
        "steps_per_s": runs * 3 / dt,
        "db": {k: after[k] - before[k] for k in after},
        "calls": dict(total["calls"]),
        "attempts": dict(total["attempts"]),
        "failures": dict(total["failures"]),
        "wakes": wakes,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=120, help="3-step runs (default 120)")
    parser.add_argument(
        "--workers", default="1,2,4", help="worker counts, comma-separated (default 1,2,4)"
    )
    parser.add_argument("--fsync", choices=("on", "off"), default="on", help="the server's fsync")
    parser.add_argument("--inner", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.inner:
        _inner(args.inner)
        return 0
    from tests.support.postgres import EmbeddedPostgres

    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    with EmbeddedPostgres(fsync=args.fsync == "on") as pg:
        for n in (int(w) for w in args.workers.split(",")):
            r = _one(pg, n, args.runs)
            db = r["db"]
            print(
                f"\n{n} worker(s), {args.runs} runs: {r['steps_per_s']:.0f} steps/s; "
                f"database: {db['commits']} commits, {db['rollbacks']} rollbacks "
                f"({db['rollbacks'] / args.runs:.2f} a run), {db['deadlocks']} deadlocks; "
                f"wake-ups heard: {r['wakes']}"
            )
            print(f"  {'call':<12} {'calls':>6} {'write txns':>10} {'failed':>6}")
            for name in _METHODS:
                c, a = r["calls"].get(name, 0), r["attempts"].get(name, 0)
                failed = sum(v for k, v in r["failures"].items() if k.startswith(name + ":"))
                if c or a:
                    print(f"  {name:<12} {c:>6} {a:>10} {failed:>6}")
            for why, count in sorted(r["failures"].items(), key=lambda kv: -kv[1]):
                print(f"  failed {count:>4}x  {why}")
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Why N workers on one PostgreSQL database go slower than one: counts, not timings.

``python -m bench.pg_contention [--runs N] [--workers 1,2,4]`` starts an embedded
PostgreSQL (fsync on, as ``make bench``), and for each worker count does what the
bench's worker curve does (``bench/_ironflow_pg.py``): ``--runs`` 3-step runs emitted
first, then N worker processes (concurrency 1 each) serve them all. Each worker counts,
per store call, its write transactions' attempts and why each failed attempt failed
(PostgreSQL's error and reason code); the database's ``pg_stat_database`` counters
(commits and rollbacks) are read before and after. The machine's load moves the
timings, not these counts' meaning: a rollback is a transaction done twice.

Where the curve flattens is a question of CPU on a small host, so each run also says
how many CPU seconds the workers used (their own ``getrusage``) and the PostgreSQL
server (its processes' ``/proc`` times: the postmaster, its live children and those it
reaped), per run, and the wall time the workers spent inside each store call.

Needs the ``test`` extra (the server).
"""

from __future__ import annotations

import argparse
import collections
import functools
import json
import os
import resource
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


def _inner(url: str, lease_lock: bool) -> None:
    """One worker: serve the 3-step agent until idle, print the counts as JSON."""
    from bench import _agents
    from ironflow import Worker
    from ironflow._agent._dsl import AgentDefinition
    from ironflow.store._postgres import PostgresStore

    local = threading.local()
    calls: collections.Counter[str] = collections.Counter()
    seconds: collections.defaultdict[str, float] = collections.defaultdict(float)
    attempts: collections.Counter[str] = collections.Counter()
    failures: collections.Counter[str] = collections.Counter()
    wakes = [0]
    lock = threading.Lock()
    store = PostgresStore(url)
    backend = store.backend
    if not lease_lock:
        backend.lease_lock_wait = None

    def counting(attempt: Any) -> Any:
        def counted(*args: Any) -> Any:
            name = getattr(local, "name", "(other)")
            with lock:
                attempts[name] += 1
            try:
                return attempt(*args)
            except Exception as exc:
                with lock:
                    failures[f"{name}: {_why(exc)}"] += 1
                raise

        return counted

    # Both ways a write is tried: the pipeline, and a speculative step's one statement
    # (a stale guard counts as a failed attempt, "_Stale").
    backend._attempt = counting(backend._attempt)  # type: ignore[method-assign]
    backend._attempt_one = counting(backend._attempt_one)  # type: ignore[method-assign]

    def marked(name: str, method: Any) -> Any:
        @functools.wraps(method)
        def call(*args: Any, **kwargs: Any) -> Any:
            local.name = name
            with lock:
                calls[name] += 1
            begun = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                local.name = "(other)"
                with lock:
                    seconds[name] += time.perf_counter() - begun

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
    cpu = _own_cpu()
    worker.run(until_idle=True, ready_message=False)
    out = {
        "calls": calls,
        "attempts": attempts,
        "failures": failures,
        "wakes": wakes[0],
        "seconds": seconds,
        "cpu": _own_cpu() - cpu,
    }
    print(json.dumps(out), flush=True)
    store.close()


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _server_cpu(pid: int) -> float:
    """CPU seconds of the PostgreSQL server so far: the postmaster's own, those of the
    children it reaped (exited backends), and its live children's (from ``/proc``)."""
    tick = os.sysconf("SC_CLK_TCK")

    def fields(p: int | str) -> list[str]:
        with open(f"/proc/{p}/stat") as f:
            # After the command's closing parenthesis: state, ppid, ... (see proc(5)).
            return f.read().rsplit(")", 1)[1].split()

    own = fields(pid)
    total = sum(int(x) for x in own[11:15])  # utime, stime, cutime, cstime
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                f = fields(entry)
            except OSError:
                continue  # gone meanwhile: its time is in the postmaster's cutime
            if int(f[1]) == pid:
                total += int(f[11]) + int(f[12])
    return total / tick


def _stats(admin: str, db: str) -> dict[str, int]:
    import psycopg

    with psycopg.connect(admin, autocommit=True) as conn:
        # Stats are flushed by each backend at its transaction's end, read through a
        # snapshot cache: clear it so this read is current.
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute(
            "SELECT xact_commit, xact_rollback, deadlocks, conflicts, sessions"
            " FROM pg_stat_database "
            "WHERE datname = %s",
            (db,),
        ).fetchone()
    assert row is not None
    names = ("commits", "rollbacks", "deadlocks", "conflicts", "sessions")
    return dict(zip(names, map(int, row), strict=True))


def _one(pg: Any, workers: int, runs: int, lease_lock: bool) -> dict[str, Any]:
    from bench._ironflow import _SPECS
    from ironflow.store._postgres import PostgresStore, migrate

    db = f"contention_{workers}"
    pid = pg.pid
    assert pid is not None, "the server is not running"
    url = pg.create_database(db)
    migrate(url)
    with PostgresStore(url) as s:
        s.register_agents(_SPECS)
        for i in range(runs):
            s.emit("bench.three", {"i": i})
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "bench.pg_contention", "--inner", url]
            + ([] if lease_lock else ["--lease-lock", "off"]),
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
        server_cpu = _server_cpu(pid)
        load = os.getloadavg()[0]
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
    # The workers' backends have exited by now: their time is in the postmaster's.
    server_cpu = _server_cpu(pid) - server_cpu
    total: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    wakes = 0
    seconds_in: dict[str, float] = {}
    for r in results:
        for k in ("calls", "attempts", "failures"):
            total[k].update(r[k])
        for name, secs in r["seconds"].items():
            seconds_in[name] = seconds_in.get(name, 0.0) + secs
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
        "seconds_in": seconds_in,
        "worker_cpu": sum(r["cpu"] for r in results),
        "server_cpu": server_cpu,
        "load": load,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=120, help="3-step runs (default 120)")
    parser.add_argument(
        "--workers", default="1,2,4", help="worker counts, comma-separated (default 1,2,4)"
    )
    parser.add_argument("--fsync", choices=("on", "off"), default="on", help="the server's fsync")
    parser.add_argument(
        "--lease-lock",
        choices=("on", "off"),
        default="on",
        help="the leasers' advisory lock (default on, as a PostgresStore takes it)",
    )
    parser.add_argument("--inner", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.inner:
        _inner(args.inner, args.lease_lock == "on")
        return 0
    from tests.support.postgres import EmbeddedPostgres

    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    with EmbeddedPostgres(fsync=args.fsync == "on") as pg:
        for n in (int(w) for w in args.workers.split(",")):
            r = _one(pg, n, args.runs, args.lease_lock == "on")
            db = r["db"]
            print(
                f"\n{n} worker(s), {args.runs} runs: {r['steps_per_s']:.0f} steps/s; "
                f"database: {db['commits']} commits, {db['rollbacks']} rollbacks "
                f"({db['rollbacks'] / args.runs:.2f} a run), {db['deadlocks']} deadlocks, "
                f"{db['sessions']} sessions opened; "
                f"wake-ups heard: {r['wakes']}"
            )
            ms = 1000 / args.runs
            print(
                f"  CPU a run: workers {r['worker_cpu'] * ms:.2f} ms, PostgreSQL "
                f"{r['server_cpu'] * ms:.2f} ms (wall {r['seconds'] * ms:.2f} ms a run, "
                f"x{n} workers: {(r['worker_cpu'] + r['server_cpu']) / r['seconds']:.2f} "
                f"cores busy; load {r['load']:.2f} at go)"
            )
            print(f"  {'call':<16} {'calls':>6} {'write txns':>10} {'failed':>6} {'ms a call':>9}")
            for name in _METHODS:
                c, a = r["calls"].get(name, 0), r["attempts"].get(name, 0)
                failed = sum(v for k, v in r["failures"].items() if k.startswith(name + ":"))
                if c or a:
                    inside = r["seconds_in"].get(name, 0.0) * 1000 / max(c, 1)
                    print(f"  {name:<16} {c:>6} {a:>10} {failed:>6} {inside:>9.2f}")
            for why, count in sorted(r["failures"].items(), key=lambda kv: -kv[1]):
                print(f"  failed {count:>4}x  {why}")
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

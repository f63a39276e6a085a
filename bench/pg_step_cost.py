"""What a recorded step costs on PostgreSQL, in the measures a loaded host blurs least:
the server's CPU, the client's CPU and the WAL bytes a ``record_step``.

``python -m bench.pg_step_cost [--steps N] [--rounds R]`` starts an embedded PostgreSQL
(fsync off: the disk is not what is measured), and for each of R rounds leases a fresh
run, records a few steps to warm up (prepared statements, the remembered lease), runs
a ``CHECKPOINT``, then records N steps through ``PostgresStore.record_step`` as a worker
does (speculative: one statement a step). It prints, per step: the server's CPU (every
process of the postmaster, ``/proc/PID/schedstat``: nanoseconds, not clock ticks), the
client's (``getrusage`` of this process), the wall time and the WAL written
(``pg_current_wal_lsn()`` before and after: a count, which no load can blur); then the
medians. To compare two versions of the code, run it from each checkout in turn
(``PYTHONPATH=<checkout>``), several times, interleaved.

Needs the ``test`` extra (the embedded server) and Linux (``/proc``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

from bench._pg import client_cpu_s, server_cpu_s


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=1000, help="steps a round (default 1000)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds (default 5)")
    args = parser.parse_args(argv)
    import psycopg

    from ironflow._worker._identity import this_worker
    from ironflow.store import AgentSpec, StepRecord
    from ironflow.store._postgres import PostgresStore, migrate
    from tests.support.postgres import EmbeddedPostgres

    me = this_worker()
    with EmbeddedPostgres(fsync=False) as pg:
        url = pg.create_database("steps")
        migrate(url)
        postmaster = pg.pid
        assert postmaster is not None
        store = PostgresStore(url)
        lsn = b"SELECT pg_current_wal_lsn() - '0/0'::pg_lsn"
        try:
            store.register_agents([AgentSpec("a", ("go",))])
            rows = []
            with psycopg.connect(url, autocommit=True) as monitor:
                for _ in range(args.rounds):
                    store.emit("go", {})
                    [leased] = store.lease_runs(me, ["a"], limit=1, ttl=3600)
                    run, attempt = leased.run.id, leased.lease.attempt

                    def step(i: int, run: str = run, attempt: int = attempt) -> StepRecord:
                        now = time.time()
                        return StepRecord(
                            run, i, f"tool-{i}", "completed", {"i": i}, {"out": i}, now, now,
                            attempt=attempt, worker=me.id,
                        )  # fmt: skip

                    for i in range(10):
                        store.record_step(me, step(i))
                    monitor.execute(b"CHECKPOINT")
                    wal = int(monitor.execute(lsn).fetchone()[0])  # type: ignore[index]
                    client, server = client_cpu_s(), server_cpu_s(postmaster)
                    wall = time.perf_counter()
                    for i in range(10, 10 + args.steps):
                        store.record_step(me, step(i))
                    wall = time.perf_counter() - wall
                    client = client_cpu_s() - client
                    server = server_cpu_s(postmaster) - server
                    wal = int(monitor.execute(lsn).fetchone()[0]) - wal  # type: ignore[index]
                    store.finish_run(me, run, status="completed", attempt=attempt)
                    row = [1e6 * x / args.steps for x in (server, client, wall)]
                    row.append(wal / args.steps)
                    rows.append(row)
                    print(
                        f"server CPU {row[0]:7.1f} µs  client CPU {row[1]:7.1f} µs  "
                        f"wall {row[2]:7.1f} µs  WAL {row[3]:6.1f} bytes  a step",
                        flush=True,
                    )
            speculated, stale = store.backend.speculated, store.backend.stale
        finally:
            store.close()
    medians = [statistics.median(col) for col in zip(*rows, strict=True)]
    print(
        f"median of {args.rounds} x {args.steps} steps (speculative {speculated}, stale "
        f"{stale}): server CPU {medians[0]:.1f} µs, client CPU {medians[1]:.1f} µs, wall "
        f"{medians[2]:.1f} µs, WAL {medians[3]:.1f} bytes; load {os.getloadavg()[0]:.1f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

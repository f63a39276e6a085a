"""CPU an emit costs the client and the server, on PostgreSQL: what a loaded host blurs
least, since a process's CPU is its own whatever else runs.

``python -m bench.pg_emit_cpu [--emits N] [--rounds R] [--via direct|cursor] [--fsync]``
starts an embedded PostgreSQL (fsync off unless ``--fsync``: the disk is not what is
measured), registers the bench's
agents (one 3-step agent on ``bench.three``), makes a few emits to warm up (prepared
statements, remembered rows), then R rounds of N emits of ``bench.three``, as the
3-step row's emits. Each round prints, per emit: the client's CPU (``getrusage`` of
this process, user + system), the server's (every process of the postmaster, from
``/proc``), and the wall time; then the medians. ``--via cursor`` sends a speculative
emit's statement through a psycopg cursor instead of libpq's calls
(``store/_pgdirect.py``), to compare the two.

Needs the ``test`` extra (the embedded server) and Linux (``/proc``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Any

from bench._pg import client_cpu_s, server_cpu_s


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--emits", type=int, default=1000, help="emits a round (default 1000)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds (default 5)")
    parser.add_argument(
        "--via",
        choices=("direct", "cursor"),
        default="direct",
        help="how a speculative emit's statement is sent (default: direct, as the store does)",
    )
    parser.add_argument(
        "--fsync", action="store_true", help="fsync on, as make bench (default off: CPU only)"
    )
    args = parser.parse_args(argv)
    from bench._ironflow import _SPECS
    from ironflow.store._postgres import PostgresStore, migrate
    from tests.support.postgres import EmbeddedPostgres

    with EmbeddedPostgres(fsync=args.fsync) as pg:
        url = pg.create_database("emits")
        migrate(url)
        postmaster = pg.pid
        assert postmaster is not None
        store = PostgresStore(url)
        try:
            backend: Any = store.backend
            if args.via == "cursor" and hasattr(backend, "direct"):
                backend.direct.run = lambda conn, sql, params: conn.execute(sql, params)
            store.register_agents(_SPECS)
            for i in range(20):
                store.emit("bench.three", {"i": -i})
            rows = []
            for _ in range(args.rounds):
                client, server, wall = client_cpu_s(), server_cpu_s(postmaster), time.perf_counter()
                for i in range(args.emits):
                    store.emit("bench.three", {"i": i})
                wall = time.perf_counter() - wall
                client = client_cpu_s() - client
                server = server_cpu_s(postmaster) - server
                row = [1e6 * x / args.emits for x in (client, server, wall)]
                rows.append(row)
                print(
                    f"client CPU {row[0]:7.1f} µs  server CPU {row[1]:7.1f} µs  "
                    f"wall {row[2]:7.1f} µs  an emit",
                    flush=True,
                )
            speculated = getattr(backend, "speculated", 0)
        finally:
            store.close()
    medians = [statistics.median(col) for col in zip(*rows, strict=True)]
    print(
        f"median of {args.rounds} x {args.emits} emits ({args.via}; speculative statements "
        f"{speculated}): client CPU {medians[0]:.1f} µs, server CPU {medians[1]:.1f} µs, "
        f"wall {medians[2]:.1f} µs; load {os.getloadavg()[0]:.1f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

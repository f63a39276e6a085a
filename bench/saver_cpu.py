"""CPU a node of the checkpointer row's graph costs, per saver, fsync off: what a loaded
host blurs least, since a process's CPU is its own whatever else runs.

``python -m bench.saver_cpu [--nodes N] [--rounds R] [--postgres]`` runs the row's graph
(``bench.peers.langgraph_savers``) on IronflowSaver over ``LmdbStore(sync=False)`` and on
SqliteSaver (``synchronous=OFF``), taking turns, R rounds of one invoke of N nodes each;
with ``--postgres``, IronflowSaver on a PostgresStore and PostgresSaver, each on its own
database of one embedded PostgreSQL (fsync off). Per node it prints the client's CPU
(``getrusage`` of this process: user + system, the graph's own work included), with
``--postgres`` the server's (every process of the postmaster, from ``/proc``, in clock
ticks: 10 ms / N resolution), and the wall time; then the medians.

Needs the ``bench`` and ``test`` extras (the embedded server) and Linux (``/proc``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

from bench._pg import client_cpu_s, server_cpu_s
from bench.saver_syscalls import _SAVERS, _saver


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=200, help="nodes an invoke (default 200)")
    parser.add_argument("--rounds", type=int, default=7, help="invokes timed a saver (default 7)")
    parser.add_argument(
        "--postgres", action="store_true", help="IronflowSaver(PostgresStore) vs PostgresSaver"
    )
    args = parser.parse_args(argv)
    from bench.peers.langgraph_savers import _invoke, build

    kinds = _SAVERS[args.postgres]
    rows: dict[str, list[list[float]]] = {kind: [] for kind in kinds}
    with tempfile.TemporaryDirectory() as tmp:
        pg = None
        if args.postgres:
            from ironflow.store._postgres import migrate
            from tests.support.postgres import EmbeddedPostgres

            pg = EmbeddedPostgres(fsync=False).__enter__()
        try:
            graphs = {}
            for kind in kinds:
                if pg is not None:
                    where = pg.create_database(f"saver_{kind}")
                    if kind == "ironflow_pg":
                        migrate(where)
                else:
                    where = tempfile.mkdtemp(dir=tmp)
                graphs[kind] = build(_saver(kind, where))
                _invoke(graphs[kind], args.nodes)  # untimed: imports, the first reads
            for _ in range(args.rounds):
                for kind in kinds:
                    server = server_cpu_s(pg.pid) if pg is not None and pg.pid else 0.0
                    client, wall = client_cpu_s(), time.perf_counter()
                    _invoke(graphs[kind], args.nodes)
                    wall = time.perf_counter() - wall
                    client = client_cpu_s() - client
                    if pg is not None and pg.pid:
                        server = server_cpu_s(pg.pid) - server
                    row = [1e6 * x / args.nodes for x in (client, server, wall)]
                    rows[kind].append(row)
                    server_part = f"server CPU {row[1]:7.0f} µs  " if pg is not None else ""
                    print(
                        f"{kind:<12} client CPU {row[0]:7.0f} µs  {server_part}"
                        f"wall {row[2]:7.0f} µs  a node",
                        flush=True,
                    )
        finally:
            if pg is not None:
                pg.__exit__(None, None, None)
    print(f"medians of {args.rounds} invokes of {args.nodes} nodes, fsync off, µs a node:")
    for kind, got in rows.items():
        medians = [statistics.median(col) for col in zip(*got, strict=True)]
        spread = [f"{min(col):.0f}-{max(col):.0f}" for col in zip(*got, strict=True)]
        server_part = f"server CPU {medians[1]:.0f} [{spread[1]}]  " if args.postgres else ""
        print(
            f"{kind:<12} client CPU {medians[0]:.0f} [{spread[0]}]  {server_part}"
            f"wall {medians[2]:.0f} [{spread[2]}]"
        )
    print(f"load {os.getloadavg()[0]:.1f} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())

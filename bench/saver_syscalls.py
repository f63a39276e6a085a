"""System calls a node of the checkpointer row's graph makes, per saver, fsync off: counts
the machine's load cannot blur, as it blurs the row's timings on a shared 2-core host.

``python -m bench.saver_syscalls [--nodes N] [--invokes K] [--postgres]`` runs itself
again under ``strace -f`` once per saver: IronflowSaver on ``LmdbStore(sync=False)`` and
SqliteSaver (``synchronous=OFF``); with ``--postgres``, IronflowSaver on a PostgresStore
and PostgresSaver, on an embedded PostgreSQL (fsync off) started outside the trace, so
only the client's calls are counted. The inner process runs the row's graph
(``bench.peers.langgraph_savers``) once untimed, then K invokes of N nodes between two
markers it writes to ``/dev/null``; the calls between them are divided by K x N (each
invoke's first read and input checkpoint included). It prints, per node, the futex calls
(a thread woken or waiting), the sends, the answers waited for (each ``recvfrom`` that
returned data) and all calls.

Needs ``strace`` (``make strace``) and the ``bench`` and ``test`` extras.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import subprocess
import sys
import tempfile
from typing import Any

_MARK = re.compile(r'^\d+\s+write\(\d+, "@(begin|end)"')
#: A call's line, or its first half (``<unfinished ...>``) when another thread's came between.
_CALL = re.compile(r"^\d+\s+(\w+)\(")
#: A call's answer: on its line, or on its second half (``<... name resumed>``).
_RESULT = re.compile(r"^\d+\s+(?:<\.\.\. )?(\w+)[ (].*\)\s+=\s+(-?\d+)")
_SAVERS = {False: ("ironflow", "sqlite"), True: ("ironflow_pg", "postgres")}


def _saver(kind: str, where: str) -> Any:
    if kind == "ironflow":
        from ironflow.contrib.langgraph import IronflowSaver
        from ironflow.store import LmdbStore

        return IronflowSaver(LmdbStore(os.path.join(where, "lmdb"), sync=False))
    if kind == "sqlite":
        import sqlite3

        from langgraph.checkpoint.sqlite import SqliteSaver

        conn = sqlite3.connect(os.path.join(where, "c.sqlite"), check_same_thread=False)
        sqlite = SqliteSaver(conn)
        sqlite.setup()
        conn.execute("PRAGMA synchronous=OFF")
        return sqlite
    if kind == "ironflow_pg":
        from ironflow.contrib.langgraph import IronflowSaver
        from ironflow.store._postgres import PostgresStore

        return IronflowSaver(PostgresStore(where))
    from langgraph.checkpoint.postgres import PostgresSaver
    from psycopg import Connection
    from psycopg.rows import dict_row

    conn = Connection.connect(where, autocommit=True, prepare_threshold=0, row_factory=dict_row)
    postgres = PostgresSaver(conn)  # as PostgresSaver.from_conn_string sets it up
    postgres.setup()
    return postgres


def _inner(kind: str, where: str, nodes: int, invokes: int) -> None:
    from bench.peers.langgraph_savers import _invoke, build

    graph = build(_saver(kind, where))
    _invoke(graph, nodes)
    null = os.open(os.devnull, os.O_WRONLY)
    os.write(null, b"@begin")
    for _ in range(invokes):
        _invoke(graph, nodes)
    os.write(null, b"@end")


def _count(trace: str) -> collections.Counter[str]:
    calls: collections.Counter[str] = collections.Counter()
    measuring = False
    with open(trace) as f:
        for line in f:
            mark = _MARK.match(line)
            if mark:
                measuring = mark.group(1) == "begin"
                continue
            if not measuring:
                continue
            call = _CALL.match(line)
            if call is not None:  # each call once: its line or its first half
                calls[call.group(1)] += 1
                calls["(all)"] += 1
            answer = _RESULT.match(line)
            if answer is not None and answer.group(1) == "recvfrom" and int(answer.group(2)) > 0:
                calls["(answers)"] += 1
    return calls


def _traced(kind: str, where: str, nodes: int, invokes: int, tmp: str) -> collections.Counter[str]:
    trace = os.path.join(tmp, f"{kind}.trace")
    cmd = [
        "strace", "-f", "-qq", "-e", "trace=all", "-e", "signal=none", "-s", "16",
        "-o", trace, sys.executable, "-m", "bench.saver_syscalls", "--inner", kind,
        "--where", where, "--nodes", str(nodes), "--invokes", str(invokes),
    ]  # fmt: skip
    subprocess.run(cmd, check=True)
    return _count(trace)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=100, help="nodes an invoke (default 100)")
    parser.add_argument("--invokes", type=int, default=5, help="invokes counted (default 5)")
    parser.add_argument(
        "--postgres", action="store_true", help="IronflowSaver(PostgresStore) vs PostgresSaver"
    )
    parser.add_argument("--inner", help=argparse.SUPPRESS)
    parser.add_argument("--where", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.inner:
        _inner(args.inner, args.where, args.nodes, args.invokes)
        return 0
    found: dict[str, collections.Counter[str]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        if args.postgres:
            from ironflow.store._postgres import migrate
            from tests.support.postgres import EmbeddedPostgres

            with EmbeddedPostgres(fsync=False) as pg:
                for kind in _SAVERS[True]:
                    url = pg.create_database(f"saver_{kind}")
                    if kind == "ironflow_pg":
                        migrate(url)
                    found[kind] = _traced(kind, url, args.nodes, args.invokes, tmp)
        else:
            for kind in _SAVERS[False]:
                where = tempfile.mkdtemp(dir=tmp)
                found[kind] = _traced(kind, where, args.nodes, args.invokes, tmp)
    per = args.nodes * args.invokes
    print(f"system calls a node, {args.invokes} invokes of {args.nodes} nodes (fsync off):")
    print(f"{'saver':<12} {'futex':>7} {'sendto':>7} {'answers':>8} {'all':>7}")
    for kind, calls in found.items():
        row = [calls[name] / per for name in ("futex", "sendto", "(answers)", "(all)")]
        print(f"{kind:<12} " + " ".join(f"{v:>7.2f}" for v in row))
    return 0


if __name__ == "__main__":
    sys.exit(main())

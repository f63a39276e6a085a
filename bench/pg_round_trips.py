"""Round trips to PostgreSQL per store call of a 3-step run: a count the machine's load
cannot blur, as timings are blurred on a shared 2-core host.

``python -m bench.pg_round_trips [--runs N]`` starts an embedded PostgreSQL (fsync off:
nothing here is timed), then runs itself again under ``strace``, which logs every
``recvfrom`` of the client: each one returning data is an answer the client waited for,
so their number per call is the call's round trips. The inner process serves N 3-step
runs with a real ``Worker`` (as ``make bench`` does) and writes a marker to ``/dev/null``
as each store method begins and ends, so each answer is charged, thread by thread, to
the store call that waited for it. It prints the mean per call and per run.

Needs ``strace`` (``apt-get install strace``) and the ``test`` extra (the server).
"""

from __future__ import annotations

import argparse
import collections
import functools
import os
import re
import subprocess
import sys
import tempfile
import threading
from typing import Any

#: The store methods counted (the others a run calls would show as "(outside)").
_METHODS = (
    "emit",
    "lease_runs",
    "record_step",
    "finish_run",
    "finish_and_lease",
    "get_run",
    "changes",
    "heartbeat",
    "release_run",
    "suspend_run",
    "get_steps",
    "agents",
    "register_agents",
)
_MARK = re.compile(r'^(\d+)\s+write\(\d+, "@(\w+) (\w+)"')
_RECV = re.compile(r"^(\d+)\s+recvfrom\(.*\)\s+=\s+(\d+)$")


def _inner(url: str, runs: int) -> None:
    from bench._agents import three_steps
    from bench._ironflow import _SPECS
    from ironflow import Worker
    from ironflow._agent._dsl import AgentDefinition
    from ironflow.store._postgres import PostgresStore

    store = PostgresStore(url)
    store.register_agents(_SPECS)
    agent = AgentDefinition.must_from_fn(three_steps)
    # Warm-up: prepared statements, caches, the listener's connection.
    store.emit("bench.three", {"i": -1})
    Worker([agent], store=store, concurrency=1).run(until_idle=True, ready_message=False)
    null = os.open(os.devnull, os.O_WRONLY)

    def marked(name: str, method: Any) -> Any:
        @functools.wraps(method)
        def call(*args: Any, **kwargs: Any) -> Any:
            os.write(null, f"@begin {name}".encode())
            try:
                return method(*args, **kwargs)
            finally:
                os.write(null, f"@end {name}".encode())

        return call

    for name in _METHODS:
        setattr(store, name, marked(name, getattr(store, name)))
    worker = Worker([agent], store=store, concurrency=1)
    os.write(null, b"@begin measured")
    # As the bench's sequential row: the runs emitted, then one worker serves them all.
    for i in range(runs):
        store.emit("bench.three", {"i": i})
    worker.run(until_idle=True, ready_message=False)
    os.write(null, b"@end measured")
    store.close()


def _count(trace: str) -> tuple[dict[str, int], dict[str, int]]:
    """Answers waited for per method, and calls per method, inside the measured span."""
    answers: collections.Counter[str] = collections.Counter()
    calls: collections.Counter[str] = collections.Counter()
    open_: dict[str, list[str]] = collections.defaultdict(list)
    measuring = False
    with open(trace) as f:
        for line in f:
            mark = _MARK.match(line)
            if mark:
                tid, what, name = mark.groups()
                if name == "measured":
                    measuring = what == "begin"
                elif what == "begin":
                    open_[tid].append(name)
                    if measuring:
                        calls[name] += 1
                elif open_[tid]:
                    open_[tid].pop()
                continue
            recv = _RECV.match(line)
            if recv and measuring and int(recv.group(2)) > 0:
                tid = recv.group(1)
                answers[open_[tid][0] if open_[tid] else "(outside)"] += 1
    return dict(answers), dict(calls)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=50, help="3-step runs counted (default 50)")
    parser.add_argument("--inner", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.inner:
        _inner(args.inner, args.runs)
        return 0
    from ironflow.store._postgres import migrate
    from tests.support.postgres import EmbeddedPostgres

    with EmbeddedPostgres(fsync=False) as pg, tempfile.TemporaryDirectory() as tmp:
        url = pg.create_database("trips")
        migrate(url)
        trace = os.path.join(tmp, "trace")
        cmd = [
            "strace", "-f", "-qq", "-e", "trace=recvfrom,write", "-e", "signal=none",
            "-s", "40", "-o", trace,
            sys.executable, "-m", "bench.pg_round_trips", "--runs", str(args.runs),
            "--inner", url,
        ]  # fmt: skip
        subprocess.run(cmd, check=True)
        answers, calls = _count(trace)
    total = sum(answers.values())
    print(f"round trips to PostgreSQL, {args.runs} sequential 3-step runs (strace, recvfrom):")
    print(f"{'call':<14} {'calls/run':>9} {'trips/call':>10} {'trips/run':>9}")
    for name in sorted(answers, key=lambda n: -answers[n]):
        n = calls.get(name, 0)
        per_call = f"{answers[name] / n:.2f}" if n else "-"
        print(f"{name:<14} {n / args.runs:>9.2f} {per_call:>10} {answers[name] / args.runs:>9.2f}")
    print(f"{'all':<14} {'':>9} {'':>10} {total / args.runs:>9.2f}")
    return 0


if __name__ == "__main__":
    threading.current_thread().name = "main"
    sys.exit(main())

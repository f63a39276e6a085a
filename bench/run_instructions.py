"""CPU instructions a run costs, counted by callgrind: a number a loaded host cannot blur.

``python -m bench.run_instructions`` runs each workload under ``valgrind --tool=callgrind``
(fsync off, LMDB in a temporary directory) and prints instructions per operation:

- ``run``: a sequential 3-step run's worker side (its lease, three steps, its finish),
  counted in the worker's run thread, the runs emitted beforehand;
- ``emit``: one emit of the 3-step agent's event;
- ``store``: three ``record_step`` and one ``finish_and_lease`` called directly (the
  store's share of ``run``);
- ``engine``: the worker and engine alone, on a store that records in no time.

Only what runs inside ``sys.call_tracing`` is counted (``--toggle-collect``), so the
interpreter's start and the imports are not. The counts move by about 1% between
identical runs (thread hand-offs, ids). Slow: about half a minute a workload.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from typing import Any

WORKLOADS = ("run", "emit", "store", "engine")


def _inner(op: str, n: int) -> None:
    from bench._ironflow import _SPECS, _THREE, _timed_runs
    from ironflow import LmdbStore, Worker
    from ironflow._worker._identity import this_worker
    from ironflow.store import Event, Lease, LeasedRun, Run, StepAck, StepRecord

    me = this_worker()
    work: Any
    if op == "engine":

        class Instant:
            """Leases ``n`` runs one after the other and records in no time."""

            left = n

            def register_agents(self, specs: Any) -> None:
                pass

            def _next(self) -> list[LeasedRun]:
                if self.left <= 0:
                    return []
                self.left -= 1
                rid = f"run_{self.left}"
                event = Event("evt_x", "bench.three", {"i": 1}, 0.0, 1)
                run = Run(rid, _THREE.id, "running", event, 0.0, 0.0, attempt=1)
                return [LeasedRun(run, (), Lease(rid, me, 1e12, 1))]

            def lease_runs(self, *args: Any, **kwargs: Any) -> list[LeasedRun]:
                return self._next()

            def finish_and_lease(self, *args: Any, **kwargs: Any) -> list[LeasedRun]:
                return self._next()

            def record_step(self, *args: Any) -> StepAck:
                return StepAck()

            def wait_for_work(self, timeout: float) -> None:
                pass

            def heartbeat(self, *args: Any, **kwargs: Any) -> set[str]:
                return set()

        _counted_runs(Worker([_THREE], store=Instant(), concurrency=1))  # type: ignore[arg-type]
        return
    store = LmdbStore(tempfile.mkdtemp(prefix="if-instr-"), sync=False)
    store.register_agents(_SPECS)
    _timed_runs(store, _THREE, "bench.three", [{"i": -1}])
    if op == "emit":

        def work() -> None:
            for i in range(n):
                store.emit("bench.three", {"i": i})

        sys.call_tracing(work, ())
        return
    for i in range(n):
        store.emit("bench.three", {"i": i})
    if op == "run":
        _counted_runs(Worker([_THREE], store=store, concurrency=1))
        return
    [leased] = store.lease_runs(me, [_THREE.id], limit=1, ttl=60)

    def steps_and_finish() -> None:
        nonlocal leased
        for _ in range(n):
            run = leased.run
            for p in range(3):
                step = StepRecord(
                    run.id, p, "tool.noop", "completed", {"i": p}, {"i": p, "ok": 1}, 1.0, 2.0,
                    attempt=run.attempt, worker=me.id,
                )  # fmt: skip
                store.record_step(me, step)
            following = store.finish_and_lease(
                me, run.id, status="completed", output={"sum": 6}, attempt=run.attempt,
                agents=[_THREE.id], limit=1, ttl=60,
            )  # fmt: skip
            if not following:
                return
            leased = following[0]

    sys.call_tracing(steps_and_finish, ())


def _counted_runs(worker: Any) -> None:
    """Serve every run, counting the run thread's work (where a sequential worker's
    runs chain, each finish leasing the next)."""
    from ironflow import Worker

    execute = Worker._execute_sync
    worker._execute_sync = lambda *args: sys.call_tracing(execute, (worker, *args))
    worker.run(until_idle=True, ready_message=False)


def _count(op: str, n: int) -> int:
    cmd = [
        "valgrind",
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
        "--collect-atstart=no",
        "--toggle-collect=sys_call_tracing",
        sys.executable,
        "-m",
        "bench.run_instructions",
        "--inner",
        op,
        "--n",
        str(n),
    ]
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stderr
    found = re.search(r"Collected : (\d+)", out)
    if found is None:
        raise RuntimeError(f"callgrind printed no count:\n{out[-2000:]}")
    return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--workloads", default=",".join(WORKLOADS), help=f"comma-separated: {WORKLOADS}"
    )
    parser.add_argument("--n", type=int, default=200, help="operations a workload (default 200)")
    parser.add_argument("--inner", choices=WORKLOADS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner:
        _inner(args.inner, args.n)
        return
    for op in args.workloads.split(","):
        started = time.monotonic()
        total = _count(op, args.n)
        took = time.monotonic() - started
        print(f"{op:8s} {total / args.n / 1000:9.1f}k instructions an operation  ({took:.0f} s)")


if __name__ == "__main__":
    main()

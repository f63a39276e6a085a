"""Smoke run of every peer workload with small n; prints one JSON dict.

Usage (from the repo root): /tmp/benchvenv/bin/python -m bench.peers [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from bench.peers import dbos_peer, floor, langgraph_peer


def _pctl(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


_WALL_S: dict[str, float] = {}


def _timed(results: dict[str, Any], key: str, fn: Callable[[], Any]) -> None:
    t0 = time.perf_counter()
    try:
        results[key] = fn()
    except Exception as e:  # one broken peer should not hide the others' numbers
        results[key] = f"ERROR: {type(e).__name__}: {e}"
    _WALL_S[key] = round(time.perf_counter() - t0, 2)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.peers")
    ap.add_argument("--workdir", help="scratch dir (default: a new temp dir, removed afterwards)")
    args = ap.parse_args(argv)
    workdir = args.workdir or tempfile.mkdtemp(prefix="ironflow-bench-peers-")
    os.makedirs(workdir, exist_ok=True)
    r: dict[str, Any] = {"python": sys.version.split()[0], "workdir": workdir}

    def lmdb_floor() -> dict[str, float]:
        xs = floor.lmdb_sync_commit_us(os.path.join(workdir, "lmdb-floor"), 200)
        return {"median_us": statistics.median(xs), "p99_us": _pctl(xs, 0.99), "n": len(xs)}

    def fdatasync_floor() -> dict[str, float]:
        xs = floor.fdatasync_us(os.path.join(workdir, "fdatasync.log"), 200)
        return {"median_us": statistics.median(xs), "p99_us": _pctl(xs, 0.99), "n": len(xs)}

    try:
        _timed(r, "floor.lmdb_sync_commit", lmdb_floor)
        _timed(r, "floor.fdatasync", fdatasync_floor)

        _timed(
            r, "dbos.three_step_runs_per_s", lambda: dbos_peer.three_step_runs_per_s(workdir, 50)
        )
        _timed(r, "dbos.per_step_us", lambda: dbos_peer.per_step_us(workdir, 100, 5))
        _timed(
            r, "dbos.concurrent_steps_per_s", lambda: dbos_peer.concurrent_steps_per_s(workdir, 16)
        )
        _timed(r, "dbos.resume_after_kill_s", lambda: dbos_peer.resume_after_kill_s(workdir))

        _timed(r, "dbos.sqlite_synchronous", lambda: dbos_peer.sqlite_synchronous(workdir))

        _timed(
            r, "langgraph.sqlite_synchronous", lambda: langgraph_peer.sqlite_synchronous(workdir)
        )
        _timed(
            r,
            "langgraph.three_step_runs_per_s",
            lambda: langgraph_peer.three_step_runs_per_s(workdir, 50),
        )
        _timed(r, "langgraph.per_step_us", lambda: langgraph_peer.per_step_us(workdir, 100, 5))
        _timed(
            r,
            "langgraph.concurrent_steps_per_s",
            lambda: langgraph_peer.concurrent_steps_per_s(workdir, 16),
        )
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)

    r["_wall_s"] = dict(_WALL_S)
    print(json.dumps(r, indent=2))
    return 1 if any(isinstance(v, str) and v.startswith("ERROR") for v in r.values()) else 0


if __name__ == "__main__":
    sys.exit(main())

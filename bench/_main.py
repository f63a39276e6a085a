"""``python -m bench``: every workload on every system in one run, interleaved.

Each repetition visits the workloads in turn, and each workload visits the systems
in turn (floor, ironflow, DBOS, LangGraph, then the next workload), so a burst of
noise from the other tenants of a shared machine lands on all of them rather than on
one. Each system lives in its own child process (see ``bench._child``).
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import datetime as dt
import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from typing import IO, Any

from bench import _pg, _report
from bench._proc import REPO
from bench._spec import FLOORS, LABELS, PEERS, POSTGRES, SYSTEMS, WORKLOADS, params

_CALL_TIMEOUT = 300.0


class Child:
    """A system's child process and its line protocol."""

    def __init__(self, system: str, python: str, workdir: str, log: IO[str]) -> None:
        self.system = system
        self.proc = subprocess.Popen(
            [python, "-m", "bench._child", system, "--workdir", workdir],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": REPO},
        )
        self._replies: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        hello = self._reply(120.0)
        self.error: str | None = hello.get("error")
        self.version: str = hello.get("version", "?")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._replies.put(line)
        self._replies.put(None)

    def _reply(self, timeout: float) -> dict[str, Any]:
        try:
            line = self._replies.get(timeout=timeout)
        except queue.Empty:
            return {"error": f"no answer in {timeout:.0f} s"}
        if line is None:
            self.error = self.error or f"child exited with {self.proc.wait()}"
            return {"error": self.error}
        reply: dict[str, Any] = json.loads(line)
        return reply

    def call(self, workload: str, p: dict[str, Any]) -> dict[str, Any]:
        if self.error:
            return {"error": self.error}
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps({"workload": workload, "params": p}) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            self.error = f"child exited with {self.proc.wait()}"
            return {"error": self.error}
        return self._reply(_CALL_TIMEOUT)

    def close(self) -> None:
        if self.proc.stdin is not None:
            with contextlib.suppress(BrokenPipeError):
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m bench",
        description=(
            "Ironflow side by side with DBOS (SQLite), LangGraph (SQLite checkpointer) and the "
            "raw LMDB floor, and on PostgreSQL (one embedded server, fsync on) with DBOS, "
            "LangGraph's PostgresSaver and one INSERT commit, durable writes on, interleaved, "
            "several repetitions. Prints tables of medians; writes JSON, Markdown and a PNG "
            "chart to --out."
        ),
    )
    ap.add_argument("--reps", type=int, default=5, help="repetitions (default 5)")
    ap.add_argument("--quick", action="store_true", help="1 repetition, small n: a smoke run")
    ap.add_argument(
        "--only",
        metavar="SYSTEMS",
        help="comma-separated subset of ironflow,dbos,langgraph,ironflow_pg,dbos_pg,"
        "langgraph_pg (each storage's floor runs with any system on it)",
    )
    ap.add_argument(
        "--workloads",
        metavar="KEYS",
        help="comma-separated subset of the workloads, by key (as in the JSON: per_step_us, "
        "langgraph_saver_node_us, ...); default all",
    )
    ap.add_argument(
        "--out",
        default=os.path.join(REPO, "bench", "results"),
        help="where results go (default bench/results)",
    )
    ap.add_argument("--workdir", help="scratch dir (default: a temp dir, removed afterwards)")
    ap.add_argument(
        "--peer-python",
        default=sys.executable,
        help="interpreter for DBOS and LangGraph (default: this one)",
    )
    return ap


def _progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _compile_bytecode() -> None:
    """Compile ironflow's and the benchmark's modules to bytecode, as pip does for a wheel.

    The peers come from wheels, whose modules pip compiles at install; ironflow is an
    editable install, whose modules are compiled on first import, or on every import
    where PYTHONDONTWRITEBYTECODE is set (as on our CI machines). Without this step the
    import-time and resume rows would time Python's compiler on our side only.
    """
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for package in ("ironflow", "bench"):
        if not compileall.compile_dir(os.path.join(root, package), quiet=1):
            raise SystemExit(f"bench: cannot compile {package}/ to bytecode (see above)")


def _start_postgres(workdir: str) -> Any:
    """The PostgreSQL rows' server, fsync on; its URL goes to the children in the env."""
    from tests.support.postgres import EmbeddedPostgres

    _progress("  starting the embedded PostgreSQL server (fsync on)")
    server = EmbeddedPostgres(fsync=True)
    server.start()
    os.environ[_pg.ENV] = server.url("postgres")
    return server


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    reps = 1 if args.quick else args.reps
    if reps < 1:
        _parser().error("--reps must be at least 1")
    chosen = [s for s in SYSTEMS if s not in FLOORS]
    if args.only:
        chosen = [s.strip() for s in args.only.split(",") if s.strip()]
        unknown = sorted(set(chosen) - set(SYSTEMS))
        if unknown:
            _parser().error(f"--only: unknown system(s) {', '.join(unknown)}")
    systems = [
        s for s in SYSTEMS if s in chosen or (s in FLOORS and any(x in chosen for x in FLOORS[s]))
    ]
    workloads = WORKLOADS
    if args.workloads:
        keys = [k.strip() for k in args.workloads.split(",") if k.strip()]
        unknown = sorted(set(keys) - {w.key for w in WORKLOADS})
        if unknown:
            _parser().error(
                f"--workloads: unknown workload(s) {', '.join(unknown)}; the keys are "
                + ", ".join(w.key for w in WORKLOADS)
            )
        workloads = tuple(w for w in WORKLOADS if w.key in keys)
    p = params(args.quick)

    _compile_bytecode()
    workdir = args.workdir or tempfile.mkdtemp(prefix="ironflow-bench-")
    os.makedirs(workdir, exist_ok=True)
    started = dt.datetime.now(dt.UTC)
    t_start = time.monotonic()
    machine = _report.machine(workdir)
    log_path = os.path.join(workdir, "children.log")
    samples: _report.Samples = {}
    notes: _report.Notes = {}
    children: dict[str, Child] = {}
    errors: list[str] = []
    _progress(
        f"bench: {reps} repetition(s) of {len(workloads)} workloads on "
        f"{', '.join(LABELS[s] for s in systems)}; scratch in {workdir}"
    )
    server = None
    try:
        if any(s in POSTGRES for s in systems):
            server = _start_postgres(workdir)
        with open(log_path, "a") as log:
            for s in systems:
                python = args.peer_python if s in PEERS else sys.executable
                children[s] = Child(s, python, os.path.join(workdir, s), log)
                if children[s].error:
                    hint = " (install the peers: make bench, or pip install -e '.[bench]')"
                    errors.append(f"{s}: {children[s].error}{hint if s in PEERS else ''}")
                    _progress(f"  {LABELS[s]}: cannot start: {children[s].error}")
                else:
                    _progress(f"  {LABELS[s]}: {children[s].version}")
            for rep in range(reps):
                for w in workloads:
                    for s in systems:
                        if s not in w.systems:
                            continue
                        if s in w.skip:
                            notes.setdefault(w.key, {})[s] = w.skip[s]
                            continue
                        t0 = time.monotonic()
                        reply = children[s].call(w.key, p.get(w.key, {}))
                        took = time.monotonic() - t0
                        values = samples.setdefault(w.key, {}).setdefault(s, [])
                        if "value" in reply:
                            values.append(reply["value"])
                            shown = f"{_report.fmt(reply['value'])} {w.unit}"
                        elif "skipped" in reply:
                            notes.setdefault(w.key, {})[s] = f"skipped: {reply['skipped']}"
                            shown = f"skipped: {reply['skipped']}"
                        else:
                            values.append(None)
                            msg = reply.get("error", "?")
                            notes.setdefault(w.key, {})[s] = f"error: {msg}"
                            if f"{s} {w.key}: {msg}" not in errors:
                                errors.append(f"{s} {w.key}: {msg}")
                            shown = f"ERROR {msg}"
                        _progress(
                            f"[{rep + 1}/{reps}] {w.key:<24} {LABELS[s]:<19} {shown}"
                            f"  ({took:.1f} s)"
                        )
    finally:
        for c in children.values():
            c.close()
        if server is not None:
            server.close()
            os.environ.pop(_pg.ENV, None)

    result: dict[str, Any] = {
        "schema": 1,
        "started_at": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "wall_s": round(time.monotonic() - t_start, 1),
        "command": ["python", "-m", "bench", *(argv if argv is not None else sys.argv[1:])],
        "reps": reps,
        "quick": args.quick,
        "systems": systems,
        "versions": {s: c.version for s, c in children.items()},
        "machine": machine,
        "loadavg_end": _report.loadavg(),
        "params": p,
        "samples": samples,
        "rows": _report.rows(samples, notes, systems, p),
        "errors": errors,
    }
    result["targets"] = [t.__dict__ | {"status": t.status()} for t in _report.targets(samples, p)]

    print(_report.render_text(result))
    os.makedirs(args.out, exist_ok=True)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    _report.write_json(os.path.join(args.out, f"{stamp}.json"), result)
    _report.write_json(os.path.join(args.out, "latest.json"), result)
    with open(os.path.join(args.out, "latest.md"), "w") as f:
        f.write(_report.render_markdown(result))
    why = _report.write_chart(os.path.join(args.out, "latest.png"), result)
    written = f"{args.out}/{stamp}.json, latest.json, latest.md"
    print(
        f"\nwall {result['wall_s']} s; wrote {written}"
        + (f"; no chart: {why}" if why else ", latest.png")
    )
    if errors:
        print("errors:\n  " + "\n  ".join(errors), file=sys.stderr)
        print(f"children's stderr: {log_path}", file=sys.stderr)
    elif not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if errors else 0

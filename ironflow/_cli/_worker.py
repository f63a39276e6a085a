"""The worker command, one parser for ``ironflow worker`` and ``python -m ironflow.run worker``.

Both spellings call :func:`add_worker_arguments` and :func:`run_worker`, so a flag added
here exists under both, with the same help.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import socket
import sys
from pathlib import Path
from typing import Any

from ironflow._worker._logs import add_log_format_argument

__all__ = [
    "STORE_HELP",
    "WORKER_DESCRIPTION",
    "WORKER_HELP",
    "add_store_argument",
    "add_worker_arguments",
    "run_worker",
]

#: The help of --store, the same on every command that opens a store.
STORE_HELP = (
    "the store: a postgresql:// (or postgres://) URL of a database migrated with "
    "`ironflow store migrate`, or an LMDB data directory (default $IRONFLOW_STORE, else "
    "$IRONFLOW_DATA_DIR, else ./.ironflow); given, it is used even when IRONFLOW_URL is set"
)


def add_store_argument(parser: argparse.ArgumentParser) -> None:
    """``--store URL_OR_DIR``, for every command that opens a store."""
    parser.add_argument("--store", metavar="URL_OR_DIR", help=STORE_HELP)


WORKER_HELP = "serve every @agent and @projection a module defines"
WORKER_DESCRIPTION = (
    "Import MODULE and serve every @agent it defines: lease their runs, execute them "
    "step by step, resume runs orphaned by a crashed worker; and keep every @projection "
    "it defines up to date with the event log. It prints 'worker ready (pid N)' once "
    "serving; stop it with `kill N` (SIGTERM drains: in-flight steps finish, then it "
    "exits) or crash it with `kill -9 N`. `ironflow worker` and `python -m ironflow.run "
    "worker` are the same command. With IRONFLOW_URL set, the worker goes through that "
    "server; otherwise it opens the store directly (--store, $IRONFLOW_STORE: a "
    "postgresql:// URL or a data directory)."
)


class _Usage(Exception):
    """A usage error of the worker command: one line, exit status 2."""


def add_worker_arguments(parser: argparse.ArgumentParser) -> None:
    """The worker's arguments, on either command's ``worker`` subparser."""
    parser.add_argument(
        "module",
        metavar="MODULE",
        help="dotted module name (examples.doc_processor.worker) or a .py path",
    )
    parser.add_argument(
        "--concurrency", type=int, default=8, metavar="N", help="runs executed at once (default 8)"
    )
    add_store_argument(parser)
    parser.add_argument(
        "--data-dir",
        metavar="DIR",
        help="data directory (default $IRONFLOW_DATA_DIR, else ./.ironflow); "
        "given, it is used even when IRONFLOW_URL is set",
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        metavar="N",
        help="worker processes behind this one command (default 1): a process runs Python "
        "on one core at a time, so N processes use N cores. They share the store; this "
        "command's pid (printed, and in --pid-file) stands for all of them: SIGTERM drains "
        "every one, and if it is killed (kill -9) they stop with it",
    )
    parser.add_argument(
        "--lease-ttl",
        type=float,
        default=15.0,
        metavar="SECONDS",
        help="seconds a run stays leased without a heartbeat (default 15)",
    )
    parser.add_argument(
        "--pid-file",
        metavar="PATH",
        help="write this worker's pid to PATH once it is ready (removed when it stops "
        "cleanly), so a script can stop exactly this worker: kill -9 $(cat PATH). With "
        "--processes N it is the pid of the command, written once all N serve",
    )
    parser.add_argument("--quiet", action="store_true", help="log warnings and errors only")
    add_log_format_argument(parser)
    parser.add_argument(
        "--metrics-port",
        type=int,
        metavar="PORT",
        help="serve this worker's Prometheus metrics at http://HOST:PORT/metrics "
        "(0 picks a free port, printed at start; with --processes N only 0, one port per "
        "process); needs pip install 'ironflow[prometheus]'",
    )
    parser.add_argument(
        "--metrics-host",
        default="127.0.0.1",
        metavar="HOST",
        help="address for --metrics-port (default 127.0.0.1; 0.0.0.0 for a scraper elsewhere)",
    )


def run_worker(args: argparse.Namespace) -> int:
    """Serve the module ``args.module`` names until SIGINT/SIGTERM; 2 on a usage error."""
    from ironflow._cli._processes import run_supervisor, signal_ready, watch_supervisor

    supervised = watch_supervisor()
    if supervised is not None:  # one of the processes of --processes N
        args = argparse.Namespace(**supervised["args"])
    elif args.processes != 1:
        problem = _processes_problem(args)
        if problem is not None:
            print(f"error: {problem}", file=sys.stderr)
            return 2
        return run_supervisor(args)
    from ironflow._agent._dsl import definitions_in
    from ironflow._agent._memory import projections_in
    from ironflow._worker._loader import load_module
    from ironflow._worker._logs import configure_logging
    from ironflow._worker._observe import start_tracing
    from ironflow._worker._worker import Worker
    from ironflow.errors import IronflowError
    from ironflow.replay._observer import Observer

    configure_logging(logging.WARNING if args.quiet else logging.INFO, log_format=args.log_format)
    pid_file = Path(args.pid_file) if args.pid_file else None
    provider = start_tracing("ironflow-worker")
    observers: list[Observer] = []
    if provider is not None:
        from ironflow.contrib.otel import Tracing

        observers.append(Tracing(tracer_provider=provider))
    watching: _Watching | None = None
    try:
        if args.metrics_port is not None:
            watching = _Watching.start(args.metrics_port, args.metrics_host)
            observers.append(watching.metrics)
        if pid_file is not None:
            _check_pid_file(pid_file)
        module = load_module(args.module)
        agents = definitions_in(vars(module))
        projections = projections_in(vars(module))
        if not agents and not projections:
            raise _Usage(
                f"module {args.module!r} defines no @agent functions; decorate a "
                "handler with @ironflow.agent(id=..., triggers=[...])"
            )
        from ironflow.store._open import resolve_location

        given = args.store or args.data_dir
        worker = Worker(
            agents,
            projections=projections,
            data_dir=None if not given else str(resolve_location(args.store, args.data_dir)),
            concurrency=args.concurrency,
            lease_ttl=args.lease_ttl,
            observers=observers,
        )
        if watching is not None:
            watching.add_store(worker.store)
        if pid_file is not None:
            _write_pid_file(pid_file)
    except (IronflowError, _Usage) as exc:
        if watching is not None:
            watching.close()
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        if supervised is None:
            worker.run()
        else:
            worker.run(
                ready_message=False,
                on_ready=lambda names: signal_ready(supervised["ready"], names),
            )
    finally:
        if pid_file is not None:
            _remove_pid_file(pid_file)
        if provider is not None:
            provider.shutdown()  # the last spans are sent before the process exits
        if watching is not None:
            watching.close()
    return 0


def _processes_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with ``--processes`` and the flags beside it, or None."""
    if args.processes < 1:
        return f"--processes must be 1 or more, not {args.processes}"
    if args.metrics_port not in (None, 0):
        return (
            f"--metrics-port {args.metrics_port} is one port, and --processes "
            f"{args.processes} starts {args.processes} processes: pass --metrics-port 0 "
            "(each process picks a free port and prints it)"
        )
    if args.pid_file is not None:
        try:
            _check_pid_file(Path(args.pid_file))
        except _Usage as exc:
            return str(exc)
    return None


class _Watching:
    """``--metrics-port``: a worker's Prometheus metrics, and its store's if it is local."""

    def __init__(self, registry: Any, metrics: Any, server: Any) -> None:
        self.registry = registry
        self.metrics = metrics
        self.server = server
        self.store_metrics: Any = None

    @classmethod
    def start(cls, port: int, host: str) -> _Watching:
        if not 0 <= port <= 65535:
            raise _Usage(f"--metrics-port must be from 0 to 65535, not {port}")
        try:
            from ironflow.contrib.prometheus import Metrics, process_registry, serve_metrics
        except ImportError:
            raise _Usage(
                "--metrics-port needs Prometheus metrics: pip install 'ironflow[prometheus]'"
            ) from None
        registry = process_registry()
        metrics = Metrics(registry=registry)
        server = serve_metrics(registry, host, port)
        shown = f"[{host}]" if ":" in host else host
        print(f"metrics at http://{shown}:{server.port}/metrics", flush=True)
        return cls(registry, metrics, server)

    def add_store(self, store: Any) -> None:
        """The store's own metrics too, when this worker has the data directory open."""
        from ironflow.contrib.prometheus import StoreMetrics
        from ironflow.store._machine import StoreMachine

        if isinstance(store, StoreMachine):  # not a RemoteStore: its server exports them
            self.store_metrics = StoreMetrics(store, self.registry)

    def close(self) -> None:
        if self.store_metrics is not None:
            self.store_metrics.close()
        self.server.close()


def _check_pid_file(path: Path) -> None:
    """Refuse a pid file that names another live process: it is that worker's file."""
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise _Usage(f"--pid-file {path} cannot be read: {exc.strerror}") from None
    if not text.isdigit():
        raise _Usage(
            f"--pid-file {path} exists and does not hold a pid ({text[:40]!r}); "
            "pass another path, or remove it if it is yours"
        )
    pid = int(text)
    if pid != os.getpid() and _alive(pid):
        raise _Usage(
            f"--pid-file {path} holds pid {pid}, which is running (another worker?): stop it "
            f"first (kill {pid}), or give this worker its own --pid-file"
        )


def _alive(pid: int) -> bool:
    from ironflow.store._liveness import MACHINE, process_alive
    from ironflow.store._records import WorkerInfo

    who = WorkerInfo(id="", host=socket.gethostname(), pid=pid, machine=MACHINE)
    return process_alive(who) is not False


def _write_pid_file(path: Path) -> None:
    """Write our pid atomically: a reader sees the old file or the whole new one."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        partial.write_text(f"{os.getpid()}\n")
        os.replace(partial, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            partial.unlink()
        raise _Usage(f"--pid-file {path} cannot be written: {exc.strerror}") from None


def _remove_pid_file(path: Path) -> None:
    """Remove the pid file if it is still ours (a later worker may have taken the path)."""
    with contextlib.suppress(OSError, ValueError):
        if int(path.read_text().strip()) == os.getpid():
            path.unlink()

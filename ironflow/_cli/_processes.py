"""``ironflow worker --processes N``: N worker processes behind one command.

One process runs Python on one core at a time (the GIL), so a busy worker cannot use a
second core however many runs it executes at once. With ``--processes N`` the command
becomes a small supervisor: it starts N ordinary worker processes on the same store
(each leases, executes and group-commits its own runs; the store already lets several
workers share it) and stands for all of them:

- It prints ``worker ready (pid P)`` with its own pid, and writes ``--pid-file``, only once
  every child is serving; the children print no ready line of their own.
- SIGINT/SIGTERM are forwarded to every child, so one ``kill P`` drains them all; it exits
  when they have.
- ``kill -9 P`` cannot be forwarded, so each child watches a pipe whose only writer is the
  supervisor: when the pipe closes (the supervisor is gone, however it died) the child
  kills itself with SIGKILL. A crash of the command is then a crash of every process,
  whose runs the next worker resumes; no child keeps running unsupervised.
- A child that dies while serving (``kill -9`` of one child, the OOM killer) is logged and
  replaced; its runs are resumed like any crashed worker's. A child that fails before it
  is ready (a module that does not import, a store that cannot be opened) stops the
  command with that child's status: the first child starts alone, so such an error is
  printed once.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import select
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

__all__ = ["CHILD_ENV", "run_supervisor", "signal_ready", "watch_supervisor"]

log = logging.getLogger("ironflow.worker")

#: The environment variable that makes a worker process a supervised child: the worker's
#: arguments and the two pipe ends, as JSON. Internal: set by the supervisor only.
CHILD_ENV = "IRONFLOW_WORKER_CHILD"


class _Child:
    """One worker process and the two pipes that tie it to the supervisor."""

    def __init__(self, args: dict[str, Any]) -> None:
        # life: we hold the only write end; the child sees EOF when we are gone.
        # ready: the child writes one byte once it serves.
        life_r, self._life_w = os.pipe()
        self._ready_r, ready_w = os.pipe()
        env = dict(os.environ)
        env[CHILD_ENV] = json.dumps({"args": args, "life": life_r, "ready": ready_w})
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "ironflow.run", "worker", args["module"]],
                env=env,
                pass_fds=(life_r, ready_w),
            )
        finally:
            os.close(life_r)
            os.close(ready_w)
        self.ready = False
        self.names = ""
        self._closed = False

    @property
    def pid(self) -> int:
        return self.proc.pid

    def fileno(self) -> int:
        return self._ready_r

    def read_ready(self) -> None:
        """The ready pipe is readable: the names it serves (it is ready) or EOF (gone)."""
        said = os.read(self._ready_r, 4096)
        if said:
            self.ready = True
            self.names = said.decode(errors="replace").strip()

    def signal(self, signum: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signum)

    def close(self) -> None:
        """Close our pipe ends, once (a closed fd number may already be another file's)."""
        if self._closed:
            return
        self._closed = True
        for fd in (self._life_w, self._ready_r):
            with contextlib.suppress(OSError):
                os.close(fd)


def run_supervisor(args: argparse.Namespace) -> int:
    """Serve with ``args.processes`` worker processes until SIGINT/SIGTERM."""
    from ironflow._cli._worker import _remove_pid_file, _Usage, _write_pid_file

    forwarded = {k: v for k, v in vars(args).items() if _plain(v)}
    forwarded.update(processes=1, pid_file=None)
    children: list[_Child] = []
    stopping: list[int] = []

    def on_signal(signum: int, _frame: Any) -> None:
        stopping.append(signum)
        for child in children:
            child.signal(signum)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    pid_file = Path(args.pid_file) if args.pid_file else None
    try:
        children.append(_Child(forwarded))
        status = _await_ready(children[:1], stopping)
        if status is None:
            children.extend(_Child(forwarded) for _ in range(args.processes - 1))
            status = _await_ready(children[1:], stopping)
        if status is None and pid_file is not None:
            try:
                _write_pid_file(pid_file)
            except _Usage as exc:
                print(f"error: {exc}", file=sys.stderr)
                status = 2
        if status is not None:
            for child in children:
                child.signal(signal.SIGTERM)
            _reap(children)
            return status
        log.info("worker processes: %s", ", ".join(str(c.pid) for c in children))
        print(f"{children[0].names} worker ready (pid {os.getpid()})", flush=True)
        return _supervise(children, forwarded, stopping)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for child in children:
            child.close()
        if pid_file is not None:
            _remove_pid_file(pid_file)


def _plain(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def _await_ready(waiting: list[_Child], stopping: list[int]) -> int | None:
    """Wait until every child of ``waiting`` serves: None, or the status to exit with
    (a child that ended first, or 130 when we were told to stop meanwhile)."""
    pending = list(waiting)
    while pending:
        if stopping:
            return 130
        try:
            readable, _, _ = select.select(pending, [], [], 0.5)
        except InterruptedError:
            continue
        for child in readable:
            child.read_ready()
        for child in list(pending):
            if child.ready:
                pending.remove(child)
            elif child.proc.poll() is not None:
                return child.proc.returncode or 1
    return None


def _supervise(children: list[_Child], forwarded: dict[str, Any], stopping: list[int]) -> int:
    """Wait for the children; replace one that dies while serving. Returns the status of
    the first child that did not drain cleanly, or 0."""
    status = 0
    while children:
        starting = [c for c in children if not c.ready]
        try:
            readable, _, _ = select.select(starting, [], [], 0.1)
        except InterruptedError:
            readable = []
        for child in readable:
            child.read_ready()
        for child in list(children):
            code = child.proc.poll()
            if code is None:
                continue
            children.remove(child)
            child.close()
            code = 128 - code if code < 0 else code  # killed by a signal: the shell's 128+N
            if stopping:
                status = status or code
            elif not child.ready:
                # A replacement that cannot start would only fail again: stop serving.
                log.error("worker process %d failed to start (status %s)", child.pid, code)
                stopping.append(signal.SIGTERM)
                for other in children:
                    other.signal(signal.SIGTERM)
                status = code or 1
            else:
                log.error(
                    "worker process %d exited with status %s while serving; starting another "
                    "(its runs are resumed like any crashed worker's)",
                    child.pid,
                    code,
                )
                children.append(_Child(forwarded))
    return status


def _reap(children: list[_Child]) -> None:
    for child in children:
        child.proc.wait()


def watch_supervisor() -> dict[str, Any] | None:
    """In a supervised child: start watching the supervisor and return the worker's
    arguments and the ready pipe; None in a worker started on its own."""
    spec = os.environ.pop(CHILD_ENV, None)
    if spec is None:
        return None
    given: dict[str, Any] = json.loads(spec)
    life: int = given["life"]

    def watch() -> None:
        while True:
            try:
                if not os.read(life, 1):
                    break
            except InterruptedError:
                continue
            except OSError:
                break
        # The supervisor is gone (kill -9, a crash): go with it, as one process would.
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="ironflow-supervisor-watch", daemon=True).start()
    return given


def signal_ready(fd: int, names: str) -> None:
    """Tell the supervisor this child serves, and what (for its one ready line)."""
    try:
        os.write(fd, names.encode() or b"?")
    finally:
        os.close(fd)

"""Shared helpers for the memory tests: dead workers, recording and crashing stores."""

from __future__ import annotations

import functools
import itertools
import socket
import subprocess
from collections.abc import Callable
from typing import Any

import attrs

from ironflow.store import Store, WorkerInfo
from ironflow.store._liveness import pid_start
from ironflow.store._records import ProjectionStatus, ProjectionWrite

_ids = itertools.count(1)


class Crash(BaseException):
    """A simulated process death: a BaseException, so no ``except Exception`` eats it."""


@functools.cache
def _dead_pid() -> tuple[int, str]:
    # A process that lived and died: its pid (with its start time) is dead for good,
    # since a recycled pid would have another start time.
    proc = subprocess.Popen(["sleep", "60"])
    start = pid_start(proc.pid)
    proc.kill()
    proc.wait()
    return proc.pid, start


def dead_worker(tag: str = "w") -> WorkerInfo:
    """A worker identity whose process is dead: its leases are free at once."""
    pid, start = _dead_pid()
    return WorkerInfo(id=f"{tag}-{next(_ids)}", host=socket.gethostname(), pid=pid, pid_start=start)


@attrs.define
class Committed:
    """One successful projection write, as a RecordingStore saw it."""

    worker: str
    write: ProjectionWrite
    status: ProjectionStatus


class RecordingStore:
    """Passes every call through; records successful projection writes, runs hooks.

    ``before_write`` runs (once, then is cleared) just before a write is forwarded;
    ``crash_after_write`` makes the next successful write raise :class:`Crash` after it
    committed, as if the process died before hearing back.
    """

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.commits: list[Committed] = []
        self.before_write: dict[str, Callable[[], Any]] = {}
        self.crash_after_write = False

    def write_projection(self, worker: WorkerInfo, write: ProjectionWrite) -> ProjectionStatus:
        hook = self.before_write.pop(worker.id, None)
        if hook is not None:
            hook()
        status = self.inner.write_projection(worker, write)
        self.commits.append(Committed(worker.id, write, status))
        if self.crash_after_write:
            self.crash_after_write = False
            raise Crash("died right after the projection write committed")
        return status

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

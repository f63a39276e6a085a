"""Is a lease holder's process still alive? Answered from /proc, on this machine only.

A lease names the worker's host, pid, process start time and machine (boot id and pid
namespace). A holder on this machine whose process is gone (or a zombie, or whose pid
now belongs to a process started at another time) is dead at once; a holder elsewhere
is unknown, and its lease lapses only after its TTL.
"""

from __future__ import annotations

import os
import socket

from ironflow.store._records import WorkerInfo

__all__ = ["MACHINE", "pid_start", "process_alive"]


def _proc_stat(pid: int) -> tuple[str, str] | None:
    """(state, start time in clock ticks) from /proc/PID/stat, or None if unreadable."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces or parens; fields resume after the last ')'.
    fields = raw[raw.rindex(b")") + 2 :].split()
    return fields[0].decode(), fields[19].decode()


def pid_start(pid: int) -> str:
    """The process start time in clock ticks (field 22 of /proc/PID/stat), or ''."""
    stat = _proc_stat(pid)
    return stat[1] if stat else ""


def process_alive(worker: WorkerInfo) -> bool | None:
    """Whether the worker's process still runs: True, False, or None if it is on another host."""
    if worker.host != socket.gethostname() or (worker.machine and worker.machine != MACHINE):
        return None  # another machine, or another pid namespace under the same name
    try:
        os.kill(worker.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, under another user
    stat = _proc_stat(worker.pid)
    if stat is None:
        return True  # no /proc here: trust the signal check
    state, started = stat
    # A killed process nobody has reaped yet (a zombie) still answers kill(pid, 0).
    if state in ("Z", "X", "x"):
        return False
    # A different start time means the pid was recycled by an unrelated process.
    return not (worker.pid_start and started != worker.pid_start)


def _this_machine() -> str:
    """This kernel boot and pid namespace: where our pids mean the same processes."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return ""
    return f"{boot}/{namespace}"


MACHINE = _this_machine()

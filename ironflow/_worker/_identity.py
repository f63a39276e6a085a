"""This process as a lease holder: the ``WorkerInfo`` a worker writes into its leases."""

from __future__ import annotations

import os
import socket

from ironflow._pure._ids import new_id
from ironflow.store._liveness import MACHINE, pid_start
from ironflow.store._records import WorkerInfo

__all__ = ["this_worker"]


def this_worker(worker_id: str | None = None) -> WorkerInfo:
    """The WorkerInfo describing the current process."""
    pid = os.getpid()
    return WorkerInfo(
        id=worker_id or f"{socket.gethostname()}:{pid}:{new_id()[-6:]}",
        host=socket.gethostname(),
        pid=pid,
        pid_start=pid_start(pid),
        machine=MACHINE,
    )

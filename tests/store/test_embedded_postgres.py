"""The tests' embedded PostgreSQL does not outlive the process that started it."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = str(Path(__file__).resolve().parents[2])

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")

_CHILD = """
import sys, time
from tests.support.postgres import EmbeddedPostgres
pg = EmbeddedPostgres(fsync=False)
pg.start()
print(pg.pid, pg.root, flush=True)
time.sleep(600)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purpose (its parent, pytest's child, is dead).
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_the_server_stops_when_its_starter_is_killed() -> None:
    """A pytest or bench killed with kill -9 cannot stop its server by pid: the kernel
    stops it (parent-death signal), so no postmaster is left on the shared host."""
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": REPO},
    )
    assert child.stdout is not None
    line = child.stdout.readline().split()
    pid, root = int(line[0]), line[1]
    try:
        child.send_signal(signal.SIGKILL)
        child.wait(30)
        deadline = time.monotonic() + 30
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(pid), f"the postmaster {pid} outlived the process that started it"
    finally:
        child.stdout.close()
        if _alive(pid):
            os.kill(pid, signal.SIGQUIT)  # ours, by its pid
        shutil.rmtree(root, ignore_errors=True)

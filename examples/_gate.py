"""The demos' kill window: a tool that waits, at most a minute, for a gate file to exist."""

from __future__ import annotations

import os
import time
from pathlib import Path


def wait_for_gate() -> None:
    """Hold the tool while ``$DEMO_GATE`` names a file that does not exist yet.

    Without ``DEMO_GATE`` (a worker started by hand) it returns at once.
    """
    gate = os.environ.get("DEMO_GATE")
    deadline = time.monotonic() + 60
    while gate and not Path(gate).exists() and time.monotonic() < deadline:
        time.sleep(0.05)

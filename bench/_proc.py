"""Child processes for the benchmark: spawn, read their lines with a timeout, stop by pid."""

from __future__ import annotations

import os
import queue
import signal
import socket
import statistics
import subprocess
import threading
import time
from collections.abc import Sequence
from typing import IO

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Lines:
    """A child process whose stdout is read line by line on a thread of its own."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        stderr: IO[str] | int | None = subprocess.DEVNULL,
        cwd: str = REPO,
    ) -> None:
        self.proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            cwd=cwd,
            env=env,
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        assert self.proc.stdout is not None
        threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True).start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def wait_for(self, prefix: str, timeout: float) -> str:
        """The first line starting with ``prefix``; raises if the child exits or time runs out."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{self.proc.args!r} did not print {prefix!r} in {timeout}s")
            try:
                line = self._lines.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                raise RuntimeError(
                    f"{self.proc.args!r} exited ({self.proc.wait()}) before printing {prefix!r}"
                )
            if line.startswith(prefix):
                return line

    def seen(self) -> list[str]:
        """Lines printed so far that no wait_for consumed."""
        out = []
        while True:
            try:
                line = self._lines.get_nowait()
            except queue.Empty:
                return out
            if line is not None:
                out.append(line)

    def kill(self, sig: int = signal.SIGKILL, timeout: float = 10.0) -> None:
        """Send ``sig`` to this child (by its pid) and reap it; SIGKILL if it lingers."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=timeout)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def import_ms(python: str, statement: str, samples: int) -> float:
    """Median wall time of ``python -c statement`` minus that of ``python -c pass``, in ms."""

    def once(code: str) -> float:
        t0 = time.perf_counter()
        subprocess.run([python, "-c", code], check=True, stdout=subprocess.DEVNULL)
        return time.perf_counter() - t0

    base, full = [], []
    for _ in range(samples):
        base.append(once("pass"))
        full.append(once(statement))
    return (statistics.median(full) - statistics.median(base)) * 1e3

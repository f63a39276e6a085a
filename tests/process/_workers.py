"""Worker subprocesses for the process tests, started and stopped by pid.

Each worker is ``python -m ironflow.run worker MODULE`` over one data directory; its
tools append lines to the file named by ``IRONFLOW_TEST_LOG``, so executions are
counted across processes, and wait at the file named by ``IRONFLOW_TEST_GATE``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from ironflow import LmdbStore

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[2]
WAIT = 30.0


class Workers:
    """Starts worker subprocesses and guarantees each is killed by pid at teardown.

    ``lease_ttl`` defaults to far longer than any wait of a test: a takeover inside the
    wait then proves it came from the dead pid, not from the lease running out.
    """

    def __init__(
        self,
        tmp: Path,
        module: str = "tests.process.agents_for_tests",
        *,
        lease_ttl: float = 120.0,
        concurrency: int = 2,
    ) -> None:
        self.tmp = tmp
        self.module = module
        self.lease_ttl = lease_ttl
        self.concurrency = concurrency
        self.data_dir = tmp / "data"
        self.log = tmp / "executions.log"
        self.log.touch()
        #: The gated step waits until this file exists (see the agents' modules).
        self.gate = tmp / "classify.gate"
        self.procs: list[subprocess.Popen[bytes]] = []
        self._outputs: dict[int, tuple[Path, Path]] = {}

    def start(self, *args: str, **extra_env: str) -> subprocess.Popen[bytes]:
        """Start a worker (``args`` added to its command line, ``extra_env`` to its
        environment); return once it is ready."""
        n = len(self.procs) + 1
        out, err = self.tmp / f"worker{n}.out", self.tmp / f"worker{n}.err"
        env = {
            k: v for k, v in os.environ.items() if not k.startswith(("IRONFLOW_", "HYPOTHESIS_"))
        }
        env.update(
            IRONFLOW_TEST_LOG=str(self.log), IRONFLOW_TEST_GATE=str(self.gate), PYTHONUNBUFFERED="1"
        )
        env.update(extra_env)
        with open(out, "wb") as stdout, open(err, "wb") as stderr:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "ironflow.run",
                    "worker",
                    self.module,
                    "--data-dir",
                    str(self.data_dir),
                    "--lease-ttl",
                    str(self.lease_ttl),
                    "--concurrency",
                    str(self.concurrency),
                    *args,
                ],
                cwd=REPO,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
            )
        self.procs.append(proc)
        self._outputs[proc.pid] = (out, err)
        wait_for(
            lambda: "worker ready" in self.stdout(proc) or proc.poll() is not None,
            f"worker {n} to be ready",
            self.describe,
        )
        assert proc.poll() is None, f"worker {n} exited at start\n{self.describe()}"
        return proc

    def stdout(self, proc: subprocess.Popen[bytes]) -> str:
        return self._outputs[proc.pid][0].read_text(errors="replace")

    def stderr(self, proc: subprocess.Popen[bytes]) -> str:
        return self._outputs[proc.pid][1].read_text(errors="replace")

    def executions(self, run_id: str) -> Counter[tuple[str, str]]:
        """(start|end, step id) -> how many times, for one run, across every worker."""
        counts: Counter[tuple[str, str]] = Counter()
        for line in self.log.read_text().splitlines():
            what, rid, step_id, *_ = line.split(" ")
            if rid == run_id:
                counts[(what, step_id)] += 1
        return counts

    def describe(self) -> str:
        parts = [f"--- executions\n{self.log.read_text()}"]
        for proc in self.procs:
            parts.append(
                f"--- worker pid {proc.pid} (exit {proc.poll()})\n"
                f"{self.stdout(proc)}{self.stderr(proc)}"
            )
        return "\n".join(parts)

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)


def wait_for(
    predicate: Callable[[], T], what: str, describe: Callable[[], str], timeout: float = WAIT
) -> T:
    """Poll ``predicate`` until it is truthy, or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{describe()}")
        time.sleep(0.05)


def finished(store: LmdbStore, run_id: str) -> bool:
    return store.get_run(run_id).status in ("completed", "failed", "cancelled")

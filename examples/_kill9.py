"""The framework examples' crash-and-resume demos: ``Process``, a child process they all
kill by its pid, and ``run_demo``, the demo of the two that run under an Ironflow worker:

1. starts a worker process on a fresh data directory (``python -m ironflow.run worker``);
2. emits the example's event; the agent makes its first model requests and tool calls;
3. when the worker prints that the ``convert`` tool started (the second model request
   recorded, the third not yet made), ``kill -9``s it by its pid;
4. starts a second worker, waits for the run to complete, and checks: the run completed
   with the steps an uncrashed run records, and the second worker made no model request
   and ran no tool that the first had recorded: only ``convert``, the call in flight,
   ran again, then the last model request.
Any failed check exits non-zero.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from ironflow import AgentDefinition, LmdbStore
from ironflow.store import AgentSpec

ROOT = Path(__file__).resolve().parents[1]


class DemoFailed(Exception):
    pass


def check(condition: bool, message: str) -> None:
    if not condition:
        raise DemoFailed(message)
    print(f"    ✓ {message}", flush=True)


class Process:
    """A demo's child process (``python -m MODULE ARGS``) whose output is echoed with a
    prefix and kept; ``DEMO_GATE`` names the gate file its slow tool waits for."""

    def __init__(
        self, label: str, argv: list[str], gate: Path, env: dict[str, str] | None = None
    ) -> None:
        env = dict(
            os.environ, **(env or {}), PYTHONPATH=str(ROOT), DEMO_GATE=str(gate),
            PYTHONUNBUFFERED="1",
        )  # fmt: skip
        self.label = label
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", *argv],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip())
            print(f"    [{self.label}] {line.rstrip()}", flush=True)

    def wait_for_line(self, text: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise DemoFailed(f"{self.label} never printed {text!r}")
            time.sleep(0.02)

    def kill9(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def wait(self, timeout: float = 60) -> int:
        """Wait for the process to exit on its own; its exit code."""
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise DemoFailed(f"{self.label} still running after {timeout:.0f} s") from None
        self._reader.join(timeout=5)
        return code

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)
        self._reader.join(timeout=5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


class Worker(Process):
    """``python -m ironflow.run worker MODULE`` on a data directory."""

    def __init__(self, label: str, module: str, data_dir: Path, gate: Path) -> None:
        argv = ["ironflow.run", "worker", module, "--data-dir", str(data_dir)]
        super().__init__(label, argv, gate)


def run_demo(
    *, module: str, agent: Any, event: str, data: dict[str, Any], expected_steps: list[str]
) -> dict[str, Any]:
    """Kill the example's worker with ``kill -9`` between model requests; resume; check."""
    tmp = Path(tempfile.mkdtemp(prefix="ironflow-framework-demo-"))
    data_dir, gate = tmp / "data", tmp / "gate"
    first = second = None
    try:
        print(f"==> worker 1 on {data_dir}", flush=True)
        first = Worker("worker 1", module, data_dir, gate)
        defn = AgentDefinition.must_from_fn(agent)
        with LmdbStore(data_dir) as store:
            # Registered here too, so the event finds its agent whether or not the
            # worker has registered it yet.
            store.register_agents([AgentSpec(id=defn.id, triggers=defn.triggers)])
            run_id = store.emit(event, data).run_ids[0]
        print(f"==> emitted {event}: run {run_id}", flush=True)
        first.wait_for_line("[convert] start")
        print(f"==> kill -9 {first.proc.pid} (worker 1), mid-run", flush=True)
        first.kill9()
        with LmdbStore(data_dir) as store:
            recorded = [s.id for s in store.get_steps(run_id)]
        check("llm" in " ".join(recorded), f"before the kill, recorded: {recorded}")
        gate.touch()  # the next worker's convert goes through
        print("==> worker 2 resumes the run", flush=True)
        second = Worker("worker 2", module, data_dir, gate)
        deadline = time.monotonic() + 60
        while True:
            with LmdbStore(data_dir) as store:
                run = store.get_run(run_id)
                steps = store.get_steps(run_id)
            if run.status in ("completed", "failed"):
                break
            if time.monotonic() > deadline:
                raise DemoFailed(f"run {run_id} still {run.status} after 60s")
            time.sleep(0.1)
        check(run.status == "completed", f"run {run_id} completed: {run.output}")
        ids = [s.id for s in sorted(steps, key=lambda s: s.position)]
        check(ids == expected_steps, f"its steps are {ids}")
        again = [line for line in second.lines if line.startswith("[")]
        ran = {line.split("]")[0] + "]" for line in again}
        check(
            ran <= {"[convert]", "[model]"},
            f"worker 2 ran only the call in flight and what followed: {sorted(ran)}",
        )
        model_calls = [line for line in again if line.startswith("[model]")]
        check(len(model_calls) == 1, f"worker 2 made one model request, the last: {model_calls}")
        return dict(run.output)
    finally:
        for worker in (first, second):
            if worker is not None:
                worker.stop()

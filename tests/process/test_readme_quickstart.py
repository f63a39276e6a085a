"""The README's quick start, followed literally: its code, its commands, its outputs.

``my_agent.py`` and the shell commands are read out of README.md and run as written, in
a fresh directory, with real worker processes killed by the pid in ``worker.pid``. The
output blocks the README shows after each restart must be what the worker prints.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.process

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text()
QUICK_START = README[README.index("## Quick start") : README.index("## What you can rely on")]
BIN = Path(sys.executable).parent
WAIT = 30.0


def blocks(text: str) -> list[tuple[str, str]]:
    """The fenced code blocks of ``text``: (language, body)."""
    return re.findall(r"```(\w*)\n(.*?)```", text, flags=re.S)


def command(prefix: str) -> str:
    """The one line of the quick start's bash blocks that starts with ``prefix``."""
    lines = [
        line
        for lang, body in blocks(QUICK_START)
        if lang == "bash"
        for line in body.splitlines()
        if line.startswith(prefix)
    ]
    assert len(lines) == 1, (prefix, lines)
    return lines[0]


def expected_outputs() -> list[list[str]]:
    """The output blocks the README shows after a restart, pid numbers as a pattern."""
    return [
        body.strip().splitlines()
        for lang, body in blocks(QUICK_START)
        if lang == "" and body.startswith("doc-processor worker ready")
    ]


def wait_for(predicate: Callable[[], Any], what: str, describe: Callable[[], str]) -> Any:
    deadline = time.monotonic() + WAIT
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}\n{describe()}")
        time.sleep(0.05)


class Terminal:
    """The user's directory: terminal A's workers, terminal B's shell commands."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("IRONFLOW_")}
        # `source .venv/bin/activate`, as the README asks in every terminal.
        self.env["PATH"] = f"{BIN}{os.pathsep}{self.env.get('PATH', '')}"
        self.env["PYTHONUNBUFFERED"] = "1"
        self.workers: list[tuple[subprocess.Popen[bytes], Path, Path]] = []

    def start_worker(self) -> subprocess.Popen[bytes]:
        n = len(self.workers) + 1
        out, err = self.root / f"worker{n}.out", self.root / f"worker{n}.err"
        with open(out, "wb") as stdout, open(err, "wb") as stderr:
            proc = subprocess.Popen(
                command("ironflow worker").split("#")[0].split(),
                cwd=self.root,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
            )
        self.workers.append((proc, out, err))
        wait_for(lambda: "worker ready" in self.stdout(), "the worker to be ready", self.describe)
        return proc

    def stdout(self) -> str:
        return self.workers[-1][1].read_text(errors="replace")

    def stderr(self) -> str:
        return self.workers[-1][2].read_text(errors="replace")

    def shell(self, line: str) -> str:
        """Run one of the README's commands in bash, as typed in terminal B."""
        proc = subprocess.run(
            ["bash", "-c", line],
            cwd=self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 0, f"{line}\n{proc.stdout}{proc.stderr}"
        return proc.stdout

    def describe(self) -> str:
        return "\n".join(
            f"--- worker pid {p.pid} (exit {p.poll()})\n{o.read_text()}{e.read_text()}"
            for p, o, e in self.workers
        )

    def close(self) -> None:
        for proc, _, _ in self.workers:
            if proc.poll() is None:
                proc.kill()  # by its pid
            proc.wait(timeout=30)


@pytest.fixture
def terminal(tmp_path: Path) -> Iterator[Terminal]:
    python = next(body for lang, body in blocks(QUICK_START) if lang == "python")
    (tmp_path / "my_agent.py").write_text(python)
    t = Terminal(tmp_path)
    try:
        yield t
    finally:
        t.close()


def printed_since_ready(text: str) -> list[str]:
    """The worker's stdout from its ready line on, the pid made a placeholder."""
    return [re.sub(r"\(pid \d+\)", "(pid N)", line) for line in text.strip().splitlines()]


def test_the_quick_start_does_what_the_readme_shows(terminal: Terminal) -> None:
    """Kill mid-OCR: OCR runs again; kill mid-classify: OCR comes back from the record."""
    after_mid_ocr, after_mid_classify = (
        [re.sub(r"\(pid \d+\)", "(pid N)", line) for line in block] for block in expected_outputs()
    )
    emit = command("ironflow emit doc.received")
    kill = command("kill -9").split("#")[0]
    assert kill.strip() == "kill -9 $(cat worker.pid)"

    # Terminal A: the worker writes the pid it prints.
    first = terminal.start_worker()
    assert f"(pid {first.pid})" in terminal.stdout()
    assert (terminal.root / "worker.pid").read_text().strip() == str(first.pid)

    # Terminal B: emit, and while OCR sleeps, kill the worker by its pid.
    terminal.shell(emit)
    wait_for(lambda: "[ocr]" in terminal.stdout(), "OCR to start", terminal.describe)
    terminal.shell(kill)
    first.wait(timeout=WAIT)
    assert "running (orphaned)" in terminal.shell(command("ironflow run list"))

    # Terminal A again: the run resumes at once; OCR runs again, as the README shows.
    terminal.start_worker()
    wait_for(lambda: "[publish] doc doc-2" in terminal.stdout(), "doc-2", terminal.describe)
    assert printed_since_ready(terminal.stdout()) == after_mid_ocr, terminal.describe()

    # Between steps: kill while classify works; the restarted worker skips OCR.
    terminal.shell(emit.replace("doc-2", "doc-3"))
    wait_for(
        lambda: terminal.stdout().count("[classify]") == 2, "classify to start", terminal.describe
    )
    terminal.shell(kill)
    terminal.workers[-1][0].wait(timeout=WAIT)
    terminal.start_worker()
    wait_for(lambda: "[publish] doc doc-3" in terminal.stdout(), "doc-3", terminal.describe)
    assert printed_since_ready(terminal.stdout()) == after_mid_classify, terminal.describe()
    assert (
        "resuming at step 1 after tool.ocr, attempt 2; 1 recorded step(s) replay from the record"
        in terminal.stderr()
    )

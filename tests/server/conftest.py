"""Fixtures for the server tests: an in-process server, and real `ironflow serve` processes."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from ironflow.server import BackgroundServer
from ironflow.store import LmdbStore, RemoteStore, Store

REPO = Path(__file__).resolve().parents[2]


def wait_until(predicate: Callable[[], Any], timeout: float = 30.0, what: str = "") -> Any:
    """Poll ``predicate`` every 20 ms until it returns something truthy; fail after ``timeout``.

    Generous: a loaded machine starts processes slowly, and a passing test never waits it out.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(0.02)


def child_env(**extra: str) -> dict[str, str]:
    """The environment for a child process: no Ironflow settings leaking in from ours."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IRONFLOW_")}
    env["PYTHONPATH"] = str(REPO)
    env.update(extra)
    return env


class Child:
    """A child process whose stdout lines are collected on a thread; stopped by pid."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.argv = argv
        self.proc = subprocess.Popen(
            argv,
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.stderr: list[str] = []
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._readers = [
            threading.Thread(target=self._pump, args=(self.proc.stdout,), daemon=True),
            threading.Thread(target=self._drain, args=(self.proc.stderr,), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def _drain(self, stream: IO[str]) -> None:
        for line in stream:
            self.stderr.append(line)

    def line_starting(self, prefix: str, timeout: float = 30.0) -> str:
        """The first stdout line starting with ``prefix``; fails if the child exits first."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                line = ""
            if line is None:
                raise AssertionError(
                    f"{self.argv} exited with {self.proc.wait()} before printing {prefix!r}; "
                    f"stderr: {''.join(self.stderr)[-2000:]}"
                )
            if line.startswith(prefix):
                return line
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.argv} did not print {prefix!r} in {timeout}s")

    def kill(self, sig: int = signal.SIGKILL) -> int:
        """Send ``sig`` to this child by its pid, reap it and close its pipes."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
        code = self.proc.wait()
        # The pipes are at EOF once the child is gone; closing them under a reader that
        # has not got there yet would raise in its thread, reported against a later test.
        for reader in self._readers:
            reader.join(timeout=30)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
        return code


def get_json(url: str, token: str | None = None) -> Any:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


class Served:
    """An `ironflow serve` process over its own data directory; restartable on its port."""

    def __init__(self, data_dir: Path, *, args: tuple[str, ...] = ("--dev",)) -> None:
        self.data_dir = data_dir
        self.args = args
        self.port = 0
        self.url = ""
        self.child: Child | None = None

    def start(self) -> str:
        argv = [sys.executable, "-m", "ironflow._cli._main", "serve", *self.args]
        argv += ["--port", str(self.port), "--data-dir", str(self.data_dir)]
        self.child = Child(argv, child_env())
        line = self.child.line_starting("ironflow server listening on ")
        self.url = line.rsplit(" ", 1)[1]
        self.port = int(self.url.rsplit(":", 1)[1])
        return self.url

    def kill(self, sig: int = signal.SIGKILL) -> int:
        assert self.child is not None
        return self.child.kill(sig)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    """`ironflow serve --dev` on a free port of 127.0.0.1, killed by pid afterwards."""
    server = Served(tmp_path / "data")
    try:
        server.start()
        wait_until(lambda: get_json(server.url + "/api/v1/health")["status"] == "ok")
        yield server
    finally:
        if server.child is not None:
            server.kill()


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[LmdbStore]:
    """The LmdbStore behind an in-process server (fsync off: these tests prove logic)."""
    store = LmdbStore(tmp_path / "server-data", sync=False)
    yield store
    store.close()


@pytest.fixture
def server_url(backend: LmdbStore) -> Iterator[str]:
    """An in-process server over ``backend``, on a free port of 127.0.0.1."""
    with BackgroundServer(backend) as url:
        yield url


@pytest.fixture
def remote(server_url: str) -> Iterator[RemoteStore]:
    """A RemoteStore talking to the in-process server; it gives up after 5 s down."""
    store = RemoteStore(server_url, long_poll=0.5, give_up_after=5.0)
    yield store
    store.close()


@pytest.fixture(params=["lmdb", "remote"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """An LmdbStore, or a RemoteStore in front of one: every test here runs on both."""
    local = LmdbStore(tmp_path / "data", sync=False)
    if request.param == "lmdb":
        yield local
    else:
        with BackgroundServer(local) as url:
            remote = RemoteStore(url, long_poll=0.2, give_up_after=5.0)
            yield remote
            remote.close()
    local.close()

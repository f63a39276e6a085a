"""Acknowledged means on disk: the default store syncs, and a step waits for its fsync.

``kill -9`` never loses the page cache, so no crash test can tell a commit that reached
the disk from one that only reached memory, and every logic test runs with
``sync=False``. These tests look at the commit itself:

- the default store (``LmdbStore(path)``, what ``ironflow serve`` and a worker open)
  has LMDB's ``sync`` and ``metasync`` on;
- a real worker traced with ``strace -f``, its ``fdatasync`` calls slowed down, shows
  each step's record ``fdatasync``'d, and its meta page written through the data file's
  ``O_DSYNC`` handle, before the handler goes on to the next step's tool;
- without strace, the same order is checked in-process: each commit is slowed down by
  a wrapper around LMDB's transactions, and each tool, when it starts, finds no commit
  in flight and the previous step's record already readable.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import lmdb
import pytest

from ironflow import AgentContext, LmdbStore, agent, current_step, tool
from ironflow.testing import run_once
from tests.process._workers import REPO, WAIT, wait_for

STRACE = shutil.which("strace")
#: How long each traced fdatasync (or each wrapped commit) is held before it returns:
#: far longer than a handler needs to reach its next tool, were it not waiting.
DELAY_US = 100_000


# -- which LMDB environments the store opens, and how ------------------------------------


@attrs.define
class Commits:
    """Every LMDB environment opened while installed, and its write commits."""

    delay: float = 0.0
    #: ``env.flags()`` of each environment, read as it was opened.
    flags: list[dict[str, bool]] = attrs.field(factory=list)
    done: int = 0
    in_flight: int = 0
    lock: threading.Lock = attrs.field(factory=threading.Lock)

    def committing(self) -> int:
        with self.lock:
            return self.in_flight


class _Txn:
    """A write transaction whose commit waits ``delay`` first and is counted."""

    def __init__(self, real: Any, commits: Commits) -> None:
        self._real = real
        self._commits = commits

    def _commit(self, finish: Callable[[], Any]) -> Any:
        with self._commits.lock:
            self._commits.in_flight += 1
        try:
            time.sleep(self._commits.delay)
            return finish()
        finally:
            with self._commits.lock:
                self._commits.in_flight -= 1
                self._commits.done += 1

    def __enter__(self) -> _Txn:
        self._real.__enter__()
        return self

    def __exit__(self, *exc: Any) -> Any:
        if exc[0] is not None:
            return self._real.__exit__(*exc)
        return self._commit(lambda: self._real.__exit__(*exc))

    def commit(self) -> None:
        self._commit(self._real.commit)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


class _Env:
    def __init__(self, real: Any, commits: Commits) -> None:
        self._real = real
        self._commits = commits

    def begin(self, *args: Any, **kwargs: Any) -> Any:
        txn = self._real.begin(*args, **kwargs)
        return _Txn(txn, self._commits) if kwargs.get("write") else txn

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


@pytest.fixture
def commits(monkeypatch: pytest.MonkeyPatch) -> Commits:
    """Wrap every ``lmdb.open`` from here on: its environment's commits are slowed, counted."""
    seen = Commits()
    real_open = lmdb.open

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        env = real_open(*args, **kwargs)
        seen.flags.append(env.flags())
        return _Env(env, seen)

    monkeypatch.setattr(lmdb, "open", wrapped)
    return seen


def test_the_default_store_syncs_data_and_meta_pages(tmp_path: Path, commits: Commits) -> None:
    """LmdbStore(path), as `ironflow serve` and a worker open it: sync and metasync on."""
    from ironflow.store._open import open_store

    with LmdbStore(tmp_path / "a"):
        pass
    store = open_store(tmp_path / "b")  # the worker's and the CLI's way to open a directory
    store.close()  # type: ignore[attr-defined]
    assert len(commits.flags) == 2
    for flags in commits.flags:
        assert flags["sync"] is True and flags["metasync"] is True, flags


# -- in-process: a tool never starts while the previous step's commit is in flight ------

_check: list[Callable[[], None]] = []


@tool
def first(n: int) -> int:
    _check[0]()
    return n + 1


@tool
def second(n: int) -> int:
    _check[0]()
    return n * 2


@tool
def third(n: int) -> int:
    _check[0]()
    return n - 3


@agent(id="commit-order", triggers=["commit.order"])
def commit_order(ctx: AgentContext) -> int:
    return third(n=second(n=first(n=int(ctx.event.data["n"]))))


def test_the_next_step_starts_only_after_the_previous_commit_returned(
    tmp_path: Path, commits: Commits
) -> None:
    """Each commit is held 0.1 s: a tool starting meanwhile would see it in flight."""
    commits.delay = DELAY_US / 1e6
    store = LmdbStore(tmp_path / "data")  # the default: sync and metasync on
    seen: list[tuple[int, int, list[int]]] = []

    def check() -> None:
        step = current_step()
        assert step is not None
        visible = [s.position for s in store.get_steps(step.run_id)]
        seen.append((step.position, commits.committing(), visible))

    _check[:] = [check]
    try:
        # A long lease: no heartbeat commits in the middle of the run.
        run = run_once(store, commit_order, {"n": 5}, concurrency=1, lease_ttl=600)
    finally:
        _check.clear()
        store.close()
    assert run.status == "completed" and run.output == 9
    # No commit in flight, and every earlier step already committed, at each tool's start.
    assert seen == [(0, 0, []), (1, 0, [0]), (2, 0, [0, 1])]
    assert commits.done >= 5  # the lease, three steps and the finish


# -- strace: the order of fdatasync and the next step's first system call ---------------


@attrs.frozen
class Call:
    """One system call as strace saw it: when it entered and when it returned (line numbers).

    ``result`` is the return value alone (strace may append ``(DELAYED)`` and such).
    """

    name: str
    args: str
    result: str
    entered: int
    returned: int


_DONE = re.compile(r"^(?P<name>\w+)\((?P<args>.*)\)\s+= (?P<result>.*)$")
_UNFINISHED = re.compile(r"^(?P<name>\w+)\((?P<args>.*) <unfinished \.\.\.>$")
_RESUMED = re.compile(r"^<\.\.\. (?P<name>\w+) resumed>(?P<args>.*)\)\s+= (?P<result>.*)$")


def parse_trace(text: str) -> list[Call]:
    """The calls of an ``strace -f -o FILE`` trace (each line ``PID call...``), in order."""
    calls: list[Call] = []
    pending: dict[str, tuple[str, str, int]] = {}
    for n, line in enumerate(text.splitlines()):
        pid, _, rest = line.partition(" ")
        rest = rest.strip()
        if m := _UNFINISHED.match(rest):
            pending[pid] = (m["name"], m["args"], n)
        elif m := _RESUMED.match(rest):
            name, args, entered = pending.pop(pid)
            calls.append(Call(name, args + m["args"], m["result"].split()[0], entered, n))
        elif m := _DONE.match(rest):
            calls.append(Call(m["name"], m["args"], m["result"].split()[0], n, n))
    return calls


def _strace_works() -> str | None:
    """Why strace cannot trace here, or None if it can."""
    if STRACE is None:
        return (
            "strace is not installed (`make test` installs it with apt-get when run as "
            "root); the in-process commit-order test still runs"
        )
    probe = subprocess.run(
        [STRACE, "-f", "-qq", "-e", "trace=none", "true"], capture_output=True, text=True
    )
    if probe.returncode != 0:
        return f"strace cannot trace here: {probe.stderr.strip()}"
    return None


@attrs.frozen
class Traced:
    """A worker under strace: the worker's own pid, strace's process, the trace file."""

    pid: int
    strace: subprocess.Popen[bytes]
    trace: Path


@pytest.fixture
def traced_worker(tmp_path: Path) -> Iterator[Callable[[], Traced]]:
    """Start ``python -m ironflow.run worker`` under strace; stop it (by pid) afterwards."""
    why = _strace_works()
    if why is not None:
        pytest.skip(why)
    assert STRACE is not None
    procs: list[subprocess.Popen[bytes]] = []
    pids: list[int] = []

    def start() -> Traced:
        trace, out = tmp_path / "trace.txt", tmp_path / "worker.out"
        env = {k: v for k, v in os.environ.items() if not k.startswith("IRONFLOW_")}
        env.update(IRONFLOW_TEST_MARKERS=str(tmp_path / "markers"), PYTHONUNBUFFERED="1")
        (tmp_path / "markers").mkdir()
        argv = [
            STRACE,
            "-f",
            "-qq",
            "-s",
            "4096",
            "-e",
            "signal=none",
            "-e",
            "trace=openat,fdatasync,fsync,pwrite64",
            "-e",
            f"inject=fdatasync:delay_exit={DELAY_US}",
            "-o",
            str(trace),
            "--",
            sys.executable,
            "-m",
            "ironflow.run",
            "worker",
            "tests.process.agents_durable",
            "--data-dir",
            str(tmp_path / "data"),
            "--concurrency",
            "1",
            "--lease-ttl",
            "600",  # no heartbeat commits in the middle of the run
        ]
        with open(out, "wb") as sink:
            proc = subprocess.Popen(
                argv, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=sink, stderr=sink
            )
        procs.append(proc)
        ready = wait_for(
            lambda: (
                re.search(r"worker ready \(pid (\d+)\)", out.read_text()) or proc.poll() is not None
            ),
            "the traced worker to be ready",
            lambda: out.read_text(),
        )
        assert proc.poll() is None, out.read_text()
        assert isinstance(ready, re.Match)
        pids.append(int(ready[1]))
        return Traced(pids[-1], proc, trace)

    try:
        yield start
    finally:
        for proc, pid in zip(procs, pids, strict=False):
            if proc.poll() is None:
                # strace still runs, so the worker is its child, alive or unreaped: its pid
                # cannot have been recycled. Kill it first, since it outlives a killed strace.
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=WAIT)


@pytest.mark.process
def test_each_step_is_fdatasynced_before_the_handler_goes_on(
    tmp_path: Path, traced_worker: Callable[[], Traced]
) -> None:
    """strace -f: between one tool and the next, the commit's fdatasync and meta write returned."""
    worker = traced_worker()
    trace = worker.trace
    with LmdbStore(tmp_path / "data") as store:
        run_id = store.emit("durable.go", {"n": 5}).run_ids[0]
        wait_for(
            lambda: store.get_run(run_id).status == "completed",
            "the traced run to complete",
            lambda: trace.read_text()[-3000:],
        )
        assert store.get_run(run_id).output == 9
    os.kill(worker.pid, signal.SIGTERM)  # a drain: the worker exits, and strace after it
    assert worker.strace.wait(timeout=WAIT) == 0, trace.read_text()[-3000:]
    calls = parse_trace(trace.read_text())

    data_fds, meta_fds = set(), set()
    markers: dict[int, Call] = {}
    for call in calls:
        if call.name == "openat" and '/data.mdb"' in call.args and call.result.isdigit():
            (meta_fds if "O_DSYNC" in call.args else data_fds).add(call.result)
        elif call.name == "openat" and "/markers/marker-" in call.args:
            markers[int(call.args.split("/markers/marker-")[1].split('"')[0])] = call
    assert sorted(markers) == [0, 1, 2], f"markers seen: {sorted(markers)}"
    assert data_fds and meta_fds, "the worker did not open data.mdb with an O_DSYNC handle"

    def fd(call: Call) -> str:
        return call.args.split(",")[0]

    syncs = [c for c in calls if c.name in ("fdatasync", "fsync") and fd(c) in data_fds]
    metas = [c for c in calls if c.name == "pwrite64" and fd(c) in meta_fds]
    # The lease, three step records and the finish: each one commit, each one fdatasync.
    assert len([c for c in syncs if c.result == "0"]) >= 5, f"{len(syncs)} fdatasync calls"
    for position in (0, 1):
        after, before = markers[position].returned, markers[position + 1].entered
        synced = [c for c in syncs if after < c.entered and c.returned < before]
        assert synced, (
            f"no fdatasync of data.mdb returned between step {position}'s tool and step "
            f"{position + 1}'s: the handler went on before its record was on disk"
        )
        meta = [c for c in metas if synced[0].returned < c.entered and c.returned < before]
        assert meta, f"step {position}'s commit wrote no meta page through O_DSYNC in time"
    # ... and the last step is on disk before the run is reported finished.
    assert any(markers[2].returned < c.entered for c in syncs)

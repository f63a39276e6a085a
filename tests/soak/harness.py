"""The kill -9 soak: many runs, many crashes, and a full audit that nothing was lost.

It starts ``ironflow serve --dev`` (a free port of 127.0.0.1, a fresh data directory)
and worker processes (``python -m ironflow.run worker tests.soak.soak_agent`` with
``IRONFLOW_URL``), emits runs of a six-step agent (three tools, a memory append and
its wait, one more tool) with event ids, and for the set duration ``kill -9``s a
random worker at random moments, restarting it each time. In ``server`` mode it also
``kill -9``s and restarts the server. Then it lets every run finish, stops everything
and audits the data directory:

- every emitted event produced exactly one run, and every run completed;
- every run recorded exactly its six steps, at positions 0-5, each once;
- every tool execution is accounted for: the recorded output names the execution that
  produced it, every other execution of that step ran in a process that was then
  killed (so at most once more per crash), and none started after the step's record;
- the ``soak-memory`` entity stream holds exactly one event per run, versions 1..N;
- the ``soak-count`` projection equals a fresh fold of the stream, and, counted
  independently of the stream, holds one partition per run id with a count of 1;
- a torn line in an execution log (cut short by ``kill -9``) is allowed only as the
  last line of a process that was killed;
- the store's own consistency checks pass.

On PostgreSQL (``--store postgres``, ``make soak SOAK_STORE=postgres``) it starts an
embedded PostgreSQL (``tests/support/postgres.py``), two servers sharing its database
(``serve --store URL``, emits go to each in turn) and three workers: one through each
server and one straight to the database (``worker --store URL``). ``server`` mode kills
either server; PostgreSQL itself is stopped ``immediate`` (as a crash) and started
again once, half-way. ``--runs N`` emits N runs and keeps killing until all finished:
``tests/soak/test_soak.py`` runs it for issue 20's process test (80 runs in ``make
test``, 500 marked slow). The audit also checks the stream's versions run 1..N.

``tests/soak/test_audit.py`` plants each of these faults in a real data directory and
checks the audit reports it.

``python -m tests.soak --seconds 300 --mode workers`` (``make soak``) prints the figures;
a short run is a test in ``tests/soak/test_soak.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
MODULE = "tests.soak.soak_agent"
EVENT = "soak.job"
# Much longer than a server restart, so a lease never lapses under a live worker while
# the server is down: every re-execution the audit sees must come from a kill.
LEASE_TTL = 30.0
#: The stores a soak runs on: LMDB behind one server, or PostgreSQL behind two.
STORES = ("lmdb", "postgres")
#: At most this many runs are emitted ahead of the ones that reached their memory append.
BACKLOG = 24


@dataclass
class Report:
    """What a soak did and what its audit found. ``problems`` empty means it passed."""

    mode: str
    seconds: float
    workers: int
    store: str = "lmdb"
    servers: int = 1
    events: int = 0
    runs: int = 0
    completed: int = 0
    worker_kills: int = 0
    server_kills: int = 0
    postgres_restarts: int = 0
    steps_recorded: int = 0
    tool_executions: int = 0
    steps_reexecuted: int = 0
    extra_executions: int = 0
    runs_resumed: int = 0
    torn_lines: int = 0
    stream_events: int = 0
    lost_runs: int = 0
    duplicate_runs: int = 0
    lost_steps: int = 0
    duplicate_steps: int = 0
    lost_stream_events: int = 0
    duplicate_stream_events: int = 0
    projection_mismatches: int = 0
    missing_partitions: int = 0
    data_mb: float = 0.0
    elapsed: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def kills(self) -> int:
        return self.worker_kills + self.server_kills

    def problem(self, text: str) -> None:
        if len(self.problems) < 50:
            self.problems.append(text)
        elif len(self.problems) == 50:
            self.problems.append("... (more problems not shown)")

    def figures(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "problems"}
        out["kills"] = self.kills
        out["passed"] = not self.problems
        return out

    def text(self) -> str:
        lost = self.lost_runs + self.lost_steps + self.lost_stream_events
        dup = self.duplicate_runs + self.duplicate_steps + self.duplicate_stream_events
        rows = [
            ("mode", f"{self.mode} ({self.workers} workers, {self.seconds:g} s of kills)"),
            ("store", f"{self.store} ({self.servers} server{'s' if self.servers > 1 else ''})"),
            ("events emitted", self.events),
            ("runs completed", f"{self.completed} of {self.runs}"),
            ("kill -9", f"{self.kills} ({self.worker_kills} worker, {self.server_kills} server)"),
            ("PostgreSQL stopped immediate", self.postgres_restarts),
            ("runs resumed after a kill", self.runs_resumed),
            ("steps recorded", self.steps_recorded),
            ("tool executions", self.tool_executions),
            ("steps re-executed", f"{self.steps_reexecuted} ({self.extra_executions} extra runs)"),
            ("stream events", self.stream_events),
            ("torn log lines ignored", self.torn_lines),
            ("lost (runs/steps/events)", lost),
            ("duplicated (runs/steps/events)", dup),
            ("projection mismatches", self.projection_mismatches),
            ("runs missing from the projection", self.missing_partitions),
            ("data.mdb" if self.store == "lmdb" else "database", f"{self.data_mb:.1f} MB"),
            ("wall time", f"{self.elapsed:.0f} s"),
            ("result", "PASS" if not self.problems else f"FAIL ({len(self.problems)} problems)"),
        ]
        width = max(len(k) for k, _ in rows)
        lines = [f"  {k.ljust(width)}  {v}" for k, v in rows]
        lines += [f"  ! {p}" for p in self.problems]
        return "\n".join(lines)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.02)


class _Child:
    """One process (server or worker), its output in a file; killed only by its pid."""

    def __init__(self, argv: list[str], env: dict[str, str], out: Path) -> None:
        self.out = out
        with open(out, "ab") as sink:
            self.proc = subprocess.Popen(
                argv,
                cwd=REPO,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.pid = self.proc.pid

    def output(self) -> str:
        return self.out.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill9(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM (a drain), then SIGKILL if it does not exit in time."""
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
            try:
                return self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
        return self.proc.wait(timeout=30)


class Soak:
    """One soak over a fresh store. :meth:`run` returns the audited report.

    ``store``: ``"lmdb"`` (one server on a data directory, every worker through it) or
    ``"postgres"`` (an embedded PostgreSQL, two servers sharing its database, and three
    workers: one through each server and one straight to PostgreSQL with ``--store``;
    PostgreSQL itself is stopped ``immediate`` and started again ``pg_restarts`` times).
    ``runs``: emit that many runs and keep killing until every one has finished (at
    most ``seconds``); without it, emit and kill for ``seconds``.
    """

    def __init__(
        self,
        *,
        seconds: float,
        mode: str = "workers",
        store: str = "lmdb",
        runs: int | None = None,
        workers: int | None = None,
        concurrency: int = 4,
        worker_gap: tuple[float, float] = (0.4, 2.2),
        server_gap: tuple[float, float] = (4.0, 10.0),
        pg_restarts: int = 1,
        root: Path | None = None,
        log: Callable[[str], None] = print,
        seed: int | None = None,
    ) -> None:
        if mode not in ("workers", "server"):
            raise ValueError(f"mode must be 'workers' or 'server', not {mode!r}")
        if store not in STORES:
            raise ValueError(f"store must be one of {', '.join(STORES)}, not {store!r}")
        self.seconds = seconds
        self.mode = mode
        self.store = store
        self.runs = runs
        postgres = store == "postgres"
        self.n_workers = workers if workers is not None else (3 if postgres else 2)
        self.n_servers = 2 if postgres else 1
        self.concurrency = concurrency
        self.worker_gap = worker_gap
        self.server_gap = server_gap
        self.pg_restarts = pg_restarts if postgres else 0
        self.root = Path(root) if root else Path(tempfile.mkdtemp(prefix="ironflow-soak-"))
        self.data_dir = self.root / "data"
        self.exec_dir = self.root / "executions"
        self.out_dir = self.root / "logs"
        for d in (self.exec_dir, self.out_dir):
            d.mkdir(parents=True, exist_ok=True)
        self.say = log
        self.rng = random.Random(seed)
        self.report = Report(
            mode=mode, seconds=seconds, workers=self.n_workers, store=store, servers=self.n_servers
        )
        self.postgres: Any = None  # tests.support.postgres.EmbeddedPostgres, when used
        self.store_url = ""  # the PostgreSQL database's URL
        self.ports = [0] * self.n_servers
        self.urls = [""] * self.n_servers
        self.servers: list[_Child | None] = [None] * self.n_servers
        self.workers: list[_Child | None] = [None] * self.n_workers
        self.killed_pids: set[int] = set()
        self._generation = 0
        # Emitted event id -> run ids the emit answered with.
        self.emitted: dict[str, tuple[str, ...]] = {}
        self._emit_error: BaseException | None = None
        self._stop_emitting = threading.Event()

    @property
    def url(self) -> str:
        """The first server's URL."""
        return self.urls[0]

    # -- processes -----------------------------------------------------------------

    def _env(self, via: int | None = 0) -> dict[str, str]:
        """A child's environment; ``via``: the server it talks to (None: PostgreSQL)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("IRONFLOW_")}
        env.update(
            PYTHONPATH=str(REPO),
            PYTHONUNBUFFERED="1",
            IRONFLOW_SOAK_LOG_DIR=str(self.exec_dir),
        )
        if via is not None and self.urls[via]:
            env["IRONFLOW_URL"] = self.urls[via]
        return env

    def _healthy(self, url: str) -> bool:
        try:
            with urllib.request.urlopen(url + "/api/v1/health", timeout=2) as reply:
                return bool(json.load(reply).get("status") == "ok")
        except OSError:
            return False

    def start_postgres(self) -> None:
        """An embedded PostgreSQL in the soak's directory, its database migrated."""
        from ironflow.store._postgres import migrate
        from tests.support.postgres import EmbeddedPostgres

        self.postgres = EmbeddedPostgres(fsync=True)
        self.postgres.start()
        self.store_url = self.postgres.create_database("soak")
        migrate(self.store_url)
        self.say(f"soak: PostgreSQL (pid {self.postgres.pid}) at {self.store_url}")

    def restart_postgres(self) -> None:
        """Stop PostgreSQL as a crash would (``pg_ctl stop -m immediate``), start it."""
        started = time.monotonic()
        self.postgres.restart("immediate")
        self.report.postgres_restarts += 1
        took = time.monotonic() - started
        self.say(f"soak: PostgreSQL stopped immediate and started again in {took:.1f} s")

    def _where(self) -> list[str]:
        if self.store == "postgres":
            return ["--store", self.store_url]
        return ["--data-dir", str(self.data_dir)]

    def start_server(self, i: int = 0) -> None:
        if not self.ports[i]:
            self.ports[i] = _free_port()
            self.urls[i] = f"http://127.0.0.1:{self.ports[i]}"
        argv = [sys.executable, "-m", "ironflow._cli._main", "serve", "--dev"]
        argv += ["--port", str(self.ports[i]), *self._where()]
        name = "server.log" if self.n_servers == 1 else f"server-{i}.log"
        server = self.servers[i] = _Child(argv, self._env(None), self.out_dir / name)
        url = self.urls[i]

        def up() -> bool:
            if not server.alive():
                raise RuntimeError(f"the server exited at start:\n{server.output()[-3000:]}")
            return self._healthy(url)

        _wait(up, 60, f"the server {url} to answer /health")

    def route(self, slot: int) -> int | None:
        """The server worker ``slot`` talks to; None: straight to PostgreSQL.

        On PostgreSQL, worker 0 goes through server 0, worker 1 through server 1 and
        worker 2 (and every third after it) straight to the database.
        """
        if self.store != "postgres":
            return 0
        return (0, 1, None)[slot % 3]

    def start_worker(self, slot: int) -> _Child:
        self._generation += 1
        argv = [sys.executable, "-m", "ironflow.run", "worker", MODULE]
        argv += ["--concurrency", str(self.concurrency), "--lease-ttl", str(LEASE_TTL)]
        via = self.route(slot)
        if via is None:
            argv += ["--store", self.store_url]
        out = self.out_dir / f"worker-{slot}-{self._generation}.log"
        child = _Child(argv, self._env(via), out)
        self.workers[slot] = child

        def ready() -> bool:
            if not child.alive():
                raise RuntimeError(f"worker {child.pid} exited at start:\n{child.output()[-3000:]}")
            return "worker ready" in child.output()

        _wait(ready, 60, f"worker {child.pid} to be ready")
        return child

    def kill_worker(self) -> None:
        slot = self.rng.randrange(self.n_workers)
        child = self.workers[slot]
        assert child is not None
        child.kill9()
        self.killed_pids.add(child.pid)
        self.report.worker_kills += 1
        self.start_worker(slot)

    def kill_server(self) -> None:
        i = self.rng.randrange(self.n_servers)
        server = self.servers[i]
        assert server is not None
        server.kill9()
        self.killed_pids.add(server.pid)
        self.report.server_kills += 1
        self.start_server(i)

    def _check_children(self) -> None:
        """A worker or server that died without being killed is a finding, not noise."""
        for child in [*self.servers, *self.workers]:
            if child is not None and not child.alive() and child.pid not in self.killed_pids:
                raise RuntimeError(
                    f"process {child.pid} exited by itself with {child.proc.returncode}:\n"
                    f"{child.output()[-3000:]}"
                )

    def control(self, *, give_up_after: float | None = 30.0) -> Any:
        """A store for the harness itself: the first server, or PostgreSQL straight."""
        if self.store == "postgres":
            from ironflow.store import PostgresStore

            return PostgresStore(self.store_url, give_up_after=give_up_after)
        from ironflow.store import RemoteStore

        return RemoteStore(self.url, long_poll=0.0, give_up_after=give_up_after)

    # -- emitting ------------------------------------------------------------------

    def _emit_loop(self) -> None:
        """Emit through the servers in turn; any server answers for any run."""
        from ironflow.store import RemoteStore
        from tests.soak.soak_agent import STREAM

        stores = [RemoteStore(url, long_poll=0.0) for url in self.urls]
        try:
            n = 0
            while not self._stop_emitting.is_set():
                if self.runs is not None and n >= self.runs:
                    return
                store = stores[n % len(stores)]
                # Stay at most BACKLOG runs ahead of the runs that reached their append.
                if n >= BACKLOG and not store.read_stream(
                    STREAM, from_version=n - BACKLOG + 1, limit=1
                ):
                    self._stop_emitting.wait(0.02)
                    continue
                event_id = f"soak-{n:07d}"
                result = store.emit(EVENT, {"n": n}, id=event_id)
                self.emitted[event_id] = result.run_ids
                n += 1
        except BaseException as exc:
            self._emit_error = exc
        finally:
            for store in stores:
                store.close()

    # -- the soak --------------------------------------------------------------------

    def run(self) -> Report:
        started = time.monotonic()
        emitter: threading.Thread | None = None
        try:
            try:
                what = f"{self.runs} runs" if self.runs is not None else f"{self.seconds:g} s"
                where = self.data_dir if self.store == "lmdb" else "PostgreSQL"
                self.say(f"soak: mode {self.mode}, {what}, {self.store} store ({where})")
                if self.store == "postgres":
                    self.start_postgres()
                for i in range(self.n_servers):
                    self.start_server(i)
                for slot in range(self.n_workers):
                    self.start_worker(slot)
                emitter = threading.Thread(target=self._emit_loop, name="soak-emit", daemon=True)
                emitter.start()
                self._kill_loop(emitter)
                self._stop_emitting.set()
                emitter.join(timeout=120)
                if self._emit_error is not None:
                    raise RuntimeError(f"emitting failed: {self._emit_error!r}")
                self.say(f"soak: {len(self.emitted)} events emitted; letting every run finish")
                self._drain()
            except (RuntimeError, TimeoutError) as exc:
                self.report.problem(str(exc))
            finally:
                self._stop_emitting.set()
                self._stop_all()
            self.report.elapsed = time.monotonic() - started
            if not any(p.startswith("process ") for p in self.report.problems):
                self.audit()
        finally:
            if self.postgres is not None:
                self.postgres.close()
        return self.report

    def _kill_loop(self, emitter: threading.Thread) -> None:
        now = time.monotonic()
        deadline = now + self.seconds
        next_worker = now + self.rng.uniform(*self.worker_gap)
        next_server = (
            now + self.rng.uniform(*self.server_gap) if self.mode == "server" else float("inf")
        )
        # PostgreSQL restarts spread evenly over the soak (by time, or by runs emitted).
        restarts_at = [(k + 1) / (self.pg_restarts + 1) for k in range(self.pg_restarts)]
        # A soak of a number of runs may end before the random gaps come round (a fast
        # store finishes 80 runs in a few seconds): each kind of kill it claims to include
        # then happens by a share of the runs emitted, if it has not happened by then.
        due_kills: list[tuple[float, str]] = []
        if self.runs is not None:
            due_kills.append((0.5, "worker"))
            if self.mode == "server":
                due_kills.insert(0, (0.25, "server"))
        last_note = next_check = now
        with contextlib.ExitStack() as stack:
            store = stack.enter_context(self.control()) if self.runs is not None else None
            while True:
                now = time.monotonic()
                if now >= deadline:
                    if self.runs is not None:
                        self.say(f"soak: {self.seconds:g} s passed, not all {self.runs} runs ended")
                    return
                if store is not None and now >= next_check:
                    next_check = now + 0.5
                    if not emitter.is_alive() and self._all_finished(store):
                        return
                self._check_children()
                done = (
                    len(self.emitted) / self.runs
                    if self.runs is not None
                    else (now - deadline + self.seconds) / max(self.seconds, 1e-9)
                )
                if due_kills and done >= due_kills[0][0]:
                    _, kind = due_kills.pop(0)
                    if kind == "server" and self.report.server_kills == 0:
                        self.kill_server()
                    elif kind == "worker" and self.report.worker_kills == 0:
                        self.kill_worker()
                elif restarts_at and done >= restarts_at[0]:
                    restarts_at.pop(0)
                    self.restart_postgres()
                elif now >= next_server:
                    self.kill_server()
                    next_server = time.monotonic() + self.rng.uniform(*self.server_gap)
                elif now >= next_worker:
                    self.kill_worker()
                    next_worker = time.monotonic() + self.rng.uniform(*self.worker_gap)
                if now - last_note >= 30:
                    last_note = now
                    self.say(
                        f"soak: {now - deadline + self.seconds:4.0f} s, {len(self.emitted)} "
                        f"events, {self.report.worker_kills} worker and "
                        f"{self.report.server_kills} server kills"
                    )
                wake = min(next_worker, next_server, deadline, next_check if store else deadline)
                by_progress = restarts_at or due_kills
                time.sleep(max(0.0, min(wake - time.monotonic(), 0.1 if by_progress else 1.0)))

    @staticmethod
    def _all_finished(store: Any) -> bool:
        return not store.list_runs(limit=1, status="pending") and not store.list_runs(
            limit=1, status="running"
        )

    def _drain(self) -> None:
        from tests.soak.soak_agent import PROJECTION

        with self.control() as store:
            runs = [r for ids in self.emitted.values() for r in ids]

            def finished() -> bool:
                self._check_children()
                return self._all_finished(store)

            _wait(finished, 180, f"the {len(runs)} runs to finish")

            def projection_caught_up() -> bool:
                position = store.projection_status(PROJECTION).position
                return not store.events(after_seq=position, limit=1)

            _wait(projection_caught_up, 60, "the projection to reach the end of the log")

    def _stop_all(self) -> None:
        for child in [*self.workers, *self.servers]:
            if child is not None:
                child.stop()

    # -- the audit -----------------------------------------------------------------

    def executions(self) -> dict[tuple[str, str], list[tuple[int, str, float]]]:
        """(run id, step id) -> [(pid, nonce, start time)], from every process's log.

        A line that is not whole is ignored only where ``kill -9`` can leave one: as the
        last line of a process that was killed. Anywhere else it is a problem.
        """
        found: dict[tuple[str, str], list[tuple[int, str, float]]] = defaultdict(list)
        for path in sorted(self.exec_dir.glob("exec-*.log")):
            owner = int(path.stem.removeprefix("exec-"))
            lines = path.read_bytes().split(b"\n")
            for n, line in enumerate(lines):
                parts = line.decode(errors="replace").split(" ")
                if len(parts) != 7 or parts[0] != "X" or parts[6] != ".":
                    if not line:
                        continue
                    self.report.torn_lines += 1
                    if owner not in self.killed_pids:
                        self.report.problem(
                            f"{path.name}: a torn line from process {owner}, which was never "
                            f"killed: {line[:80]!r}"
                        )
                    elif n != len(lines) - 1:
                        self.report.problem(
                            f"{path.name}: a torn line before the end of the log: {line[:80]!r}"
                        )
                    continue
                _, run_id, step_id, pid, nonce, started, _ = parts
                if int(pid) != owner:
                    self.report.problem(f"{path.name}: a line of process {pid}: {line[:80]!r}")
                found[(run_id, step_id)].append((int(pid), nonce, float(started)))
        return found

    def audit(self) -> None:
        from ironflow._agent._memory import ProjectionDefinition, fold_events
        from ironflow.store import LmdbStore
        from tests.soak import soak_agent

        r = self.report
        store = LmdbStore(self.data_dir) if self.store == "lmdb" else self.control()
        try:
            self._audit(store, r, soak_agent, ProjectionDefinition, fold_events)
        finally:
            store.close()
        r.data_mb = self._data_size() / 1e6

    def _data_size(self) -> int:
        if self.store == "lmdb":
            data = self.data_dir / "data.mdb"
            return data.stat().st_size if data.exists() else 0
        import psycopg

        with psycopg.connect(self.store_url) as conn:
            row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
        return int(row[0]) if row else 0

    def _audit(self, store: Any, r: Report, agent: Any, definition: Any, fold_events: Any) -> None:
        runs = store.list_runs(limit=2**31)
        r.events = len(self.emitted)
        r.runs = len(runs)
        by_event: dict[str, list[Any]] = defaultdict(list)
        for run in runs:
            by_event[run.event.id].append(run)
        for event_id, answered in self.emitted.items():
            made = by_event.get(event_id, [])
            if not made:
                r.lost_runs += 1
                r.problem(f"event {event_id} has no run")
            elif len(made) > 1:
                r.duplicate_runs += len(made) - 1
                r.problem(f"event {event_id} has {len(made)} runs")
            elif tuple(run.id for run in made) != answered:
                r.problem(f"event {event_id}: emit answered {answered}, the store has {made[0].id}")
        for event_id in set(by_event) - set(self.emitted):
            r.duplicate_runs += len(by_event[event_id])
            r.problem(f"runs {[x.id for x in by_event[event_id]]} for an event never emitted")

        execs = self.executions()
        expected = list(agent.STEP_IDS)
        run_ids = set()
        for run in runs:
            run_ids.add(run.id)
            if run.status == "completed":
                r.completed += 1
            else:
                r.problem(f"run {run.id} ended {run.status}: {run.error}")
            r.runs_resumed += run.attempt > 1
            steps = store.get_steps(run.id)
            r.steps_recorded += len(steps)
            ids = [s.id for s in steps]
            positions = [s.position for s in steps]
            if positions != list(range(len(steps))) or len(set(positions)) != len(positions):
                r.problem(f"run {run.id}: step positions {positions}")
            if ids != expected:
                missing = Counter(expected) - Counter(ids)
                extra = Counter(ids) - Counter(expected)
                r.lost_steps += sum(missing.values())
                r.duplicate_steps += sum(extra.values())
                r.problem(f"run {run.id}: steps {ids}, expected {expected}")
            for step in steps:
                if step.id in agent.TOOL_STEPS:
                    self._audit_step(r, run.id, step, execs.pop((run.id, step.id), []))
        for (run_id, step_id), stray in execs.items():
            r.tool_executions += len(stray)
            r.problem(f"{len(stray)} execution(s) of {run_id} {step_id}, which has no record")

        events = []
        version = 1
        while True:
            batch = store.read_stream(agent.STREAM, from_version=version, limit=1000)
            events += batch
            if len(batch) < 1000:
                break
            version = batch[-1].version + 1
        r.stream_events = len(events)
        versions = [e.version for e in events]
        if versions != list(range(1, len(events) + 1)):
            gaps = sorted(set(range(1, max(versions, default=0) + 1)) - set(versions))
            r.problem(
                f"stream {agent.STREAM}: versions not 1..{len(events)} without a gap "
                f"(missing {gaps[:5]}, {len(versions) - len(set(versions))} repeated)"
            )
        per_run = Counter(str(e.data["run"]) for e in events)
        r.lost_stream_events = len(run_ids - set(per_run))
        r.duplicate_stream_events = sum(c - 1 for c in per_run.values()) + len(
            set(per_run) - run_ids
        )
        if r.lost_stream_events or r.duplicate_stream_events:
            r.problem(
                f"stream {agent.STREAM}: {r.lost_stream_events} runs without their event, "
                f"{r.duplicate_stream_events} events too many"
            )

        defn = definition.must_from_fn(agent.soak_count)
        fresh = fold_events(defn, events, {})
        stored = store.get_projection(agent.PROJECTION).state
        if stored != fresh:
            keys = set(stored) | set(fresh)
            r.projection_mismatches = sum(stored.get(k) != fresh.get(k) for k in keys)
            r.problem(
                f"projection {agent.PROJECTION} differs from a fresh fold of the stream in "
                f"{r.projection_mismatches} partition(s)"
            )
        counts = Counter(int(v["count"]) for v in stored.values())
        if set(counts) - {1}:
            r.problem(f"projection {agent.PROJECTION}: counts per run {dict(counts)}, not all 1")
        # Counted apart from the stream, which a fault could have thinned out as well:
        # every run, and nothing else, has its partition.
        missing, unknown = run_ids - set(stored), set(stored) - run_ids
        r.missing_partitions = len(missing)
        if missing:
            r.problem(
                f"projection {agent.PROJECTION}: {len(missing)} run(s) without a partition, "
                f"e.g. {sorted(missing)[:3]}"
            )
        if unknown:
            r.problem(
                f"projection {agent.PROJECTION}: partitions for {len(unknown)} unknown run(s), "
                f"e.g. {sorted(unknown)[:3]}"
            )
        try:
            store.check_valid()
        except AssertionError as exc:
            r.problem(f"the store's consistency check failed: {exc}")

    def _audit_step(
        self, r: Report, run_id: str, step: Any, found: list[tuple[int, str, float]]
    ) -> None:
        r.tool_executions += len(found)
        if len(found) > 1:
            r.steps_reexecuted += 1
            r.extra_executions += len(found) - 1
        where = f"{run_id} {step.id}"
        recorded = step.output.get("exec", {}) if isinstance(step.output, dict) else {}
        mine = [e for e in found if e[1] == recorded.get("nonce")]
        if len(mine) != 1:
            r.problem(f"{where}: the recorded output came from no logged execution")
            return
        pids = [pid for pid, _, _ in found]
        if len(set(pids)) != len(pids):
            r.problem(f"{where}: one process executed it more than once ({pids})")
        for pid, nonce, started in found:
            if nonce == mine[0][1]:
                continue
            if pid not in self.killed_pids:
                r.problem(f"{where}: executed again by process {pid}, which was never killed")
            if started > step.ended_at:
                r.problem(f"{where}: executed at {started:.6f}, after it was recorded")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.soak",
        description="kill -9 workers (and, in server mode, the servers) under load, then "
        "audit that no run, step or memory event was lost or duplicated. On PostgreSQL "
        "(--store postgres): two servers, three workers, PostgreSQL itself stopped "
        "immediate and restarted once.",
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=float(os.environ.get("SOAK_SECONDS", "300")),
        help="how long to keep killing (default $SOAK_SECONDS, else 300)",
    )
    parser.add_argument(
        "--mode",
        choices=("workers", "server"),
        default="workers",
        help="kill workers only, or workers and the servers (default workers)",
    )
    parser.add_argument(
        "--store",
        choices=STORES,
        default=os.environ.get("SOAK_STORE") or "lmdb",
        help="lmdb: one server on a data directory; postgres: an embedded PostgreSQL, two "
        "servers, a worker through each and one straight to the database "
        "(default $SOAK_STORE, else lmdb)",
    )
    parser.add_argument(
        "--runs",
        type=int,
        default=None,
        help="emit this many runs and kill until they all finished (--seconds bounds it)",
    )
    parser.add_argument(
        "--pg-restarts",
        type=int,
        default=1,
        help="on PostgreSQL, how often to stop it immediate and start it again (default 1)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="worker processes (default 2 on LMDB, 3 on PostgreSQL)",
    )
    parser.add_argument("--concurrency", type=int, default=4, help="runs per worker (default 4)")
    parser.add_argument("--seed", type=int, default=None, help="seed the kill schedule")
    parser.add_argument("--json", metavar="FILE", help="also write the figures to FILE as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the data and logs directory")
    args = parser.parse_args(argv)
    soak = Soak(
        seconds=args.seconds,
        mode=args.mode,
        store=args.store,
        runs=args.runs,
        pg_restarts=args.pg_restarts,
        workers=args.workers,
        concurrency=args.concurrency,
        seed=args.seed,
        log=lambda text: print(text, flush=True),
    )
    report = soak.run()
    print(report.text(), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(report.figures(), indent=2) + "\n")
    if args.keep or report.problems:
        print(f"data and logs kept in {soak.root}", flush=True)
    else:
        import shutil

        shutil.rmtree(soak.root, ignore_errors=True)
    return 0 if not report.problems else 1

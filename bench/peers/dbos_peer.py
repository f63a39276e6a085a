"""DBOS Transact peer: durable workflows on DBOS's default SQLite system database, and
on PostgreSQL, its production backend (``pg=True``: a fresh database on the bench's
embedded server, ``bench._pg``).

DBOS is used as shipped: its SQLite system database keeps SQLite's defaults
(rollback journal, ``synchronous=FULL``), so every step record is fsynced
before the workflow moves on; on PostgreSQL it keeps the server's
``synchronous_commit = on`` (checked on DBOS's own connection). Each workload builds a
fresh DBOS instance on a fresh database and destroys it afterwards, because DBOS is a
process-wide singleton.
"""

from __future__ import annotations

import os
import queue
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

from dbos import DBOS, DBOSConfig

_CHILD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_dbos_resume_child.py")


# Decorators register into DBOS's global registry at import time, which
# survives DBOS.destroy(), so one definition serves every workload.
@DBOS.step()
def _noop_step(i: int) -> dict[str, int]:
    return {"step": i, "ok": 1}


@DBOS.workflow()
def _three_step_wf(x: int) -> dict[str, int]:
    a = _noop_step(1)
    b = _noop_step(2)
    c = _noop_step(3)
    return {"x": x, "sum": a["step"] + b["step"] + c["step"]}


@DBOS.workflow()
def _k_step_wf(k: int) -> int:
    for i in range(k):
        _noop_step(i)
    return k


def _config(database_url: str) -> DBOSConfig:
    return {
        "name": "ironflow-bench-dbos",
        "system_database_url": database_url,
        "log_level": "WARNING",
    }


@contextmanager
def _dbos(workdir: str, pg: bool = False) -> Iterator[DBOS]:
    os.makedirs(workdir, exist_ok=True)
    # A fresh directory (or database) per workload, so no run sees another's history.
    if pg:
        from bench._pg import fresh_database

        url = fresh_database("dbos")
    else:
        fresh = tempfile.mkdtemp(prefix="dbos-", dir=workdir)
        url = f"sqlite:///{os.path.join(fresh, 'dbos.sqlite')}"
    instance = DBOS(config=_config(url))
    DBOS.launch()
    try:
        yield instance
    finally:
        DBOS.destroy()


def sqlite_synchronous(workdir: str) -> int:
    """The synchronous pragma of DBOS's own connections to its system database (2 = FULL).

    Read from the engine DBOS writes its step records through: DBOS sets no pragma of
    its own there, so this is SQLite's compiled default, which the comparison relies on.
    (``_sys_db`` is DBOS's, not public: there is no public way to that engine.)
    """
    with _dbos(workdir) as instance, instance._sys_db.engine.connect() as conn:
        return int(conn.exec_driver_sql("PRAGMA synchronous").scalar_one())


def pg_synchronous_commit(workdir: str) -> str:
    """``synchronous_commit`` on DBOS's own connection to its PostgreSQL system database."""
    with _dbos(workdir, pg=True) as instance, instance._sys_db.engine.connect() as conn:
        return str(conn.exec_driver_sql("SHOW synchronous_commit").scalar_one())


def three_step_runs_per_s(workdir: str, n_runs: int, pg: bool = False) -> float:
    """Sequential throughput of a 3-step workflow (direct call), in runs/s.

    One untimed warm-up run is done first so lazy initialisation is excluded.
    """
    with _dbos(workdir, pg):
        _three_step_wf(-1)
        t0 = time.perf_counter()
        for i in range(n_runs):
            _three_step_wf(i)
        dt = time.perf_counter() - t0
    return n_runs / dt


def per_step_us(workdir: str, steps: int = 100, reps: int = 5, pg: bool = False) -> float:
    """Marginal cost of one durable step, in µs: median of (t_steps - t_1)/(steps - 1).

    Differencing against a 1-step workflow cancels the fixed per-workflow
    cost (status insert and final update).
    """
    samples: list[float] = []
    with _dbos(workdir, pg):
        _k_step_wf(1)
        for _ in range(reps):
            t0 = time.perf_counter()
            _k_step_wf(steps)
            t_many = time.perf_counter() - t0
            t0 = time.perf_counter()
            _k_step_wf(1)
            t_one = time.perf_counter() - t0
            samples.append((t_many - t_one) / (steps - 1) * 1e6)
    return statistics.median(samples)


def concurrent_steps_per_s(workdir: str, runs: int = 16) -> float:
    """Total step throughput with `runs` 3-step workflows started at once, in steps/s.

    DBOS.start_workflow runs each on DBOS's own executor threads; SQLite
    serialises the writers, so this shows how the store copes with contention.
    """
    with _dbos(workdir):
        _three_step_wf(-1)
        t0 = time.perf_counter()
        handles = [DBOS.start_workflow(_three_step_wf, i) for i in range(runs)]
        for h in handles:
            h.get_result()
        dt = time.perf_counter() - t0
    return runs * 3 / dt


def _line_reader(stream: IO[str], out: queue.Queue[str | None]) -> None:
    for line in stream:
        out.put(line)
    out.put(None)


def _wait_for(lines: queue.Queue[str | None], prefix: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"child did not print {prefix!r} within {timeout}s")
        try:
            line = lines.get(timeout=left)
        except queue.Empty:
            continue
        if line is None:
            raise RuntimeError(f"child exited before printing {prefix!r}")
        if line.startswith(prefix):
            return line.strip()


def _spawn(mode: str, db_path: str) -> tuple[subprocess.Popen[str], queue.Queue[str | None]]:
    proc = subprocess.Popen(
        [sys.executable, _CHILD, mode, db_path],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    lines: queue.Queue[str | None] = queue.Queue()
    assert proc.stdout is not None
    threading.Thread(target=_line_reader, args=(proc.stdout, lines), daemon=True).start()
    return proc, lines


def _kill(proc: subprocess.Popen[str] | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)


def resume_after_kill_s(workdir: str, timeout: float = 45.0) -> float:
    """Seconds from launching a fresh process to the first re-executed step after kill -9.

    A child runs a 3-step workflow and is SIGKILLed while step 2 sleeps (step 1
    already recorded). The clock starts just before a second process is
    spawned, so interpreter start, imports, DBOS launch and DBOS's own
    recovery path (re-enqueue + queue poll) are all included.
    """
    os.makedirs(workdir, exist_ok=True)
    db_path = os.path.join(tempfile.mkdtemp(prefix="dbos-resume-", dir=workdir), "dbos.sqlite")
    first: subprocess.Popen[str] | None = None
    second: subprocess.Popen[str] | None = None
    try:
        first, lines1 = _spawn("crash", db_path)
        _wait_for(lines1, "STEP2_BEGIN", timeout)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)

        t0 = time.time()
        second, lines2 = _spawn("recover", db_path)
        resumed = _wait_for(lines2, "RESUMED", timeout)
        elapsed = float(resumed.split()[1]) - t0
        # Step 1 must come from the log, not re-run; step 3 must still follow.
        done = _wait_for(lines2, "DONE", timeout)
        if "step1_reran=0" not in done:
            raise RuntimeError(f"step 1 was re-executed on recovery: {done}")
        second.wait(timeout=timeout)
        return elapsed
    finally:
        _kill(first)
        _kill(second)


_QUEUE = "ironflow-bench-latency"


#: Each enqueued run waits for the queue's next poll, about a second: 100 runs a
#: repetition made this one row 9 of ``make bench``'s 18 minutes. Its samples barely
#: vary (the poll's phase), so 10 give the median; their p99 is their slowest.
EMIT_RUNS_AT_MOST = 10


def emit_to_done_ms(workdir: str, runs: int) -> dict[str, float]:
    """Enqueue a 3-step workflow on a DBOS queue and wait for its result, in ms.

    DBOS's own way to hand work to a worker: its queue, served by the launched
    process's queue thread at DBOS's default polling interval (1 s). A short idle pause
    precedes each run, as for Ironflow's row; median and p99 of ``runs`` (one warm-up),
    at most :data:`EMIT_RUNS_AT_MOST`.
    """
    runs = min(runs, EMIT_RUNS_AT_MOST)
    out = []
    with _dbos(workdir):
        queue = DBOS.retrieve_queue(_QUEUE) or DBOS.register_queue(_QUEUE)
        for i in range(runs + 1):
            time.sleep(0.02)
            t0 = time.perf_counter()
            queue.enqueue(_three_step_wf, i).get_result()
            if i:
                out.append((time.perf_counter() - t0) * 1e3)
    return _percentiles(out)


def _percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return {"value": statistics.median(ordered), "p99": p99}

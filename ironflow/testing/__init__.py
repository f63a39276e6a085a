"""Helpers for testing crash safety: simulate a worker dying at any step boundary.

A real crash has two halves, and each helper stands for one of them:

- :class:`CrashingStore` wraps a :class:`~ironflow.store.Store` and raises
  :class:`SimulatedCrash` at a chosen boundary, before or after the inner store runs a
  call (``record_step`` for one step position, ``finish_run``, ``lease_runs``, ...).
  Once it has crashed, every later call through it raises too: a dead process writes
  nothing more, even from threads that were still running.
- :class:`StandInWorker` lends a simulated worker the pid of a real, idle process.
  Leases name their holder's pid, and a store resumes a run at once when that pid is
  dead on this host; killing the stand-in is what makes the crash look real to the
  next worker, without waiting for the lease TTL.

::

    inner = LmdbStore(path)
    store = CrashingStore(inner, Fault("record_step", "after", position=1))
    with StandInWorker() as process:
        worker = Worker([my_agent], store=store)
        worker.info = process.info
        worker.run(until_idle=True)        # the run "dies" right after step 1 is recorded
    Worker([my_agent], store=inner).run(until_idle=True)   # resumes at step 2, at once

Import this module as ``ironflow.testing``; it is not re-exported by ``ironflow``.
"""

from __future__ import annotations

import functools
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Any, Literal, NoReturn, TypeVar

import attrs

from ironflow._pure._ids import new_id
from ironflow._worker._identity import this_worker
from ironflow.errors import ConfigError
from ironflow.store import (
    AgentSpec,
    EmitResult,
    ErrorInfo,
    Lease,
    LeasedRun,
    Run,
    StepAck,
    StepRecord,
    Store,
    SuspendResult,
    Suspension,
    TraceContext,
    WorkerInfo,
)
from ironflow.store._liveness import pid_start
from ironflow.store._memory import MemoryStore

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ironflow._worker._replayer import ReplayReport
    from ironflow.replay._engine import Outcome
    from ironflow.store._history import History

__all__ = [
    "Boundary",
    "CrashCase",
    "CrashReport",
    "CrashingStore",
    "Driver",
    "FakeClock",
    "Fault",
    "MemoryStore",
    "SimulatedCrash",
    "StandInWorker",
    "crash_matrix",
    "replay",
    "replay_history",
    "run_once",
]

T = TypeVar("T")


class SimulatedCrash(BaseException):
    """The simulated death of a worker process at a boundary a test chose.

    A ``BaseException``, like the engine's own control flow, so neither a tool's
    ``except Exception:`` nor the engine's step-failure handling can catch it and
    record it as an ordinary failure: it unwinds the handler and the worker's code
    the way ``kill -9`` would stop them, leaving the store exactly as it was.
    """


@attrs.frozen
class Fault:
    """Where a :class:`CrashingStore` crashes: one call of one store method.

    ``when="before"`` crashes before the inner store sees the call (nothing written);
    ``when="after"`` lets the inner store finish the call (durably written) and then
    crashes before the caller learns of it. ``position`` (for ``record_step``) and
    ``run_id`` narrow which call matches. A fault fires once.
    """

    method: str
    when: Literal["before", "after"] = "before"
    position: int | None = None
    run_id: str | None = None

    def matches(self, method: str, run_id: str | None, position: int | None) -> bool:
        """Whether a call of ``method`` on this run (and step position) triggers this fault."""
        return (
            self.method == method
            and (self.run_id is None or self.run_id == run_id)
            and (self.position is None or self.position == position)
        )


class CrashingStore:
    """A :class:`~ironflow.store.Store` that dies at the boundaries a test arms.

    Guarantees: a ``"before"`` fault leaves the inner store untouched by that call; an
    ``"after"`` fault leaves the call fully applied. After the first crash (a fault, or
    :meth:`crash_now`) every call raises :class:`SimulatedCrash` without reaching the
    inner store, from any thread. Closing the wrapper does not close the inner store,
    which outlives the "process" that crashed.
    """

    def __init__(self, inner: Store, *faults: Fault) -> None:
        self.inner = inner
        self._lock = threading.Lock()
        self._armed: list[Fault] = list(faults)
        #: The faults that fired, in order (at most one, since a crash is final).
        self.fired: list[Fault] = []
        self._crashed = False

    # -- arming and crashing ------------------------------------------------------------

    def crash_at(
        self,
        method: str,
        *,
        when: Literal["before", "after"] = "before",
        position: int | None = None,
        run_id: str | None = None,
    ) -> Fault:
        """Arm one more fault and return it."""
        fault = Fault(method, when, position, run_id)
        with self._lock:
            self._armed.append(fault)
        return fault

    @property
    def crashed(self) -> bool:
        """True once this "process" has died."""
        return self._crashed

    @property
    def armed(self) -> tuple[Fault, ...]:
        """The faults that have not fired yet."""
        with self._lock:
            return tuple(self._armed)

    def crash_now(self, where: str = "in user code") -> NoReturn:
        """Die here (a tool's body, say): raise :class:`SimulatedCrash`, and stay dead."""
        with self._lock:
            self._crashed = True
        raise SimulatedCrash(f"simulated crash {where}")

    def _call(
        self, method: str, run_id: str | None, position: int | None, fn: Callable[[], T]
    ) -> T:
        with self._lock:
            if self._crashed:
                raise SimulatedCrash(f"{method}: this simulated process has already crashed")
            fault = next((f for f in self._armed if f.matches(method, run_id, position)), None)
            if fault is not None:
                self._armed.remove(fault)
                if fault.when == "before":
                    self._die(fault)
        result = fn()
        if fault is not None:
            with self._lock:
                self._die(fault)
        return result

    def _die(self, fault: Fault) -> NoReturn:
        self._crashed = True
        self.fired.append(fault)
        where = f" at position {fault.position}" if fault.position is not None else ""
        raise SimulatedCrash(f"simulated crash {fault.when} {fault.method}{where}")

    # -- the Store protocol, each call through the fault check --------------------------

    def register_agents(self, agents: Sequence[AgentSpec]) -> None:
        self._call("register_agents", None, None, lambda: self.inner.register_agents(agents))

    def agents(self) -> list[AgentSpec]:
        return self._call("agents", None, None, self.inner.agents)

    def emit(
        self, name: str, data: Any, *, id: str | None = None, trace: TraceContext | None = None
    ) -> EmitResult:
        return self._call(
            "emit", None, None, lambda: self.inner.emit(name, data, id=id, trace=trace)
        )

    def lease_runs(
        self, worker: WorkerInfo, agents: Collection[str], *, limit: int, ttl: float
    ) -> list[LeasedRun]:
        return self._call(
            "lease_runs",
            None,
            None,
            lambda: self.inner.lease_runs(worker, agents, limit=limit, ttl=ttl),
        )

    def wait_for_work(self, timeout: float) -> None:
        self._call("wait_for_work", None, None, lambda: self.inner.wait_for_work(timeout))

    def heartbeat(self, worker: WorkerInfo, run_ids: Collection[str], *, ttl: float) -> set[str]:
        return self._call(
            "heartbeat", None, None, lambda: self.inner.heartbeat(worker, run_ids, ttl=ttl)
        )

    def record_step(self, worker: WorkerInfo, step: StepRecord) -> StepAck:
        return self._call(
            "record_step", step.run_id, step.position, lambda: self.inner.record_step(worker, step)
        )

    def finish_run(
        self,
        worker: WorkerInfo,
        run_id: str,
        *,
        status: str,
        output: Any = None,
        error: ErrorInfo | None = None,
        attempt: int,
    ) -> Run:
        return self._call(
            "finish_run",
            run_id,
            None,
            lambda: self.inner.finish_run(
                worker, run_id, status=status, output=output, error=error, attempt=attempt
            ),
        )

    def finish_and_lease(
        self,
        worker: WorkerInfo,
        run_id: str,
        *,
        status: str,
        output: Any = None,
        error: ErrorInfo | None = None,
        attempt: int,
        agents: Collection[str],
        limit: int,
        ttl: float,
    ) -> list[LeasedRun]:
        # A finish like finish_run's: a fault armed at finish_run fires here too.
        return self._call(
            "finish_run",
            run_id,
            None,
            lambda: self.inner.finish_and_lease(
                worker,
                run_id,
                status=status,
                output=output,
                error=error,
                attempt=attempt,
                agents=agents,
                limit=limit,
                ttl=ttl,
            ),
        )

    def release_run(self, worker: WorkerInfo, run_id: str, *, attempt: int) -> None:
        self._call(
            "release_run",
            run_id,
            None,
            lambda: self.inner.release_run(worker, run_id, attempt=attempt),
        )

    def get_run(self, run_id: str) -> Run:
        return self._call("get_run", run_id, None, lambda: self.inner.get_run(run_id))

    def get_steps(self, run_id: str) -> list[StepRecord]:
        return self._call("get_steps", run_id, None, lambda: self.inner.get_steps(run_id))

    def get_lease(self, run_id: str) -> Lease | None:
        return self._call("get_lease", run_id, None, lambda: self.inner.get_lease(run_id))

    def list_runs(
        self, *, limit: int = 20, status: str | None = None, agent: str | None = None
    ) -> list[Run]:
        return self._call(
            "list_runs",
            None,
            None,
            lambda: self.inner.list_runs(limit=limit, status=status, agent=agent),
        )

    def request_cancel(self, run_id: str) -> Run:
        return self._call("request_cancel", run_id, None, lambda: self.inner.request_cancel(run_id))

    def suspend_run(
        self, worker: WorkerInfo, run_id: str, suspension: Suspension, *, attempt: int
    ) -> SuspendResult:
        return self._call(
            "suspend_run",
            run_id,
            suspension.position,
            lambda: self.inner.suspend_run(worker, run_id, suspension, attempt=attempt),
        )

    def spawn_run(
        self,
        worker: WorkerInfo,
        parent_id: str,
        step_id: str,
        agent: str,
        data: Any,
        *,
        attempt: int,
        trace: TraceContext | None = None,
    ) -> Run:
        return self._call(
            "spawn_run",
            parent_id,
            None,
            lambda: self.inner.spawn_run(
                worker, parent_id, step_id, agent, data, attempt=attempt, trace=trace
            ),
        )

    def close(self) -> None:
        """Does nothing: the inner store belongs to the test, not to the dead process."""

    def __getattr__(self, name: str) -> Any:
        # Store methods added after this wrapper was written still go through the check.
        if name.startswith("_"):
            raise AttributeError(name)
        attr = getattr(self.inner, name)
        if not callable(attr):
            return attr

        @functools.wraps(attr)
        def call(*args: Any, **kwargs: Any) -> Any:
            return self._call(name, None, None, lambda: attr(*args, **kwargs))

        return call

    def __repr__(self) -> str:
        state = "crashed" if self._crashed else f"{len(self._armed)} fault(s) armed"
        return f"<CrashingStore {state} over {self.inner!r}>"


class FakeClock:
    """A clock that moves only when told: give it to ``LmdbStore(path, clock=...)``.

    Durable timers (sleeps, wait timeouts, retry backoff) follow the store's clock, so
    ``clock.advance("7d")`` ends a seven-day sleep at the next lease, in a test that
    takes milliseconds. Leases keep the real clock. Thread-safe.
    """

    def __init__(self, start: float | None = None) -> None:
        self._lock = threading.Lock()
        self._now = time.time() if start is None else float(start)

    def __call__(self) -> float:
        with self._lock:
            return self._now

    def advance(self, duration: Any) -> float:
        """Move the clock forward by ``duration`` (seconds, or ``"5m"``); return the time."""
        from ironflow._pure._durations import parse_duration

        seconds = parse_duration(duration, "FakeClock.advance")
        with self._lock:
            self._now += seconds
            return self._now

    def __repr__(self) -> str:
        return f"<FakeClock at {self():.3f}>"


class StandInWorker:
    """A real idle process whose pid a simulated worker holds its leases under.

    While the stand-in lives, its leases are respected like any live worker's; after
    :meth:`kill` the store sees a dead holder on this host and hands the run to the next
    worker at once, just as after ``kill -9`` of a real worker. The process is killed
    and reaped on :meth:`kill` or on leaving the ``with`` block.
    """

    def __init__(self, worker_id: str | None = None) -> None:
        sleep = shutil.which("sleep")
        argv = (
            [sleep, "86400"] if sleep else [sys.executable, "-c", "import time; time.sleep(86400)"]
        )
        self._process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        pid = self._process.pid
        #: The lease holder to give the worker: this process's host, pid and start time.
        self.info = WorkerInfo(
            id=worker_id or f"stand-in:{pid}:{new_id()[-6:]}",
            host=socket.gethostname(),
            pid=pid,
            # Read while the process is alive, as a real worker does at start-up.
            pid_start=pid_start(pid),
        )

    @property
    def alive(self) -> bool:
        """True until :meth:`kill`."""
        return self._process.poll() is None

    def kill(self) -> None:
        """SIGKILL the stand-in and reap it, so its pid is gone from this host. Idempotent."""
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGKILL)
        self._process.wait()

    def __enter__(self) -> StandInWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()

    def __repr__(self) -> str:
        return f"<StandInWorker pid={self.info.pid} {'alive' if self.alive else 'dead'}>"


def run_once(store: Store, agent: Callable[..., Any], data: Any = None, **worker_kw: Any) -> Run:
    """Emit the agent's first trigger with ``data`` and serve until no run is left.

    Returns the run as the store holds it afterwards: a test's one-liner for "run this
    agent to its end". ``worker_kw`` goes to :class:`~ironflow.Worker`.
    """
    from ironflow._agent._dsl import AgentDefinition
    from ironflow._worker._worker import Worker

    defn = AgentDefinition.must_from_fn(agent)
    worker = Worker([agent], store=store, **worker_kw)
    result = store.emit(defn.triggers[0], {} if data is None else data)
    worker.run(until_idle=True, ready_message=False)
    return store.get_run(result.run_ids[0])


def replay_history(
    history: str | os.PathLike[str] | History,
    agent: Callable[..., Any],
    *,
    agents: Iterable[Callable[..., Any]] = (),
) -> ReplayReport:
    """Replay a recorded history (a file from ``ironflow run export``) against ``agent``
    as its code is now, without running a tool or writing anything.

    Returns the report when the code fits. Raises
    :class:`~ironflow.NonDeterminismError` at the first step that does not fit (its
    ``inputs`` hold both inputs), and :class:`AssertionError` when every step fits but
    the run ends differently (another output, a failure). Child runs are replayed too
    when their agent is in ``agents``::

        def test_old_runs_still_replay():
            replay_history("tests/golden/doc-2.json", doc_processor)
    """
    from ironflow._agent._dsl import AgentDefinition
    from ironflow._worker._replayer import replay_history_of
    from ironflow.store._history import History, load_history

    loaded = history if isinstance(history, History) else load_history(history)
    defn = AgentDefinition.must_from_fn(agent)
    if defn.id != loaded.run.agent:
        raise ConfigError(
            f"replay_history: the history is a run of agent {loaded.run.agent!r}, not of "
            f"{defn.id!r}"
        )
    others = [AgentDefinition.must_from_fn(a) for a in agents]
    report = replay_history_of(loaded, [defn, *others])
    bad = report.first_misfit
    if bad is not None:
        if bad.divergence is not None:
            raise bad.divergence
        raise AssertionError(f"run {bad.history.run.id}: {bad.problem}")
    return report


def replay(store: Store, run_id: str, agent: Callable[..., Any]) -> Outcome:
    """Re-execute a run's handler, as ``agent``'s code is now, against the run's record.

    The replayer of a golden history: a recorded run whose code still fits completes
    with the same output and executes nothing; code that no longer fits fails with
    :class:`~ironflow.NonDeterminismError`. Nothing is written unless the handler goes
    past the record. Works for ``def`` and ``async def`` agents.
    """
    import asyncio

    from ironflow._agent._context import AgentContext
    from ironflow._agent._dsl import AgentDefinition
    from ironflow.replay._engine import Execution

    defn = AgentDefinition.must_from_fn(agent)
    me = this_worker()
    run = store.get_run(run_id)
    leased = LeasedRun(run, tuple(store.get_steps(run_id)), Lease(run_id, me, 0.0))
    execution = Execution(store, me, leased, is_async=defn.is_async)
    ctx = AgentContext(execution, defn)
    if defn.is_async:
        return asyncio.run(execution.execute_async(lambda: defn.fn(ctx)))
    return execution.execute(lambda: defn.fn(ctx))


# Built on the helpers above, so imported after them.
from ironflow.testing._driver import Driver  # noqa: E402
from ironflow.testing._matrix import Boundary, CrashCase, CrashReport, crash_matrix  # noqa: E402

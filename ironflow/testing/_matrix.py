"""``crash_matrix``: crash an agent at every step boundary and check each resume.

The agent runs once, crash-free, to learn its boundaries: before and after each step's
record (a sleep's, wait's or approval's suspension included), around each child run's
creation, inside each memory append (the event appended, its step not recorded) and
before each run's finish, in the run and in every child run. Then, for each boundary,
a fresh store and a stand-in worker process run the agent again and die exactly there
(:class:`~ironflow.testing.CrashingStore`); the stand-in is killed and a fresh worker
resumes. The resumed run must end as the crash-free one did (status, output, the step
ids of every run, as many events on every memory stream), no step recorded before the
crash may run again, and no step may run more often than in the crash-free run except
those in flight at the crash, once more (and only the tools ``tools_may_repeat``
allows). Sleeps are skipped on a fake clock; approvals are answered by a callback.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator
from contextlib import contextmanager, suppress
from typing import Any, Literal

import attrs

from ironflow._agent._dsl import AgentDefinition
from ironflow._agent._memory import ProjectionDefinition
from ironflow.replay._engine import Execution
from ironflow.replay._observer import AttemptObserver, Observer
from ironflow.store import (
    ErrorInfo,
    Event,
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
from ironflow.testing import CrashingStore, FakeClock, MemoryStore, SimulatedCrash, StandInWorker
from ironflow.testing._driver import Approve, Driver, projections_for, served_agents

__all__ = ["Boundary", "CrashCase", "CrashReport", "crash_matrix"]

#: The role of the run the matrix starts; a child run's role names its spawn steps.
TOP = "run"
#: Steps of Ironflow's own primitives: running one again has no outside effect (the
#: store makes each idempotent, or it only reads or waits), so ``tools_may_repeat``
#: does not govern them. The names follow the primitives' step ids.
_PRIMITIVES = ("sleep", "wait.", "approve.", "spawn.", "memory.", "patch.", "now", "uuid", "random")


@attrs.frozen
class Boundary:
    """One place a worker can die: a store call of one run, before or after it lands."""

    method: str
    when: Literal["before", "after"]
    #: ``run``, or ``run > spawn.<agent>`` for a child run (nested: more ``>``).
    role: str
    step: str | None
    #: Which call of (method, role, step): a step suspends once per wait, say, but a
    #: sleep woken early suspends again.
    nth: int = 1

    def describe(self) -> str:
        """The boundary in words: ``after tool.ocr is recorded``."""
        step = self.step
        what = {
            ("record_step", "before"): f"before {step} is recorded",
            ("record_step", "after"): f"after {step} is recorded",
            ("suspend_run", "before"): f"before {step} suspends the run",
            ("suspend_run", "after"): f"after {step} suspended the run",
            ("spawn_run", "before"): f"before {step} creates the child run",
            ("spawn_run", "after"): f"after {step} created the child run, before its record",
            ("append_to_stream", "after"): f"inside {step}: event appended, step not recorded",
            ("finish_run", "before"): "before the run's finish is written",
        }.get((self.method, self.when), f"{self.when} {self.method} of {step}")
        nth = f" (call {self.nth})" if self.nth > 1 else ""
        where = "" if self.role == TOP else f"[child {self.role.removeprefix(TOP + ' > ')}] "
        return f"{where}{what}{nth}"


@attrs.frozen
class CrashCase:
    """One boundary's crash and resume, and what was wrong with it (nothing: passed)."""

    boundary: Boundary
    problems: tuple[str, ...]
    #: Steps that ran again after the resume (they were in flight at the crash).
    reran: tuple[str, ...] = ()
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return not self.problems


@attrs.frozen
class CrashReport:
    """Every boundary's case, with the crash-free run they were compared with."""

    agent: str
    status: str
    output: Any
    cases: tuple[CrashCase, ...]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.cases)

    @property
    def failed(self) -> tuple[CrashCase, ...]:
        return tuple(c for c in self.cases if not c.passed)

    def __str__(self) -> str:
        bad = len(self.failed)
        verdict = "all survived" if not bad else f"{bad} FAILED"
        lines = [f"crash matrix of {self.agent}: {len(self.cases)} boundaries, {verdict}"]
        width = max((len(c.boundary.describe()) for c in self.cases), default=0)
        for case in self.cases:
            mark = "ok  " if case.passed else "FAIL"
            again = ", ".join(case.reran) or "nothing"
            lines.append(f"  {mark} {case.boundary.describe().ljust(width)}  ran again: {again}")
            lines.extend(f"         - {p}" for p in case.problems)
        return "\n".join(lines)


# -- the store a case runs on: logs boundaries, knows roles, dies at its target -------------


class _MatrixStore(CrashingStore):
    """A CrashingStore that names each run by its role and dies at one boundary."""

    def __init__(self, inner: Store, roles: dict[str, str], target: Boundary | None) -> None:
        super().__init__(inner)
        self.roles = roles
        self.target = target
        self.log: list[Boundary] = []
        self._counts: dict[tuple[str, str, str | None], int] = {}
        self._count_lock = threading.Lock()
        # Held from a spawn until its child's role is known: a worker woken by the spawn
        # may take the child and reach a boundary before spawn_run has returned.
        self._spawning = threading.Lock()

    def _role(self, run_id: str) -> str:
        role = self.roles.get(run_id)
        if role is None:
            with self._spawning:
                role = self.roles.get(run_id, run_id)
        return role

    def _boundary(self, method: str, run_id: str, step: str | None, fn: Callable[[], Any]) -> Any:
        role = self._role(run_id)
        with self._count_lock:
            key = (method, role, step)
            nth = self._counts.get(key, 0) + 1
            self._counts[key] = nth
            self.log.append(Boundary(method, "before", role, step, nth))
        target = self.target
        here = target is not None and (target.method, target.role, target.step, target.nth) == (
            method,
            role,
            step,
            nth,
        )
        if here and target is not None and target.when == "before":
            self.crash_now(target.describe())
        result = fn()
        if here and target is not None and target.when == "after":
            self.crash_now(target.describe())
        return result

    def record_step(self, worker: WorkerInfo, step: StepRecord) -> StepAck:
        return self._boundary(  # type: ignore[no-any-return]
            "record_step",
            step.run_id,
            step.id,
            lambda: CrashingStore.record_step(self, worker, step),
        )

    def suspend_run(
        self, worker: WorkerInfo, run_id: str, suspension: Suspension, *, attempt: int
    ) -> SuspendResult:
        return self._boundary(  # type: ignore[no-any-return]
            "suspend_run",
            run_id,
            suspension.step_id,
            lambda: CrashingStore.suspend_run(self, worker, run_id, suspension, attempt=attempt),
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

        def spawn() -> Run:
            with self._spawning:
                child = CrashingStore.spawn_run(
                    self, worker, parent_id, step_id, agent, data, attempt=attempt, trace=trace
                )
                self.roles[child.id] = f"{self.roles.get(parent_id, parent_id)} > {step_id}"
            return child

        return self._boundary("spawn_run", parent_id, step_id, spawn)  # type: ignore[no-any-return]

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
        return self._boundary(  # type: ignore[no-any-return]
            "finish_run",
            run_id,
            None,
            lambda: CrashingStore.finish_run(
                self, worker, run_id, status=status, output=output, error=error, attempt=attempt
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
        # The run's finish, as finish_run: the same boundary (a worker's run thread).
        return self._boundary(  # type: ignore[no-any-return]
            "finish_run",
            run_id,
            None,
            lambda: CrashingStore.finish_and_lease(
                self,
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

    def append_to_stream(
        self,
        stream_id: str,
        name: str,
        data: Any,
        *,
        expected_version: int | None = None,
        idempotency_key: str | None = None,
        trace: TraceContext | None = None,
    ) -> Event:
        def append() -> Event:
            return self._call(
                "append_to_stream",
                None,
                None,
                lambda: self.inner.append_to_stream(
                    stream_id,
                    name,
                    data,
                    expected_version=expected_version,
                    idempotency_key=idempotency_key,
                    trace=trace,
                ),
            )

        # ctx.memory.append keys its append by run_id/step_id: that is the boundary's step.
        if idempotency_key is None or "/" not in idempotency_key:
            return append()
        run_id, step = idempotency_key.split("/", 1)
        return self._boundary("append_to_stream", run_id, step, append)  # type: ignore[no-any-return]


# -- counting executed steps ---------------------------------------------------------------


class _Executions(Observer):
    """Counts each executed (not replayed) step by run id and step id."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()

    def attempt(self, execution: Execution, taken_from: WorkerInfo | None) -> AttemptObserver:
        counts, lock, run_id = self.counts, self._lock, execution.run_id

        class _Attempt(AttemptObserver):
            def step_started(self, step: Any, input: Any) -> Any:
                with lock:
                    key = (run_id, step.step_id)
                    counts[key] = counts.get(key, 0) + 1
                return None

        return _Attempt()

    def by_role(self, roles: dict[str, str]) -> dict[tuple[str, str], int]:
        with self._lock:
            out: dict[tuple[str, str], int] = {}
            for (run_id, step), n in self.counts.items():
                key = (roles.get(run_id, run_id), step)
                out[key] = out.get(key, 0) + n
            return out


# -- the matrix --------------------------------------------------------------------------


@attrs.frozen
class _Outcome:
    """What a run tree ended as, by role: enough to compare a case with the reference."""

    status: str
    output: Any
    steps: dict[str, list[str]]
    streams: dict[str, int]


StoreFactory = Callable[[FakeClock], Any]


@contextmanager
def _memory_store(clock: FakeClock) -> Iterator[Store]:
    """A fresh MemoryStore: every rule of the other stores, no disk (the matrix proves
    logic; ``store=`` gives it LMDB or any other)."""
    store = MemoryStore(clock=clock)
    try:
        yield store
    finally:
        store.close()


def crash_matrix(
    agent: Callable[..., Any],
    data: Any = None,
    *,
    tools_may_repeat: bool | Collection[str] = True,
    agents: Iterable[Callable[..., Any]] = (),
    projections: Iterable[Callable[..., Any]] = (),
    approve: Approve | None = None,
    same_output: Callable[[Any, Any], bool] | None = None,
    store: StoreFactory | None = None,
    timeout: float = 60.0,
) -> CrashReport:
    """Crash ``agent``'s run (started with ``data``) at every boundary and check each resume.

    Returns the :class:`CrashReport` when every boundary survives; raises
    :class:`AssertionError` with the report, naming each boundary that broke, when not.

    ``tools_may_repeat``: which steps may run a second time when they were in flight at
    the crash: True (any: Ironflow records a step once and runs it at least once), or
    step ids and tool names (``["tool.charge", "notify"]``); a step in flight that is
    not listed and runs again fails the case, naming it (key its side effects with
    ``current_step().idempotency_key``). ``agents``: agents of child runs not defined in
    ``agent``'s module (those are served anyway). ``projections``: the memory
    projections, when not defined in ``agent``'s module. ``approve`` answers each
    ``ctx.approve`` (True approves). ``same_output`` compares outputs (default ``==``:
    give one when the output holds times, uuids or child run ids). ``store`` makes a
    fresh store for each case from a :class:`FakeClock` (a context manager yielding the
    store); the default is a :class:`~ironflow.testing.MemoryStore`. ``timeout``
    bounds each run in real seconds.

    Sleeps, retry backoff and timeouts are skipped on the fake clock, so a run that
    sleeps for days takes milliseconds. Works for ``def`` and ``async def`` agents.
    """
    defn = AgentDefinition.must_from_fn(agent)
    served = served_agents(defn, agents)
    folds = projections_for(served, projections)
    factory = store or _memory_store
    equal = same_output or (lambda a, b: a == b)

    plan = _Plan(defn, data, served, folds, approve, factory, timeout, tools_may_repeat, equal)
    reference, log, ref_counts = _reference(plan)
    if reference.status not in ("completed", "failed"):
        raise AssertionError(f"the crash-free run of {defn.id} ended {reference.status}")
    cases = []
    with _quiet_crashes():
        for boundary in _boundaries(log):
            started = time.monotonic()
            problems, reran = _case(plan, boundary, reference, ref_counts)
            took = time.monotonic() - started
            cases.append(CrashCase(boundary, tuple(problems), tuple(reran), took))
    report = CrashReport(defn.id, reference.status, reference.output, tuple(cases))
    if not report.passed:
        first = report.failed[0]
        raise AssertionError(
            f"{defn.id} did not survive a crash {first.boundary.describe()}: "
            f"{first.problems[0]}\n{report}"
        )
    return report


@attrs.frozen
class _Plan:
    """What every case of one matrix shares."""

    defn: AgentDefinition
    data: Any
    served: list[AgentDefinition]
    folds: list[ProjectionDefinition]
    approve: Approve | None
    factory: StoreFactory
    timeout: float
    tools_may_repeat: bool | Collection[str]
    equal: Callable[[Any, Any], bool]

    def driver(
        self, store: Store, clock: FakeClock, executions: _Executions, info: WorkerInfo | None
    ) -> Driver:
        return Driver(
            store,
            self.served,
            projections=[p.fn for p in self.folds],
            clock=clock,
            approve=self.approve,
            timeout=self.timeout,
            observers=[executions],
            worker_info=info,
        )


class _DropSimulatedCrashes(logging.Filter):
    """Drops the workers' log lines about a crash the matrix caused on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, SimulatedCrash):
            return False
        args = record.args if isinstance(record.args, tuple) else ()
        return not any(isinstance(a, SimulatedCrash) for a in args)


_LOGGERS = (
    "ironflow.worker",
    "ironflow.projection",
    "ironflow.replay",
    "ironflow.observe",
    # An async run's step that died with the store leaves a future nobody awaits.
    "asyncio",
)


@contextmanager
def _quiet_crashes() -> Iterator[None]:
    """While the matrix runs, a SimulatedCrash that ends a worker's thread (a projection
    runner, say) is what the matrix asked for: not an unhandled exception to report."""
    previous = threading.excepthook

    def hook(args: threading.ExceptHookArgs) -> None:
        if args.exc_type is not None and issubclass(args.exc_type, SimulatedCrash):
            return
        previous(args)

    drop = _DropSimulatedCrashes()
    threading.excepthook = hook
    for name in _LOGGERS:
        logging.getLogger(name).addFilter(drop)
    try:
        yield
    finally:
        gc.collect()  # the futures of dead async steps say so when collected: now
        threading.excepthook = previous
        for name in _LOGGERS:
            logging.getLogger(name).removeFilter(drop)


def _reference(plan: _Plan) -> tuple[_Outcome, list[Boundary], dict[tuple[str, str], int]]:
    """The crash-free run: how it ends, its boundaries in order, its executions."""
    clock = FakeClock()
    with plan.factory(clock) as inner:
        roles: dict[str, str] = {}
        store = _MatrixStore(inner, roles, None)
        executions = _Executions()
        driver = plan.driver(store, clock, executions, None)
        run_id = driver.start(plan.defn.fn, plan.data)
        roles[run_id] = TOP
        driver.drive(run_id)
        return _outcome(inner, roles, run_id), list(store.log), executions.by_role(roles)


#: Where around each kind of store call a crash is worth trying.
_WHENS: dict[str, tuple[Literal["before", "after"], ...]] = {
    "record_step": ("before", "after"),
    "suspend_run": ("before", "after"),
    "spawn_run": ("before", "after"),
    # Inside ctx.memory.append: the event is on the stream, the step not recorded yet.
    "append_to_stream": ("after",),
    "finish_run": ("before",),
}


def _boundaries(log: list[Boundary]) -> list[Boundary]:
    """Each logged call as the boundaries worth crashing at, in order, once each."""
    out: list[Boundary] = []
    seen: set[Boundary] = set()
    for call in log:
        whens = _WHENS.get(call.method, ())
        for when in whens:
            boundary = attrs.evolve(call, when=when)
            if boundary not in seen:
                seen.add(boundary)
                out.append(boundary)
    return out


def _outcome(store: Store, roles: dict[str, str], run_id: str) -> _Outcome:
    run = store.get_run(run_id)
    steps = {role: [s.id for s in store.get_steps(rid)] for rid, role in roles.items()}
    streams: dict[str, int] = {}
    for rid in roles:
        for step in store.get_steps(rid):
            out = step.output
            if step.id.split("#", 1)[0] == "memory.append" and isinstance(out, dict):
                stream = out.get("stream")
                if isinstance(stream, str) and stream not in streams:
                    streams[stream] = len(store.read_stream(stream, limit=100_000))
    return _Outcome(
        run.status, run.output if run.status == "completed" else _err(run), steps, streams
    )


def _err(run: Run) -> Any:
    return None if run.error is None else f"{run.error.type}: {run.error.message}"


def _case(
    plan: _Plan,
    boundary: Boundary,
    reference: _Outcome,
    ref_counts: dict[tuple[str, str], int],
) -> tuple[list[str], list[str]]:
    """Run to the boundary, die there, resume on a fresh worker; what went wrong."""
    clock = FakeClock()
    problems: list[str] = []
    with plan.factory(clock) as inner:
        roles: dict[str, str] = {}
        dying = _MatrixStore(inner, roles, boundary)
        before = _Executions()
        with StandInWorker() as process:
            driver = plan.driver(dying, clock, before, process.info)
            run_id = driver.start(plan.defn.fn, plan.data)
            roles[run_id] = TOP
            with suppress(SimulatedCrash):
                driver.drive(run_id)
            if not dying.crashed:
                ended = _ended(inner, run_id)
                return [
                    f"the run ended {ended} without reaching this boundary: it took another "
                    "path than without a crash (does it branch on something that is not a "
                    "step?)"
                ], []
            process.kill()
            # What the store holds at the moment of death: these steps must never run again.
            recorded = {
                (role, s.id) for rid, role in list(roles.items()) for s in inner.get_steps(rid)
            }
        after = _Executions()
        resume = plan.driver(_MatrixStore(inner, roles, None), clock, after, None)
        try:
            resume.drive(run_id)
        except AssertionError as exc:
            return [f"the resumed run did not finish: {exc}"], []
        outcome = _outcome(inner, roles, run_id)
    ran_before = before.by_role(roles)
    ran_after = after.by_role(roles)
    in_flight = {key for key in ran_before if key not in recorded}
    reran = sorted(_label(k) for k in ran_after if k in in_flight)
    if outcome.status != reference.status:
        problems.append(
            f"the run ended {outcome.status} ({_short(outcome.output)}), not "
            f"{reference.status} as without a crash"
        )
    elif not plan.equal(reference.output, outcome.output):
        problems.append(
            f"the output differs: {_short(outcome.output)} instead of {_short(reference.output)}"
        )
    for role, ids in reference.steps.items():
        got = outcome.steps.get(role)
        if got != ids:
            problems.append(f"{_who(role)} recorded the steps {got}, not {ids}")
    for stream, count in reference.streams.items():
        got_count = outcome.streams.get(stream, 0)
        if got_count != count:
            problems.append(
                f"memory stream {stream!r} holds {got_count} event(s), not {count}: an "
                "append was lost or made twice"
            )
    for key in sorted(ran_after):
        if key in recorded:
            problems.append(f"{_label(key)} ran again after the resume, though it was recorded")
    for key in sorted(set(ran_before) | set(ran_after)):
        total = ran_before.get(key, 0) + ran_after.get(key, 0)
        allowed = ref_counts.get(key, 0) + (1 if key in in_flight else 0)
        if total > allowed:
            problems.append(
                f"{_label(key)} ran {total} time(s), {total - ref_counts.get(key, 0)} more "
                "than without a crash"
            )
        elif (
            key in in_flight
            and ran_after.get(key, 0)
            and not _may_repeat(key[1], plan.tools_may_repeat)
        ):
            problems.append(
                f"{_label(key)} was in flight at the crash and ran again, and tools_may_repeat "
                "does not allow it: make its side effect idempotent (pass "
                "current_step().idempotency_key to the service), then list it in "
                "tools_may_repeat"
            )
    return problems, reran


def _ended(store: Store, run_id: str) -> str:
    run = store.get_run(run_id)
    return run.status


def _may_repeat(step_id: str, allowed: bool | Collection[str]) -> bool:
    base = step_id.split("#", 1)[0]
    if base.startswith(_PRIMITIVES):
        return True
    if isinstance(allowed, bool):
        return allowed
    return base in allowed or base.removeprefix("tool.") in allowed


def _label(key: tuple[str, str]) -> str:
    role, step = key
    return step if role == TOP else f"{step} (child {role.removeprefix(TOP + ' > ')})"


def _who(role: str) -> str:
    return "the run" if role == TOP else f"the child run {role.removeprefix(TOP + ' > ')}"


def _short(value: Any, width: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."

"""A world for crash tests: one data directory outliving a series of "worker processes".

Each attempt at a run is one incarnation of a worker, made as faithful to a real one
as a single test process allows:

- it opens its own ``LmdbStore`` on the data directory and closes it when it "dies",
  so nothing survives a crash except what reached the store;
- it holds its lease under the pid of a live :class:`StandInWorker`, killed when the
  incarnation ends, so the next incarnation can take the run over only because the
  store sees a dead holder on this host: the lease TTL is a minute, far longer than
  any test waits;
- it goes through a :class:`CrashingStore` armed with at most one fault, and the agents'
  code calls :meth:`World.boundary` before each step and :meth:`World.executed` inside
  each step body, where a "before" or "during" crash can fire. At a boundary an
  incarnation may also heartbeat (``World(heartbeats=True)``: as if the heartbeat thread
  ran just then) or begin a drain, so crashes in the heartbeat and in the drain's
  release fire at a chosen point;
- the projections it serves (``projections=``) are folded by its own runners, under its
  own identity, on the thread that waits for them (``memory.append.wait``): the
  projection write happens at a known step, where a crash can be aimed.

Side effects are counted per ``(run_id, step_id)`` in :attr:`World.executions`, which
is how the invariants tell "replayed from the record" from "executed again".

:meth:`World.race` makes an incarnation that does not die but stalls: it is paused at a
boundary (a GC pause, a frozen VM) while its lease lapses, a second incarnation takes
the run over, and then the first goes on. It must stop at its next write, having
written nothing.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import shutil
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs

from ironflow import current_step
from ironflow._agent._context import AgentContext
from ironflow._agent._dsl import AgentDefinition
from ironflow._agent._memory import ProjectionDefinition
from ironflow._worker._projections import ProjectionRunner
from ironflow.replay._engine import Execution, Outcome, current_execution
from ironflow.store import (
    AgentSpec,
    Lease,
    LmdbStore,
    PostgresStore,
    Run,
    StepRecord,
    WorkerInfo,
)
from ironflow.store._machine import StoreMachine
from ironflow.testing import CrashingStore, FakeClock, Fault, SimulatedCrash, StandInWorker
from tests.support.postgres import fresh_database, release_database

#: Long enough that no test ever waits it out: a takeover must come from the dead pid.
LEASE_TTL = 60.0
#: The lease of an incarnation that stalls (:meth:`World.race`): it lapses at once.
STALL_TTL = 0.001

#: Crash kinds a plan may pick. "before"/"during" fire in the agent's code; the rest in
#: the store: record_step before (the step ran, its record was never written) and after
#: (written, but the engine never heard back), the lease, and finishing the run.
STEP_KINDS = ("before", "during", "record_step:before", "record_step:after")
RUN_KINDS = ("lease_runs:after", "finish_run:before", "finish_run:after")
KINDS = STEP_KINDS + RUN_KINDS
#: Kinds that fire at a boundary (a call index of the agent's code, replayed or not):
#: in the code, in a heartbeat there, or in the release of a drain begun there.
BOUNDARY_KINDS = (
    "before",
    "heartbeat:before",
    "heartbeat:after",
    "release_run:before",
    "release_run:after",
)
#: Store calls made for one run (a fault is narrowed to the run under test) ...
_RUN_CALLS = ("record_step", "finish_run", "release_run", "suspend_run", "spawn_run")
#: ... and those a fault matches by step position.
_POSITIONED_CALLS = ("record_step", "suspend_run")

_current: World | None = None


def world() -> World:
    """The world the agents under test report to."""
    assert _current is not None, "an agent under test ran outside a World"
    return _current


@attrs.frozen
class Crash:
    """One armed crash: a kind from :data:`KINDS` and, for step kinds, a position."""

    kind: str
    position: int = 0

    def store_fault(self, run_id: str) -> Fault | None:
        """The fault to arm the incarnation's store with from its start, if any.

        A heartbeat fault is armed only when its boundary is reached (see
        :meth:`World.boundary`); a release fires only in a drain, begun at its boundary.
        """
        if ":" not in self.kind:
            return None
        method, when = self.kind.split(":")
        if method == "heartbeat":
            return None
        position = self.position if method in _POSITIONED_CALLS else None
        narrowed = run_id if method in _RUN_CALLS else None
        return Fault(method, when, position, narrowed)  # type: ignore[arg-type]


@attrs.frozen
class Attempt:
    """What one incarnation did: whether it crashed and which steps it executed."""

    crashed: bool
    executed: Counter[str]
    outcome: Outcome | None
    recorded_before: tuple[StepRecord, ...]
    recorded_after: tuple[StepRecord, ...]
    run: Run


@attrs.frozen
class Race:
    """What :meth:`World.race` saw: the overtaking attempt, and the stalled one after it went on.

    ``store_before``/``store_after`` are the run, its steps and its lease just before
    and just after the stalled incarnation resumed; ``executed_after`` what it executed
    once resumed.
    """

    overtaker: Attempt
    #: The crash the overtaker was armed with.
    overtaker_crash: Crash | None
    #: How many steps the stalled incarnation's lease brought: all of them means it had
    #: nothing left to record, only the run to finish.
    leased_steps: int
    outcome: Outcome | None
    error: BaseException | None
    store_before: tuple[Run, list[StepRecord], Lease | None]
    store_after: tuple[Run, list[StepRecord], Lease | None]
    executed_after: Counter[str]


@attrs.define
class _Incarnation:
    """Where one incarnation's hooks go: its store, its armed crash, its boundary count.

    ``pause`` (for :meth:`World.race`): the boundary to stall at, the event it sets when
    it got there and the one it then waits for.
    """

    store: CrashingStore | None
    armed: Crash | None
    boundaries: int = 0
    pause: tuple[Crash, threading.Event, threading.Event] | None = None
    #: Who heartbeats which run at each boundary (``World(heartbeats=True)``).
    beat: tuple[WorkerInfo, str] | None = None


class _Pumped:
    """An incarnation's store as its engine sees it when it serves projections.

    A wait for a projection first lets the incarnation's own runners catch up, on the
    waiting thread: the projection write happens inside ``memory.append.wait``, through
    the incarnation's crashing store, where a crash can be aimed at it.
    """

    def __init__(self, store: CrashingStore, runners: list[ProjectionRunner]) -> None:
        self._store = store
        self._runners = {r.name: r for r in runners}

    def wait_for_projection(self, name: str, position: int, *, timeout: float) -> int:
        runner = self._runners.get(name)
        if runner is not None:
            runner.catch_up()
        return self._store.wait_for_projection(name, position, timeout=timeout)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


class World:
    """A data directory, the incarnations that worked on it, and what they executed."""

    def __init__(
        self, path: Path | str, *, clock: FakeClock | None = None, heartbeats: bool = False
    ) -> None:
        #: A data directory, or a PostgreSQL URL (the same world on PostgresStore).
        self.path = path
        #: The stores' clock for durable timers, if the agents sleep.
        self.clock = clock
        self.heartbeats = heartbeats
        self.executions: Counter[tuple[str, str]] = Counter()
        self.crashes: Counter[str] = Counter()  # per run id
        # The incarnation the hooks report to; a stalled one (race) runs on its own thread.
        self._current = _Incarnation(None, None)
        self._by_thread: dict[int, _Incarnation] = {}
        self._incarnations = 0
        # The handle both incarnations of a race share (see store()).
        self._shared: StoreMachine | None = None

    @classmethod
    @contextmanager
    def temporary(cls, *, postgres: bool = False, **kwargs: Any) -> Iterator[World]:
        """An active world in a fresh directory (or, ``postgres``, an empty database of
        the session's PostgreSQL), removed afterwards (one per example)."""
        if postgres:
            url = fresh_database()
            try:
                with cls(url, **kwargs).active() as w:
                    yield w
            finally:
                release_database(url)
            return
        tmp = Path(tempfile.mkdtemp(prefix="ironflow-crash-"))
        try:
            with cls(tmp / "data", **kwargs).active() as w:
                yield w
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    @contextmanager
    def active(self) -> Iterator[World]:
        """Make this the world the agents under test report to."""
        global _current
        previous, _current = _current, self
        try:
            yield self
        finally:
            _current = previous

    # -- hooks the agents under test call -----------------------------------------------

    def _here(self) -> _Incarnation:
        return self._by_thread.get(threading.get_ident(), self._current)

    def boundary(self) -> None:
        """Called by an agent before each step call: where boundary kinds fire.

        A "before" crash dies here; a heartbeat crash is armed, then the heartbeat runs
        (with ``heartbeats`` on, one runs at every boundary); a release crash begins a
        drain here, so the run stops at its next unrecorded step and is released.
        """
        here = self._here()
        position = here.boundaries
        here.boundaries += 1
        armed = here.armed
        if armed is not None and armed.position == position:
            method, _, when = armed.kind.partition(":")
            if armed.kind == "before":
                self._die(here, f"before the step at position {position}")
            elif method == "heartbeat" and here.store is not None:
                here.store.crash_at("heartbeat", when=when)  # type: ignore[arg-type]
            elif method == "release_run":
                execution = current_execution()
                assert execution is not None, "World.boundary() called outside a run"
                execution.stopping.set()
        if self.heartbeats and here.beat is not None and here.store is not None:
            worker, run_id = here.beat
            here.store.heartbeat(worker, [run_id], ttl=LEASE_TTL)
        self._maybe_pause(here, Crash("before", position))

    def executed(self) -> None:
        """Called by a step's body: count the side effect, then maybe crash mid-step."""
        info = current_step()
        assert info is not None, "World.executed() called outside a step"
        here = self._here()
        self.executions[(info.run_id, info.step_id)] += 1
        if here.armed == Crash("during", info.position):
            self._die(here, f"during {info.step_id} at position {info.position}")
        self._maybe_pause(here, Crash("during", info.position))

    def _die(self, here: _Incarnation, where: str) -> None:
        assert here.store is not None
        here.store.crash_now(where)

    def _maybe_pause(self, here: _Incarnation, at: Crash) -> None:
        if here.pause is not None and here.pause[0] == at:
            _, paused, resume = here.pause
            here.pause = None
            paused.set()
            assert resume.wait(60), "the stalled incarnation was never resumed"

    @contextmanager
    def incarnation(
        self, store: CrashingStore, crash: Crash | None, beat: tuple[WorkerInfo, str] | None = None
    ) -> Iterator[None]:
        """Route the agents' hooks to this incarnation's store and armed crash."""
        previous, self._current = self._current, _Incarnation(store, crash, beat=beat)
        try:
            yield
        finally:
            self._current = previous

    def counts(self, run_id: str) -> Counter[str]:
        """Executions so far of each step of the run."""
        return Counter({step: n for (rid, step), n in self.executions.items() if rid == run_id})

    # -- reading the store between incarnations -----------------------------------------

    @contextmanager
    def store(self) -> Iterator[StoreMachine]:
        """Open the data directory as a fresh process would, and close it after.

        During a race the one open handle is lent instead: LMDB allows one per process.
        """
        if self._shared is not None:
            yield self._shared
            return
        s = self._open()
        try:
            yield s
        finally:
            s.close()

    def _open(self) -> StoreMachine:
        """A new handle on the world's store, as a fresh process opens it."""
        clock = time.time if self.clock is None else self.clock
        if isinstance(self.path, str):
            return PostgresStore(self.path, clock=clock)
        return LmdbStore(self.path, sync=False, clock=clock)

    def emit(
        self,
        name: str,
        data: Any,
        agents: list[AgentDefinition],
        projections: Sequence[Callable[..., Any]] = (),
    ) -> str:
        with self.store() as s:
            s.register_agents([AgentSpec(id=a.id, triggers=a.triggers) for a in agents])
            if projections:
                specs = [ProjectionDefinition.must_from_fn(p).spec() for p in projections]
                s.register_projections(specs)
            result = s.emit(name, data)
        assert len(result.run_ids) == 1
        return result.run_ids[0]

    def snapshot(self, run_id: str) -> tuple[Run, list[StepRecord]]:
        with self.store() as s:
            s.check_valid()
            return s.get_run(run_id), s.get_steps(run_id)

    def _state(self, run_id: str) -> tuple[Run, list[StepRecord], Lease | None]:
        with self.store() as s:
            s.check_valid()
            return s.get_run(run_id), s.get_steps(run_id), s.get_lease(run_id)

    # -- one incarnation ----------------------------------------------------------------

    def attempt(
        self,
        agent_fn: Callable[..., Any],
        run_id: str,
        crash: Crash | None = None,
        *,
        on_handler_error: Callable[[BaseException], None] | None = None,
        projections: Sequence[Callable[..., Any]] = (),
    ) -> Attempt:
        """One worker process's go at the run: lease, execute, settle, or die on ``crash``.

        ``projections`` are served by this incarnation (see :class:`_Pumped`).
        """
        defn = AgentDefinition.must_from_fn(agent_fn)
        self._incarnations += 1
        before_counts = self.counts(run_id)
        _, recorded_before = self.snapshot(run_id)
        process = StandInWorker(f"incarnation-{self._incarnations}")
        inner = self._shared or self._open()
        fault = crash.store_fault(run_id) if crash is not None else None
        store = CrashingStore(inner, *([fault] if fault else []))
        runners = [
            ProjectionRunner(
                store, ProjectionDefinition.must_from_fn(p), process.info, ttl=LEASE_TTL
            )  # type: ignore[arg-type]
            for p in projections
        ]
        engine_store: Any = _Pumped(store, runners) if runners else store
        outcome: Outcome | None = None
        pool: concurrent.futures.ThreadPoolExecutor | None = None
        crashed = False
        try:
            with self.incarnation(store, crash, (process.info, run_id)):
                leased = store.lease_runs(process.info, [defn.id], limit=1, ttl=LEASE_TTL)
                # The previous holder is dead on this host: the run must be handed over now.
                assert [lr.run.id for lr in leased] == [run_id], (
                    f"run {run_id} was not handed over at once: leased {leased}"
                )
                if defn.is_async:
                    pool = concurrent.futures.ThreadPoolExecutor(4)
                    outcome = asyncio.run(
                        self._execute_async(
                            engine_store, process, leased[0], defn, pool, on_handler_error
                        )
                    )
                else:
                    execution = Execution(engine_store, process.info, leased[0])
                    ctx = AgentContext(execution, defn)
                    outcome = execution.execute(_watch(lambda: defn.fn(ctx), on_handler_error))
                    execution.settle(outcome)
        except SimulatedCrash:
            crashed = True
            self.crashes[run_id] += 1
        finally:
            if pool is not None:
                # Threads still in flight at the crash hit the dead store and stop there.
                pool.shutdown(wait=True)
            process.kill()
            if inner is not self._shared:
                inner.close()
        run, recorded_after = self.snapshot(run_id)
        after_counts = self.counts(run_id)
        return Attempt(
            crashed=crashed,
            executed=after_counts - before_counts,
            outcome=outcome,
            recorded_before=tuple(recorded_before),
            recorded_after=tuple(recorded_after),
            run=run,
        )

    async def _execute_async(
        self,
        store: Any,
        process: StandInWorker,
        leased: Any,
        defn: AgentDefinition,
        pool: concurrent.futures.Executor,
        on_handler_error: Callable[[BaseException], None] | None,
    ) -> Outcome:
        execution = Execution(
            store,
            process.info,
            leased,
            is_async=True,
            loop=asyncio.get_running_loop(),
            pool=pool,
        )
        ctx = AgentContext(execution, defn)

        async def handler() -> Any:
            try:
                return await defn.fn(ctx)
            except Exception as exc:
                if on_handler_error is not None:
                    on_handler_error(exc)
                raise

        outcome = await execution.execute_async(handler)
        await asyncio.get_running_loop().run_in_executor(pool, execution.settle, outcome)
        return outcome

    def race(
        self,
        agent_fn: Callable[..., Any],
        run_id: str,
        stall: Crash,
        crash: Crash | Callable[[int], Crash | None] | None = None,
    ) -> Race:
        """A live incarnation stalls at ``stall`` past its lease; another overtakes it.

        The first incarnation (alive: its stand-in process runs on) leases the run with a
        lease that lapses at once and executes until ``stall`` (kind ``"before"`` or
        ``"during"``, like a crash), where it stops as a frozen process would. A second
        incarnation then attempts the run, dying per ``crash`` (or per ``crash(n)``, ``n``
        the steps recorded when it takes over). Then the first goes on,
        on its own thread, to its end. Sync agents only: the pause is per thread.

        The two incarnations share one store handle (LMDB allows one per process); each
        writes under its own worker identity, which is all the store's fencing looks at.
        """
        defn = AgentDefinition.must_from_fn(agent_fn)
        assert not defn.is_async, "World.race pauses a thread: sync agents only"
        self._incarnations += 1
        process = StandInWorker(f"incarnation-{self._incarnations}-stalls")
        store = self._shared = self._open()
        paused, resume = threading.Event(), threading.Event()
        ended: dict[str, Any] = {}

        def stalled() -> None:
            me = threading.get_ident()
            self._by_thread[me] = _Incarnation(None, None, pause=(stall, paused, resume))
            try:
                execution = Execution(store, process.info, leased[0])
                ctx = AgentContext(execution, defn)
                outcome = execution.execute(lambda: defn.fn(ctx))
                execution.settle(outcome)
                ended["outcome"] = outcome
            except BaseException as exc:
                ended["error"] = exc
            finally:
                del self._by_thread[me]
                paused.set()  # also when it ended without reaching its pause

        thread = threading.Thread(target=stalled, name="stalled-incarnation")
        try:
            leased = store.lease_runs(process.info, [defn.id], limit=1, ttl=STALL_TTL)
            assert [lr.run.id for lr in leased] == [run_id], f"run {run_id} was not leased"
            thread.start()
            assert paused.wait(60) and thread.is_alive(), (
                f"the incarnation ended without reaching its stall {stall}: {ended}"
            )
            # Alive but silent: no heartbeat, so its lease lapses and the run is free.
            while time.time() <= leased[0].lease.expires_at:
                time.sleep(0.01)
            if callable(crash):
                crash = crash(len(self.snapshot(run_id)[1]))
            overtaker = self.attempt(agent_fn, run_id, crash)
            store_before = self._state(run_id)
            counts_before = self.counts(run_id)
            resume.set()
            thread.join(60)
            assert not thread.is_alive(), "the resumed incarnation did not end"
            return Race(
                overtaker=overtaker,
                overtaker_crash=crash,
                leased_steps=len(leased[0].steps),
                outcome=ended.get("outcome"),
                error=ended.get("error"),
                store_before=store_before,
                store_after=self._state(run_id),
                executed_after=self.counts(run_id) - counts_before,
            )
        finally:
            resume.set()
            if thread.ident is not None:
                thread.join(60)
            process.kill()
            self._shared = None
            store.close()

    def run_to_completion(self, agent_fn: Callable[..., Any], run_id: str) -> Run:
        """Attempts without crashes until the run is finished (one is enough)."""
        attempt = self.attempt(agent_fn, run_id)
        assert not attempt.crashed
        assert attempt.run.status in ("completed", "failed"), attempt.run
        return attempt.run


def _watch(
    handler: Callable[[], Any], on_error: Callable[[BaseException], None] | None
) -> Callable[[], Any]:
    def watched() -> Any:
        try:
            return handler()
        except Exception as exc:
            if on_error is not None:
                on_error(exc)
            raise

    return watched


def check_recorded_once(
    steps: list[StepRecord], expected_ids: list[str], *, contiguous: bool = True
) -> None:
    """Each position recorded at most once, with the id the uncrashed run records there.

    A sync agent records positions 0..k-1 in order (``contiguous``); an async one whose
    gathered steps finish in any order may leave holes below the highest position.
    """
    positions = [s.position for s in steps]
    assert len(set(positions)) == len(positions), f"a position recorded twice: {positions}"
    if contiguous:
        assert positions == list(range(len(steps))), f"positions not 0..k-1: {positions}"
    wrong = [(s.position, s.id) for s in steps if expected_ids[s.position] != s.id]
    assert not wrong, (
        f"recorded (position, id) {wrong} differ from the uncrashed run's {expected_ids}"
    )


def check_race(race: Race, stall: Crash, steps: int) -> None:
    """A stalled incarnation that lost its lease stops at its next write, having written nothing.

    Resumed, it may finish the step it stalled in, or (stalled between steps) execute the
    one step it was about to begin; then its write is refused and it stops: no further
    step runs, no record, no finish, no lease change. (One whose lease brought all
    ``steps`` records has no step to write, only the run's finish, which is refused.)
    """
    assert race.error is None, f"the stalled incarnation raised {race.error!r}"
    assert race.store_after == race.store_before, (
        "the overtaken incarnation wrote to the store after it lost its lease:\n"
        f"before {race.store_before}\nafter  {race.store_after}"
    )
    allowed = 0 if stall.kind == "during" else 1
    assert sum(race.executed_after.values()) <= allowed, (
        f"the overtaken incarnation ran on after {stall}: {dict(race.executed_after)}"
    )
    assert race.outcome is not None
    if race.leased_steps < steps:
        assert race.outcome.status == "abandoned", (
            f"the overtaken incarnation ended {race.outcome}, not abandoned"
        )


def check_attempt(attempt: Attempt, *, in_flight: int = 1) -> None:
    """The per-incarnation guarantees, whatever the crash.

    ``in_flight`` is how many steps may be running at once (1 for a sync agent): a crash
    leaves at most that many executed-but-unrecorded steps behind.
    """
    recorded_before = {s.id for s in attempt.recorded_before}
    recorded_after = {s.id for s in attempt.recorded_after}
    rerun = {s: n for s, n in attempt.executed.items() if s in recorded_before}
    assert not rerun, f"recorded steps executed again: {rerun}"
    twice = {s: n for s, n in attempt.executed.items() if n > 1}
    assert not twice, f"steps executed more than once in one attempt: {twice}"
    lost = [s for s in attempt.executed if s not in recorded_after]
    assert len(lost) <= (in_flight if attempt.crashed else 0), (
        f"executed but unrecorded after the attempt (crashed={attempt.crashed}): {lost}"
    )
    if attempt.crashed:
        return
    assert attempt.outcome is not None
    if attempt.outcome.status in ("suspended", "released"):
        # It let go of the run: it sleeps or waits in the store, or is pending again.
        assert attempt.run.status in ("sleeping", "waiting", "pending"), attempt.run
    else:
        assert attempt.run.status in ("completed", "failed"), attempt.run

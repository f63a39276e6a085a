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
  each step body, where a "before" or "during" crash can fire.

Side effects are counted per ``(run_id, step_id)`` in :attr:`World.executions`, which
is how the invariants tell "replayed from the record" from "executed again".
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs

from ironflow import current_step
from ironflow._agent._context import AgentContext
from ironflow._agent._dsl import AgentDefinition
from ironflow.replay import Execution, Outcome
from ironflow.store import AgentSpec, LmdbStore, Run, StepRecord
from ironflow.testing import CrashingStore, Fault, SimulatedCrash, StandInWorker

#: Long enough that no test ever waits it out: a takeover must come from the dead pid.
LEASE_TTL = 60.0

#: Crash kinds a plan may pick. "before"/"during" fire in the agent's code; the rest in
#: the store: record_step before (the step ran, its record was never written) and after
#: (written, but the engine never heard back), the lease, and finishing the run.
STEP_KINDS = ("before", "during", "record_step:before", "record_step:after")
RUN_KINDS = ("lease_runs:after", "finish_run:before", "finish_run:after")
KINDS = STEP_KINDS + RUN_KINDS

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
        if ":" not in self.kind:
            return None
        method, when = self.kind.split(":")
        position = self.position if method == "record_step" else None
        # lease_runs is not about one run; the others are narrowed to the run under test.
        return Fault(method, when, position, None if method == "lease_runs" else run_id)  # type: ignore[arg-type]


@attrs.frozen
class Attempt:
    """What one incarnation did: whether it crashed and which steps it executed."""

    crashed: bool
    executed: Counter[str]
    outcome: Outcome | None
    recorded_before: tuple[StepRecord, ...]
    recorded_after: tuple[StepRecord, ...]
    run: Run


class World:
    """A data directory, the incarnations that worked on it, and what they executed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.executions: Counter[tuple[str, str]] = Counter()
        self.crashes: Counter[str] = Counter()  # per run id
        self._armed: Crash | None = None
        self._store: CrashingStore | None = None
        self._boundaries = 0
        self._incarnations = 0

    @classmethod
    @contextmanager
    def temporary(cls) -> Iterator[World]:
        """An active world in a fresh directory, removed afterwards (one per example)."""
        tmp = Path(tempfile.mkdtemp(prefix="ironflow-crash-"))
        try:
            with cls(tmp / "data").active() as w:
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

    def boundary(self) -> None:
        """Called by an agent before each step call: where a "before" crash fires."""
        position = self._boundaries
        self._boundaries += 1
        if self._armed == Crash("before", position):
            self._die(f"before the step at position {position}")

    def executed(self) -> None:
        """Called by a step's body: count the side effect, then maybe crash mid-step."""
        info = current_step()
        assert info is not None, "World.executed() called outside a step"
        self.executions[(info.run_id, info.step_id)] += 1
        if self._armed == Crash("during", info.position):
            self._die(f"during {info.step_id} at position {info.position}")

    def _die(self, where: str) -> None:
        assert self._store is not None
        self._store.crash_now(where)

    @contextmanager
    def incarnation(self, store: CrashingStore, crash: Crash | None) -> Iterator[None]:
        """Route the agents' hooks to this incarnation's store and armed crash."""
        self._store, self._armed, self._boundaries = store, crash, 0
        try:
            yield
        finally:
            self._store, self._armed = None, None

    def counts(self, run_id: str) -> Counter[str]:
        """Executions so far of each step of the run."""
        return Counter({step: n for (rid, step), n in self.executions.items() if rid == run_id})

    # -- reading the store between incarnations -----------------------------------------

    @contextmanager
    def store(self) -> Iterator[LmdbStore]:
        """Open the data directory as a fresh process would, and close it after."""
        s = LmdbStore(self.path, sync=False)
        try:
            yield s
        finally:
            s.close()

    def emit(self, name: str, data: Any, agents: list[AgentDefinition]) -> str:
        with self.store() as s:
            s.register_agents([AgentSpec(id=a.id, triggers=a.triggers) for a in agents])
            result = s.emit(name, data)
        assert len(result.run_ids) == 1
        return result.run_ids[0]

    def snapshot(self, run_id: str) -> tuple[Run, list[StepRecord]]:
        with self.store() as s:
            s.check_valid()
            return s.get_run(run_id), s.get_steps(run_id)

    # -- one incarnation ----------------------------------------------------------------

    def attempt(
        self,
        agent_fn: Callable[..., Any],
        run_id: str,
        crash: Crash | None = None,
        *,
        on_handler_error: Callable[[BaseException], None] | None = None,
    ) -> Attempt:
        """One worker process's go at the run: lease, execute, settle, or die on ``crash``."""
        defn = AgentDefinition.must_from_fn(agent_fn)
        self._incarnations += 1
        before_counts = self.counts(run_id)
        _, recorded_before = self.snapshot(run_id)
        process = StandInWorker(f"incarnation-{self._incarnations}")
        inner = LmdbStore(self.path, sync=False)
        fault = crash.store_fault(run_id) if crash is not None else None
        store = CrashingStore(inner, *([fault] if fault else []))
        outcome: Outcome | None = None
        pool: concurrent.futures.ThreadPoolExecutor | None = None
        crashed = False
        try:
            with self.incarnation(store, crash):
                leased = store.lease_runs(process.info, [defn.id], limit=1, ttl=LEASE_TTL)
                # The previous holder is dead on this host: the run must be handed over now.
                assert [lr.run.id for lr in leased] == [run_id], (
                    f"run {run_id} was not handed over at once: leased {leased}"
                )
                if defn.is_async:
                    pool = concurrent.futures.ThreadPoolExecutor(4)
                    outcome = asyncio.run(
                        self._execute_async(store, process, leased[0], defn, pool, on_handler_error)
                    )
                else:
                    execution = Execution(store, process.info, leased[0])
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
        store: CrashingStore,
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
    if not attempt.crashed:
        assert attempt.run.status in ("completed", "failed"), attempt.run

"""The worker: lease runs, execute them, heartbeat, drain on SIGINT/SIGTERM.

Sync handlers each take a thread of a pool sized by ``concurrency``; async handlers run
on one event loop in a thread of its own, and their sync tools and durable writes go
to a second bounded pool so the loop never blocks on a step.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from ironflow._agent._context import AgentContext
from ironflow._agent._dsl import AgentDefinition
from ironflow._agent._memory import ProjectionDefinition
from ironflow._pure._frames import user_frame
from ironflow._worker._identity import this_worker
from ironflow._worker._projections import ProjectionService
from ironflow.errors import (
    ConfigError,
    DefinitionError,
    RunNotFoundError,
    StoreError,
    WorkerStoppedError,
)
from ironflow.replay._engine import Execution, Outcome
from ironflow.replay._observer import Observer, Observers
from ironflow.store import ErrorInfo, LeasedRun, Store
from ironflow.store._steplog import StepLog

__all__ = ["Worker"]

log = logging.getLogger("ironflow.worker")

if TYPE_CHECKING:
    # Imported where used instead: asyncio adds about 20 ms to `import ironflow`,
    # and a worker serving only sync agents never needs it.
    import asyncio


class Worker:
    """Serve agents from a store until stopped.

    Guarantees: a leased run is heartbeated while it executes; on :meth:`stop` (or
    SIGINT/SIGTERM under :meth:`run`) no new run is leased, each in-flight step
    finishes and is recorded, each run stops at its next step boundary and is handed
    back as pending, and then :meth:`run` returns. A run whose previous holder died on
    this host is taken over at once; one whose holder is elsewhere, after its lease TTL.
    """

    def __init__(
        self,
        agents: Iterable[Any] = (),
        *,
        projections: Iterable[Any] = (),
        store: Store | None = None,
        data_dir: str | None = None,
        concurrency: int = 8,
        lease_ttl: float = 15.0,
        poll_interval: float = 0.05,
        observers: Iterable[Observer] = (),
    ) -> None:
        defs = [
            AgentDefinition.must_from_fn(a) if not isinstance(a, AgentDefinition) else a
            for a in agents
        ]
        projection_defs = [ProjectionDefinition.must_from_fn(p) for p in projections]
        if not defs and not projection_defs:
            raise DefinitionError(
                "Worker(agents=[...]) needs at least one @agent function "
                "(or projections=[...] with at least one @projection)"
            )
        if concurrency < 1:
            raise ConfigError(f"concurrency must be at least 1, not {concurrency}")
        if lease_ttl <= 0:
            raise ConfigError(f"lease_ttl must be positive seconds, not {lease_ttl}")
        self.agents = {d.id: d for d in defs}
        self._agent_ids = list(self.agents)
        self.projections = {p.name: p for p in projection_defs}
        self._projection_service: ProjectionService | None = None
        if store is None:
            from ironflow.store._open import open_store

            store = open_store(data_dir)
        self.store = store
        self.concurrency = concurrency
        self.lease_ttl = lease_ttl
        self.poll_interval = poll_interval
        watching = list(observers)
        for o in watching:
            if not isinstance(o, Observer):
                raise ConfigError(
                    f"observers=[...] takes ironflow observers (ironflow.contrib.otel.Tracing, "
                    f"ironflow.contrib.prometheus.Metrics), not {o!r}"
                )
        #: Who watches the attempts: None (no cost at all), one observer, or several.
        self.observer: Observer | None = Observers(watching) if watching else None
        self.info = this_worker()
        self._stopping = threading.Event()
        #: Set by the first run(): a worker serves once (its pools are shut down after).
        self._served = False
        self._heartbeat_stop = threading.Event()
        self._active: dict[str, concurrent.futures.Future[Outcome]] = {}
        self._lock = threading.Lock()
        self._slot_freed = threading.Event()
        self._run_pool = concurrent.futures.ThreadPoolExecutor(
            concurrency, thread_name_prefix="ironflow-run"
        )
        self._step_pool = concurrent.futures.ThreadPoolExecutor(
            max(4, concurrency), thread_name_prefix="ironflow-step"
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None
        if any(d.is_async for d in defs):
            self._start_loop()
        # Registering here, not in run(), lets a caller build a worker, emit, then run it.
        self.store.register_agents([d.spec() for d in defs])
        if projection_defs:
            self.store.register_projections([p.spec() for p in projection_defs])

    # -- lifecycle -------------------------------------------------------------------

    def _start_loop(self) -> None:
        import asyncio

        loop = asyncio.new_event_loop()
        self._loop = loop
        self._loop_thread = threading.Thread(
            target=loop.run_forever, name="ironflow-loop", daemon=True
        )
        self._loop_thread.start()

    def stop(self) -> None:
        """Begin a drain: lease nothing more and stop each run at its next step boundary.

        From now until the drain is over, a request to a server that cannot be reached
        fails at once instead of retrying (a worker on ``IRONFLOW_URL``): an idle worker
        exits at once with the server down, and one with a step in flight finishes the
        step, leaves it unrecorded if the server is still down, and exits; that step
        runs again when another worker takes the run over, as after a crash.
        """
        self._stopping.set()
        self._slot_freed.set()
        self._retry_outages(False)

    def _retry_outages(self, retry: bool) -> None:
        # Only a store that retries (RemoteStore) has the switch; it sets a flag, so
        # this is safe in a signal handler.
        switch = getattr(self.store, "stop_retrying", None)
        if switch is not None:
            switch(not retry)

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def _install_signals(self) -> dict[int, Any]:
        """Install drain handlers; return the previous ones so :meth:`run` can restore them."""
        if threading.current_thread() is not threading.main_thread():
            return {}

        first_signal: list[float] = []

        def on_signal(signum: int, _frame: Any) -> None:
            # A wrapper (make, timeout, a shell) often forwards the same signal the
            # process group already got; only a second signal a moment later means "now".
            if first_signal and time.monotonic() - first_signal[0] < 1.0:
                return
            if self._stopping.is_set():
                log.warning("second %s: exiting without draining", signal.Signals(signum).name)
                os._exit(130)
            log.info(
                "%s received: draining (finishing in-flight steps; send it again to exit now)",
                signal.Signals(signum).name,
            )
            first_signal.append(time.monotonic())
            self.stop()

        previous: dict[int, Any] = {
            sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
        return previous

    def run(
        self,
        *,
        until_idle: bool = False,
        ready_message: bool = True,
        on_ready: Callable[[str], None] | None = None,
    ) -> None:
        """Serve until stopped (or, with ``until_idle``, until no run is left to do).

        Installs SIGINT/SIGTERM handlers when called from the main thread, then prints
        the ready line (unless ``ready_message`` is false) and calls ``on_ready`` with the
        names it serves. A worker
        serves once: a second call raises :class:`~ironflow.errors.WorkerStoppedError`
        rather than return at once with the runs still pending.
        """
        with self._lock:
            if self._served:
                raise WorkerStoppedError(
                    "this Worker has already served (Worker.run() was called before): a "
                    "worker runs once, and stops for good when run() returns. Build a new "
                    "Worker(...) to serve again; it may share this one's store "
                    "(Worker(agents, store=worker.store))"
                )
            self._served = True
        previous = self._install_signals()
        names = ", ".join(self.agents or self.projections)
        if ready_message:
            print(f"{names} worker ready (pid {os.getpid()})", flush=True)
        if on_ready is not None:
            on_ready(names)
        heartbeat = threading.Thread(
            target=self._heartbeat_loop, name="ironflow-heartbeat", daemon=True
        )
        heartbeat.start()
        self._start_projections()
        try:
            self._serve(until_idle)
        finally:
            self._drain()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _serve(self, until_idle: bool) -> None:
        agent_ids = self._agent_ids
        while not self._stopping.is_set():
            with self._lock:
                free = self.concurrency - len(self._active)
                # Taken before leasing: a run finishing meanwhile may make another pending
                # (a parent waiting for its child), which only the next lease would see.
                idle = not self._active
            if free > 0:
                try:
                    leased = self.store.lease_runs(
                        self.info, agent_ids, limit=free, ttl=self.lease_ttl
                    )
                except StoreError as exc:
                    if self._stopping.is_set():
                        return
                    log.error("cannot lease runs: %s; retrying", exc)
                    self._stopping.wait(1.0)
                    continue
                for item in leased:
                    self._dispatch(item)
                if leased:
                    continue
                if until_idle and idle and self._projections_caught_up():
                    return
                try:
                    self.store.wait_for_work(self.poll_interval)
                except StoreError as exc:
                    if self._stopping.is_set():
                        return
                    log.error("cannot wait for work: %s; retrying", exc)
                    self._stopping.wait(1.0)
            else:
                self._slot_freed.wait(self.poll_interval)
                self._slot_freed.clear()

    def _drain(self) -> None:
        self._stopping.set()
        with self._lock:
            pending = list(self._active.values())
        if pending:
            log.info("draining %d in-flight run(s)", len(pending))
        concurrent.futures.wait(pending)
        # Only now: a draining run may still be waiting for a projection to catch up.
        if self._projection_service is not None:
            self._projection_service.stop()
        self._run_pool.shutdown(wait=True)
        self._step_pool.shutdown(wait=True)
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            assert self._loop_thread is not None
            self._loop_thread.join(timeout=5)
            if not self._loop_thread.is_alive():
                self._loop.close()
        self._heartbeat_stop.set()
        self._retry_outages(True)
        if self.observer is not None:
            self.observer.close()
        log.info("worker stopped")

    def _start_projections(self) -> None:
        for agent in self.agents.values():
            wanted = agent.memory.projection if agent.memory is not None else None
            if wanted is not None and wanted not in self.projections:
                log.info(
                    "agent %s: its memory projection %s is not served by this worker; "
                    "memory.append waits for a worker that serves it",
                    agent.id,
                    wanted,
                )
        if self.projections:
            self._projection_service = ProjectionService(
                self.store,
                list(self.projections.values()),
                self.info,
                ttl=self.lease_ttl,
                poll_interval=self.poll_interval,
            )
            self._projection_service.start()

    def _projections_caught_up(self) -> bool:
        service = self._projection_service
        return service is None or service.caught_up()

    def _heartbeat_loop(self) -> None:
        interval = self.lease_ttl / 3
        while not self._heartbeat_stop.wait(interval):
            with self._lock:
                ids = list(self._active)
            if not ids:
                continue
            try:
                held = self.store.heartbeat(self.info, ids, ttl=self.lease_ttl)
            except Exception as exc:  # keep beating; the TTL gives us slack
                log.warning("heartbeat failed: %s", exc)
                continue
            with self._lock:
                # A run that finished since the snapshot dropped its lease itself.
                lost_runs = (set(ids) - held) & set(self._active)
            for lost in lost_runs:
                # Still active here, yet its lease is gone: it may have ended a moment ago
                # (the lease goes with the finish's commit, the run leaves _active after).
                # Lost only if someone else now runs it.
                try:
                    taken = self.store.get_run(lost).status == "running"
                except (StoreError, RunNotFoundError):
                    taken = True  # cannot tell: say so, as before
                if taken:
                    log.warning(
                        "run %s: lease lost to another worker", lost, extra={"run_id": lost}
                    )

    # -- executing runs ----------------------------------------------------------------

    def _dispatch(self, leased: LeasedRun) -> None:
        run = leased.run
        agent = self.agents[run.agent]
        _log_pickup(leased)
        future: concurrent.futures.Future[Outcome]
        task: list[concurrent.futures.Future[Outcome]] = []
        # Registered under the lock the task takes to chain its next run (see
        # _execute_sync), so it never looks for its future before it is there.
        with self._lock:
            if agent.is_async:
                import asyncio

                assert self._loop is not None
                future = asyncio.run_coroutine_threadsafe(
                    self._execute_async(leased, agent), self._loop
                )
            else:
                future = self._run_pool.submit(self._execute_sync, leased, agent, task)
                task.append(future)
            self._active[run.id] = future
        future.add_done_callback(self._finished)

    def _execution(self, leased: LeasedRun, agent: AgentDefinition) -> Execution:
        timeout = agent.timeout
        execution = Execution(
            self.store,
            self.info,
            leased,
            is_async=agent.is_async,
            loop=self._loop,
            pool=self._step_pool,
            stopping=self._stopping,
            deadline=None if timeout is None else leased.run.created_at + timeout,
        )
        if self.observer is not None:
            execution.observer = self.observer.attempt(execution, leased.taken_from)
        return execution

    def _execute_sync(
        self,
        leased: LeasedRun,
        agent: AgentDefinition,
        task: list[concurrent.futures.Future[Outcome]],
    ) -> Outcome:
        """Execute a run, then as many more as :meth:`_chain` leases; ``task`` holds
        this task's future."""
        while True:
            # What the run's finish leased in its own transaction, if it did (see _chain).
            chained: list[list[LeasedRun]] = []
            outcome = self._execute_one(leased, agent, chained)
            following = self._chain(leased.run.id, task, chained)
            if following is None:
                return outcome
            leased = following
            agent = self.agents[leased.run.agent]

    def _chain(
        self,
        done: str,
        task: list[concurrent.futures.Future[Outcome]],
        chained: list[list[LeasedRun]],
    ) -> LeasedRun | None:
        """The next run for this thread: what its run's finish leased in the same
        transaction (``chained``, see :meth:`_finisher`), or None.

        Why: handing each run from the serving thread to a pool thread and back costs two
        thread wake-ups a run, about a tenth of a sequential 3-step run's time outside
        its commits. Only when every agent here is sync (an async run belongs on the
        loop). A run that ended otherwise (suspended, or its finish refused) leases
        nothing here: the serving loop leases, and waits for work, for every slot. The
        task's future moves from the run that ended to the next under one lock, so
        ``concurrency`` holds and a drain always finds the task.
        """
        leased: list[LeasedRun] = chained[0] if chained else []
        if self._stopping.is_set():
            # Leased with the finish just as the worker began to stop: give it back.
            for run in leased:
                self._give_back(run)
            return None
        with self._lock:
            future = task[0]
            # Unless this worker leased the run again meanwhile: that newer execution
            # keeps its place.
            if self._active.get(done) is future:
                del self._active[done]
            if leased:
                self._active[leased[0].run.id] = future
        if not leased:
            return None
        _log_pickup(leased[0])
        return leased[0]

    def _finisher(self, chained: list[list[LeasedRun]]) -> Callable[..., None] | None:
        """``store.finish_run`` for a chaining run thread that also leases its next run,
        in the same transaction (one durable commit fewer a run with a backlog), and
        puts what it leased in ``chained``; None where :meth:`_chain` would not chain."""
        if self._loop is not None or self._stopping.is_set():
            return None
        agents = self._agent_ids

        def finish(*args: Any, **kwargs: Any) -> None:
            # finish_run's arguments, as the engine passes them.
            chained.append(
                self.store.finish_and_lease(
                    *args, **kwargs, agents=agents, limit=1, ttl=self.lease_ttl
                )
            )

        return finish

    def _give_back(self, leased: LeasedRun) -> None:
        run = leased.run
        try:
            self.store.release_run(self.info, run.id, attempt=run.attempt)
        except StoreError as exc:
            log.warning("run %s: cannot hand it back (%s); its lease will lapse", run.id, exc)

    def _execute_one(
        self, leased: LeasedRun, agent: AgentDefinition, chained: list[list[LeasedRun]]
    ) -> Outcome:
        execution = self._execution(leased, agent)
        ctx = AgentContext(execution, agent)
        started = time.monotonic()
        outcome = execution.execute(lambda: agent.fn(ctx))
        outcome = self._settle(execution, outcome, self._finisher(chained))
        self._log_outcome(execution, outcome, time.monotonic() - started)
        return outcome

    async def _execute_async(self, leased: LeasedRun, agent: AgentDefinition) -> Outcome:
        import asyncio

        execution = self._execution(leased, agent)
        ctx = AgentContext(execution, agent)
        started = time.monotonic()
        outcome = await execution.execute_async(lambda: agent.fn(ctx))
        outcome = await asyncio.get_running_loop().run_in_executor(
            self._step_pool, self._settle, execution, outcome
        )
        self._log_outcome(execution, outcome, time.monotonic() - started)
        return outcome

    def _settle(
        self,
        execution: Execution,
        outcome: Outcome,
        finish: Callable[..., object] | None = None,
    ) -> Outcome:
        """Write the outcome; one the store would not take leaves the run to its lease."""
        try:
            execution.settle(outcome, finish=finish)
        except StoreError as exc:
            what = "hand it back" if outcome.status == "released" else f"record it {outcome.status}"
            return Outcome("unsettled", error=ErrorInfo(type=what, message=str(exc)))
        return outcome

    def _log_outcome(self, execution: Execution, outcome: Outcome, seconds: float) -> None:
        if outcome.status == "completed" and not log.isEnabledFor(logging.INFO):
            return  # the common line, built for nobody
        counts = f"{execution.steps_executed} step(s) run, {execution.steps_replayed} replayed"
        rid = execution.run_id
        ids: dict[str, Any] = {
            "run_id": rid,
            "attempt": execution.attempt,
            "outcome": outcome.status,
            "steps_executed": execution.steps_executed,
            "steps_replayed": execution.steps_replayed,
        }
        if outcome.error is not None and outcome.error.step_id:
            ids["step_id"] = outcome.error.step_id
        if outcome.status == "completed":
            log.info("run %s: completed in %.2fs (%s)", rid, seconds, counts, extra=ids)
        elif outcome.status == "failed":
            err = outcome.error
            where = f" at {err.step_id}" if err and err.step_id else ""
            log.error(
                "run %s: failed%s: %s: %s (%s)",
                rid,
                where,
                err and err.type,
                err and err.message,
                counts,
                extra=ids,
            )
            frame = user_frame(err.traceback) if err else None
            if frame is not None:
                log.error(
                    "run %s: raised at %s (`ironflow inspect %s --traceback` shows the "
                    "whole traceback)",
                    rid,
                    frame.describe(),
                    rid,
                    extra=ids,
                )
        elif outcome.status == "released":
            log.info("run %s: handed back for another worker (drain); %s", rid, counts, extra=ids)
        elif outcome.status == "abandoned" and outcome.error is not None:
            log.error(
                "run %s: stopped at a step the store could not record or read (%s); it is "
                "taken up again when its lease lapses (%.0fs)",
                rid,
                outcome.error.message,
                self.lease_ttl,
                extra=ids,
            )
        elif outcome.status == "unsettled" and outcome.error is not None:
            log.error(
                "run %s: could not %s (%s); it is taken up again when its lease lapses (%.0fs)",
                rid,
                outcome.error.type,
                outcome.error.message,
                self.lease_ttl,
                extra=ids,
            )
        elif outcome.status == "abandoned":
            log.warning("run %s: another worker took it over; stopped here", rid, extra=ids)
        elif outcome.status == "suspended":
            log.info(
                "run %s: suspended in the store, holding no worker (%s)", rid, counts, extra=ids
            )
        else:
            log.info("run %s: %s (%s)", rid, outcome.status, counts, extra=ids)

    def _finished(self, future: concurrent.futures.Future[Outcome]) -> None:
        with self._lock:
            # The run this task ended with (a sync task chains runs). A run this worker
            # lost and leased again has a newer execution under its id: keep that.
            ids = [rid for rid, held in self._active.items() if held is future]
            for rid in ids:
                del self._active[rid]
        run_id = ids[0] if ids else "?"
        self._slot_freed.set()
        exc = future.exception()
        if exc is not None:
            # The run stays leased; it is picked up again when this lease lapses.
            log.error(
                "run %s: worker error: %r", run_id, exc, exc_info=exc, extra={"run_id": run_id}
            )


def _log_pickup(leased: LeasedRun) -> None:
    if not log.isEnabledFor(logging.INFO):
        return  # the line and its reason, built for nobody: a run's cost for no one
    run = leased.run
    ids = {"run_id": run.id, "attempt": run.attempt, "agent": run.agent}
    log.info("run %s (%s): %s", run.id, run.agent, _pickup(leased), extra=ids)


def _pickup(leased: LeasedRun) -> str:
    """Why a worker is executing this run now, for the log: start, retry, wake-up, resume."""
    run = leased.run
    if run.attempt <= 1 and not leased.steps:
        return f"picked up, event {run.event.name} {run.event.id}"
    # By position alone: the records stay undecoded until the replay reads them.
    steps = StepLog.of(leased.steps)
    recorded = set(steps.positions)
    resume_at = 0
    while resume_at in recorded:
        resume_at += 1
    replay = (
        f"{len(recorded)} recorded step(s) replay from the record"
        if recorded
        else "nothing recorded yet"
    )
    wait = run.suspension
    if wait is not None and wait.kind == "retry" and wait.position == resume_at:
        return f"attempt {run.attempt}, try {len(wait.tries) + 1} of {wait.step_id}; {replay}"
    last_index = steps.index_of(resume_at - 1)
    try:
        last = None if last_index is None else steps[last_index]
    except StoreError as damaged:
        # The replay reaches it and stops there, saying so; this is only the log line.
        return f"resuming at step {resume_at}, attempt {run.attempt}; {replay} ({damaged})"
    if wait is not None and last is not None and wait.position == last.position:
        # The store recorded the wait's step when it ended (its time, event or child).
        return f"attempt {run.attempt}, woken: {wait.step_id} is over; {replay}"
    if last is not None:
        return f"resuming at step {resume_at} after {last.id}, attempt {run.attempt}; {replay}"
    return f"restarting from the top, attempt {run.attempt} (no step was recorded)"

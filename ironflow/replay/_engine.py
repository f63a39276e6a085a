"""Run a handler against its recorded steps.

The handler re-executes from the top on every attempt. Each step call takes the next
*position* (0, 1, 2, ... in call order) and a step id derived from its name. If the
record holds that position, the step returns the stored output without running; the
first unrecorded step runs and is durably recorded before the handler continues.

Why positions are taken at call time: under ``asyncio.gather`` steps finish in any
order, but they are *called* in program order, so ids and positions stay
deterministic however the scheduler interleaves them.
"""

from __future__ import annotations

import concurrent.futures
import contextvars
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, NoReturn

import attrs

from ironflow._pure._trace import TraceContext
from ironflow.errors import (
    DefinitionError,
    LeaseLostError,
    NonDeterminismError,
    NotSerializableError,
    StepFailedError,
    StepTimeoutError,
    StoreError,
)
from ironflow.replay._current import StepInfo, _execution, _step, current_execution, current_step
from ironflow.replay._observer import UNWATCHED, AttemptObserver, StepWatch
from ironflow.replay._outcome import Outcome, error_info, format_tb
from ironflow.replay._recorded import Recorded, _Slot
from ironflow.replay._retry import RetryPolicy
from ironflow.replay._stops import (
    _Abandon,
    _Cancel,
    _Drain,
    _PastRecord,
    _RunTimeout,
    _Stop,
    _Suspend,
)
from ironflow.store import (
    ErrorInfo,
    LeasedRun,
    StepRecord,
    StepTry,
    Store,
    SuspendResult,
    Suspension,
    WorkerInfo,
)
from ironflow.store._codec import structure, to_json_value
from ironflow.store._steplog import StepLog

__all__ = [
    "Execution",
    "Outcome",
    "RetryPolicy",
    "StepInfo",
    "current_execution",
    "current_step",
    "error_info",
]

log = logging.getLogger("ironflow.replay")

if TYPE_CHECKING:
    # Imported where used instead: asyncio adds about 20 ms to `import ironflow`,
    # and a worker serving only sync agents never needs it.
    import asyncio


class Execution:
    """One attempt at a leased run: hands out positions and records steps.

    Thread-safety: positions are handed out on the handler's own thread (or event
    loop); recording may happen on pool threads and goes through the thread-safe store.
    """

    def __init__(
        self,
        store: Store,
        worker: WorkerInfo,
        leased: LeasedRun,
        *,
        is_async: bool = False,
        loop: asyncio.AbstractEventLoop | None = None,
        pool: concurrent.futures.Executor | None = None,
        stopping: threading.Event | None = None,
        deadline: float | None = None,
        read_only: bool = False,
        on_replayed: Callable[[StepRecord], None] | None = None,
    ) -> None:
        self.store = store
        self.worker = worker
        self.run = leased.run
        self.run_id = leased.run.id
        self.attempt = leased.run.attempt
        self.is_async = is_async
        self.loop = loop
        self.pool = pool
        self.stopping = stopping or threading.Event()
        #: The step records by position: the leased ones (each decoded when first read),
        #: then the ones this execution records.
        self.recorded = Recorded(StepLog.of(leased.steps))
        self.cancel_requested = leased.run.cancel_requested
        #: ``ironflow run pause``: stop at the next step boundary and hand the run back,
        #: which the store then keeps paused until it is resumed.
        self.pause_requested = False
        self.steps_executed = 0
        self.steps_replayed = 0
        #: When the run's own timeout runs out (Unix seconds), if it has one.
        self.deadline = deadline
        #: True once the store holds the run suspended: nothing more is written.
        self.suspended = False
        #: The first stop of this execution, kept: raised again at every later step call
        #: and deciding the outcome when the handler returns, so no ``except`` in user
        #: code can turn it into a completed run (see :meth:`halt`).
        self.stopped: BaseException | None = None
        self._stop_lock = threading.Lock()
        #: Called when the handler fails for good, before the run's outcome is decided;
        #: it may take more steps (``ctx.compensate``'s undos), and in an async run
        #: returns an awaitable. Set by the context; None: nothing to do.
        self.on_failure: Callable[[BaseException], Any] | None = None
        self._next_position = 0
        self._counts: dict[str, int] = {}
        #: Positions of the waits for events called so far (recorded or not): their
        #: records hold the events they took, which a later wait must not take again.
        #: Told by the primitives (a wait of kind "event"), never guessed from step ids.
        self._event_waits: set[int] = set()
        # Async runs: steps executing now, and who waits for there to be none, so a
        # suspension never abandons a sibling step of an asyncio.gather half-way.
        self._in_flight = 0
        self._idle_waiters: list[asyncio.Future[None]] = []
        self._suspend_lock: asyncio.Lock | None = None
        #: Who watches this attempt (tracing, metrics, logs), set by the worker; None:
        #: nobody, and a step costs one ``is None`` test more. See ``replay/_observer.py``.
        self.observer: AttemptObserver | None = None
        #: Executed steps in flight that an observer watches, by position.
        self._watches: dict[int, StepWatch] = {}
        #: A read-only replay (``ironflow replay``): the handler meets only its record,
        #: and the first step the record does not hold stops it (outcome ``past_record``,
        #: the call kept in ``past_record``) before anything runs or is written.
        self.read_only = read_only
        self.past_record: _PastRecord | None = None
        #: Called with each recorded step just before it gives the handler its recorded
        #: value (``ironflow replay`` prints it, ``--break-at`` stops in pdb there).
        self.on_replayed = on_replayed

    # -- positions -------------------------------------------------------------------

    @property
    def is_replaying(self) -> bool:
        """True while the handler is still inside its recorded history."""
        return self._next_position in self.recorded

    def first_unrecorded(self) -> int:
        """The position the run resumes at: the lowest one with no record."""
        position = 0
        while position in self.recorded:
            position += 1
        return position

    def halt(self, stop: BaseException, cause: BaseException | None = None) -> BaseException:
        """Keep ``stop`` (caused by ``cause``) as this execution's stop unless one is kept
        already; return the kept one, to raise.

        Stops are sticky (as a cancelled scope is in trio): a drain, a cancellation, a
        lost lease, a step the store could not record, a suspension, the run's timeout
        or a diverged replay. Once one stopped the handler, every later step call raises
        it again, and it decides the outcome whatever the handler catches or returns
        (``except``, ``asyncio.gather(return_exceptions=True)``, a retry loop).
        """
        with self._stop_lock:
            if self.stopped is None:
                if cause is not None:
                    stop.__cause__ = cause
                self.stopped = stop
            # A fresh traceback: the same object raised at every later step call must
            # not grow one frame chain per raise.
            return self.stopped.with_traceback(None)

    def refuse_nesting(self, what: str) -> None:
        """Raise :class:`DefinitionError` if ``what`` (a step) is called inside a step.

        A step inside a step would take a position while the outer one holds its own:
        the record would then hold the inner step before the outer, which no replay
        can match (and inside ``ctx.parallel`` branches the positions would race).
        """
        outer = _step.get()
        if outer is not None:
            raise DefinitionError(
                f"the step {what} was called inside the step {outer.step_id!r} of run "
                f"{self.run_id}: steps do not nest. Call ctx.step, ctx.now, ctx.sleep, "
                "ctx.parallel and the other ctx methods from the handler itself, not from "
                "inside a step, a tool or a ctx.parallel branch (a tool called inside a "
                "step is an ordinary call, part of that step)"
            )

    def _raise_stop(self, stop: BaseException, cause: BaseException) -> NoReturn:
        """Raise ``stop`` caused by ``cause`` (or the stop kept from earlier, unchanged)."""
        raise self.halt(stop, cause)

    def begin(self, base_id: str, input: Any) -> _Slot:
        """Take the next position for a step called ``base_id``; check it against the record.

        The step boundary is also where a drain, a cancellation or a lost lease stops
        the handler, and where a stop kept from earlier is raised again.
        """
        if self.stopped is not None:
            raise self.halt(self.stopped)
        if _step.get() is not None:
            self.refuse_nesting(repr(base_id))
        position = self._next_position
        try:
            entry = self.recorded.entry(position)
        except StoreError as damaged:
            # A stored record that does not decode: never let the handler go on (or an
            # `except Exception` in it see this); the run stays leased, as on a failed write.
            self._raise_stop(_Abandon(damaged), damaged)
        if entry is None and not self.read_only:
            if self.stopping.is_set() or self.pause_requested:
                raise self.halt(_Drain())
            if self.cancel_requested:
                raise self.halt(_Cancel())
            if self.suspended:
                raise self.halt(_Suspend())
            if self.past_deadline():
                raise self.halt(_RunTimeout())
        counts = self._counts
        count = counts[base_id] = counts.get(base_id, 0) + 1
        step_id = base_id if count == 1 else f"{base_id}#{count}"
        self._next_position = position + 1
        if entry is not None:
            if isinstance(entry, dict):
                recorded_id, recorded_input = entry["id"], entry["input"]
            else:
                recorded_id, recorded_input = entry.id, entry.input
            if recorded_id != step_id:
                raise self.halt(
                    NonDeterminismError(
                        self.run_id,
                        position,
                        repr(recorded_id),
                        repr(step_id),
                        inputs=(recorded_input, input),
                    )
                )
            if recorded_input != input:
                raise self.halt(
                    NonDeterminismError(
                        self.run_id,
                        position,
                        f"{recorded_id!r} with input {_short(recorded_input)}",
                        f"{step_id!r} with input {_short(input)}",
                        inputs=(recorded_input, input),
                    )
                )
        elif self.read_only:
            if self.past_record is None:
                self.past_record = _PastRecord(position, step_id, input)
            raise self.halt(self.past_record)
        return _Slot(position, step_id, input, entry, self.recorded)

    # -- outcomes of one step -----------------------------------------------------------

    def replayed(self, slot: _Slot, output_type: Any) -> Any:
        """A recorded step's value: its output re-typed, or its failure raised again."""
        entry = slot.entry
        assert entry is not None
        self.steps_replayed += 1
        if self.on_replayed is not None:
            entry = slot.record
            assert entry is not None
            self.on_replayed(entry)
        if isinstance(entry, dict):
            if entry["status"] == "completed":
                return structure(entry["output"], output_type)
            entry = slot.record  # a failure: raised again from the whole record
            assert entry is not None
        return _from_record(entry, output_type)

    def past_deadline(self) -> bool:
        """Whether the run's own timeout has run out."""
        return self.deadline is not None and time.time() >= self.deadline

    def _step_info(self, slot: _Slot, retry: int = 0) -> StepInfo:
        return StepInfo(self.run_id, slot.step_id, slot.position, self.attempt, retry)

    def _prior_tries(self, slot: _Slot) -> tuple[StepTry, ...]:
        """The failed tries of this step so far, kept on the run while it waited to retry."""
        s = self.run.suspension
        if (
            s is not None
            and s.kind == "retry"
            and (s.position, s.step_id)
            == (
                slot.position,
                slot.step_id,
            )
        ):
            return s.tries
        return ()

    def _time_limit(self, timeout: float | None) -> float | None:
        """How long the step may run: its own timeout, cut to what is left of the run's."""
        if self.deadline is None:
            return timeout
        left = max(0.0, self.deadline - time.time())
        return left if timeout is None else min(timeout, left)

    # -- observers ----------------------------------------------------------------------

    def _watch(self, slot: _Slot) -> StepWatch | Any:
        """The ``with`` block an executed step runs in, reporting it to the observer."""
        if self.observer is None:
            return UNWATCHED  # a wait step: rare enough to keep one code path
        info = self._step_info(slot, len(self._prior_tries(slot)))
        return StepWatch(self, self.observer, info, slot.input)

    def note(self, key: str, value: Any) -> None:
        """Tell the observer a fact about the step executing in this context (the LLM
        provider's name); nothing without an observer or outside a step."""
        if self.observer is None:
            return
        step = _step.get()
        watch = self._watches.get(step.position) if step is not None else None
        if watch is not None:
            self.observer.step_note(watch.token, key, value)

    def trace_context(self) -> TraceContext | None:
        """The W3C trace context a run started by the executing step should join (its
        span's, when tracing), or None."""
        if self.observer is None:
            return None
        step = _step.get()
        watch = self._watches.get(step.position) if step is not None else None
        return self.observer.step_trace(watch.token) if watch is not None else None

    def _record(
        self,
        slot: _Slot,
        started: float,
        output: Any,
        exc: BaseException | None,
        tries: tuple[StepTry, ...] = (),
    ) -> Any:
        """Record the step's result; return its JSON output, or raise StepFailedError."""
        if exc is None:
            try:
                output = to_json_value(output, f"step {slot.step_id!r} output", "output")
            except NotSerializableError as bad:
                exc = bad
        record = StepRecord(
            run_id=self.run_id,
            position=slot.position,
            id=slot.step_id,
            status="completed" if exc is None else "failed",
            input=slot.input,
            output=output if exc is None else None,
            started_at=started,
            ended_at=time.time(),
            error=None if exc is None else error_info(exc, slot.step_id),
            attempt=self.attempt,
            tries=tries or None,
            worker=self.worker.id,
        )
        try:
            ack = self.store.record_step(self.worker, record)
        except LeaseLostError as lost:
            self._raise_stop(_Abandon(), lost)
        except StoreError as failed:
            # Never let the handler go on past a step that is not recorded (a tool's
            # `except Exception` must not see this): stop, and leave the run leased, so
            # it is taken up again when the lease lapses.
            self._raise_stop(_Abandon(failed), failed)
        self.recorded[slot.position] = record
        self.steps_executed += 1
        if ack.cancel_requested:
            self.cancel_requested = True
        if ack.pause_requested:
            self.pause_requested = True
        if exc is not None:
            raise StepFailedError(slot.step_id, type(exc).__name__, str(exc)) from exc
        return output

    def run_blocking(
        self,
        slot: _Slot,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        output_type: Any,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Execute an unrecorded step on this thread and record it before returning.

        A failure with tries left suspends the run until the next try is due.
        """
        if slot.entry is not None:
            return self.replayed(slot, output_type)
        if self.observer is None:
            return self._execute_blocking(slot, fn, args, kwargs, output_type, retry, timeout)
        with self._watch(slot):
            return self._execute_blocking(slot, fn, args, kwargs, output_type, retry, timeout)

    def _execute_blocking(
        self,
        slot: _Slot,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        output_type: Any,
        retry: RetryPolicy | None,
        timeout: float | None,
    ) -> Any:
        tries = self._prior_tries(slot)
        token = _step.set(self._step_info(slot, len(tries)))
        started = time.time()
        limit = self._time_limit(timeout)
        try:
            result = self._call_blocking(slot, fn, args, kwargs, limit)
        except Exception as exc:
            _step.reset(token)
            cut = _cut_by_run(exc, limit, timeout)
            again = None if cut else self._retry_suspension(slot, started, exc, tries, retry)
            if again is None:
                self._record_failure(slot, started, exc, tries, cut)
                raise AssertionError("unreachable") from None
            return _from_record(self._suspend_blocking(slot, again), output_type)
        except BaseException:
            # A dying thread (or a pool thread reused by the next run) must not stay
            # "inside a step", where tool calls would no longer be recorded.
            _step.reset(token)
            raise
        _step.reset(token)
        return structure(self._record(slot, started, result, None, tries), output_type)

    def _call_blocking(
        self,
        slot: _Slot,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        limit: float | None,
    ) -> Any:
        def call() -> Any:
            result = fn(*args, **kwargs)
            if isinstance(result, Coroutine):
                result = self._await_from_thread(result)
            return result

        if limit is None:
            return call()
        # Python cannot stop a thread: the step runs on one of its own, which is left
        # behind (its result thrown away) if it overruns.
        box: list[tuple[bool, Any]] = []
        done = threading.Event()

        def target() -> None:
            try:
                box.append((True, call()))
            except BaseException as exc:
                box.append((False, exc))
            finally:
                done.set()

        ctx = contextvars.copy_context()
        thread = threading.Thread(
            target=ctx.run, args=(target,), name=f"ironflow-{slot.step_id}", daemon=True
        )
        thread.start()
        if not done.wait(limit):
            raise _timeout_error(slot, limit)
        ok, value = box[0]
        if ok:
            return value
        raise value

    def _await_from_thread(self, coro: Coroutine[Any, Any, Any]) -> Any:
        import asyncio

        if self.loop is not None and self.loop.is_running():
            return asyncio.run_coroutine_threadsafe(coro, self.loop).result()
        return asyncio.run(coro)

    async def run_async(
        self,
        slot: _Slot,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        output_type: Any,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Execute an unrecorded step without blocking the event loop.

        A sync ``fn`` and the durable write both run on the bounded pool.
        """
        if slot.entry is not None:
            return self.replayed(slot, output_type)
        if self.observer is None:
            return await self._execute_async(slot, fn, args, kwargs, output_type, retry, timeout)
        with self._watch(slot):
            return await self._execute_async(slot, fn, args, kwargs, output_type, retry, timeout)

    async def _execute_async(
        self,
        slot: _Slot,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        output_type: Any,
        retry: RetryPolicy | None,
        timeout: float | None,
    ) -> Any:
        import asyncio

        loop = asyncio.get_running_loop()
        tries = self._prior_tries(slot)
        started = time.time()
        limit = self._time_limit(timeout)
        self._flight(+1)
        try:
            token = _step.set(self._step_info(slot, len(tries)))
            try:
                result = await self._call_async(slot, fn, args, kwargs, limit)
            except Exception as exc:
                _step.reset(token)
                failure: Exception = exc
            except BaseException:
                _step.reset(token)  # cancelled or dying: leave the context as we found it
                raise
            else:
                _step.reset(token)
                output = await loop.run_in_executor(
                    self.pool, self._record, slot, started, result, None, tries
                )
                return structure(output, output_type)
            cut = _cut_by_run(failure, limit, timeout)
            again = None if cut else self._retry_suspension(slot, started, failure, tries, retry)
            if again is None:
                await loop.run_in_executor(
                    self.pool, self._record_failure, slot, started, failure, tries, cut
                )
                raise AssertionError("unreachable")
        finally:
            self._flight(-1)
        return _from_record(await self._suspend_async(slot, lambda: again), output_type)

    async def _call_async(
        self,
        slot: _Slot,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        limit: float | None,
    ) -> Any:
        import asyncio

        loop = asyncio.get_running_loop()
        if asyncio.iscoroutinefunction(fn):
            if limit is None:
                return await fn(*args, **kwargs)
            task = asyncio.ensure_future(fn(*args, **kwargs))
            return await self._within(slot, task, limit, cancel=True)
        ctx = contextvars.copy_context()
        if limit is None:
            result = await loop.run_in_executor(self.pool, lambda: ctx.run(fn, *args, **kwargs))
        else:
            # Not on the bounded pool: a sync tool that overruns keeps its thread.
            future: asyncio.Future[Any] = loop.create_future()

            def settle(ok: bool, value: Any) -> None:
                if not future.done():
                    if ok:
                        future.set_result(value)
                    else:
                        future.set_exception(value)

            def target() -> None:
                try:
                    value = ctx.run(fn, *args, **kwargs)
                except BaseException as exc:
                    loop.call_soon_threadsafe(settle, False, exc)
                else:
                    loop.call_soon_threadsafe(settle, True, value)

            threading.Thread(target=target, name=f"ironflow-{slot.step_id}", daemon=True).start()
            result = await self._within(slot, future, limit, cancel=False)
        if asyncio.iscoroutine(result):
            result = await result
        return result

    async def _within(
        self, slot: _Slot, future: asyncio.Future[Any], limit: float, *, cancel: bool
    ) -> Any:
        import asyncio

        done, _ = await asyncio.wait({future}, timeout=limit)
        if not done:
            if cancel:
                future.cancel()
            raise _timeout_error(slot, limit)
        return future.result()

    # -- failures and retries -----------------------------------------------------------

    def _retry_suspension(
        self,
        slot: _Slot,
        started: float,
        exc: Exception,
        tries: tuple[StepTry, ...],
        retry: RetryPolicy | None,
    ) -> Suspension | None:
        """The suspension until the step's next try, or None if it fails for good now.

        A step with retries logs each failed try, and why there is no next one.
        """
        failed = len(tries) + 1
        if retry is None or retry.retries == 0:
            return None
        said = f"run {self.run_id}: {slot.step_id}: try {failed} of {retry.retries + 1} failed"
        why = f"{type(exc).__name__}: {_clip(str(exc))}"
        if not retry.should_retry(exc, failed):
            last = failed > retry.retries
            log.warning("%s: %s; %s", said, why, "no tries left" if last else "not retried")
            return None
        if self.past_deadline():
            log.warning("%s: %s; not retried: the run's timeout has run out", said, why)
            return None
        delay = retry.delay(failed)
        log.warning("%s: %s; next try in %s", said, why, _seconds(delay))
        tried = StepTry(
            error=error_info(exc, slot.step_id), started_at=started, ended_at=time.time()
        )
        return Suspension(
            kind="retry",
            position=slot.position,
            step_id=slot.step_id,
            input=slot.input,
            wake_in=delay,
            deadline=self.deadline,
            tries=(*tries, tried),
        )

    def _record_failure(
        self,
        slot: _Slot,
        started: float,
        exc: Exception,
        tries: tuple[StepTry, ...],
        cut_by_run: bool = False,
    ) -> None:
        """Record the step as failed and raise: StepFailedError, or _RunTimeout if the
        run's own timeout is what cut it short."""
        try:
            self._record(slot, started, None, exc, tries)
        except StepFailedError:
            if cut_by_run:
                self._raise_stop(_RunTimeout(), exc)
            raise

    # -- suspending: sleeps, waits, retries ---------------------------------------------

    def suspend(self, base_id: str, input: Any, wait: Suspension, output_type: Any = Any) -> Any:
        """A step that waits (for a time, an event or a child run): its value, or an
        awaitable of it in an async run.

        ``wait`` gives the kind and what ends it; its position, step id and input are
        filled in here. Recorded: the recorded output. Else the store either finds the
        wait already over (the record is written and returned at once) or suspends the
        run, and this raises the engine's stop: the handler unwinds, and the worker
        lets go of the run until the store makes it pending again.
        """
        slot = self.begin(base_id, input)
        if wait.kind == "event":
            self._event_waits.add(slot.position)
        if self.is_async:
            return self._suspend_step_async(slot, wait, output_type)
        if slot.entry is not None:
            return self.replayed(slot, output_type)
        with self._watch(slot):
            record = self._suspend_blocking(slot, self._filled(slot, wait))
            return _from_record(record, output_type)

    async def _suspend_step_async(self, slot: _Slot, wait: Suspension, output_type: Any) -> Any:
        if slot.entry is not None:
            return self.replayed(slot, output_type)
        with self._watch(slot):
            # Filled under the suspension lock: the events a gathered sibling wait took
            # are in the record by then, so two waits never take the same event.
            record = await self._suspend_async(slot, lambda: self._filled(slot, wait))
            return _from_record(record, output_type)

    def _filled(self, slot: _Slot, wait: Suspension) -> Suspension:
        """``wait`` for this slot; resumed at the same wait, its start and wake-up time.

        A wait for an event skips the events every other wait of this run took, at any
        position: under ``asyncio.gather`` a later position may take its event first.
        Called where no other wait can take an event meanwhile (the handler's own
        thread in a sync run; under the suspension lock in an async one).
        """
        prior = self.run.suspension
        s = attrs.evolve(
            wait,
            position=slot.position,
            step_id=slot.step_id,
            input=slot.input,
            deadline=self.deadline,
        )
        if wait.kind == "event":
            outputs = (
                self.recorded[p].output
                for p in sorted(self._event_waits)
                if p != slot.position and p in self.recorded
            )
            taken = tuple(
                out["seq"]
                for out in outputs
                if isinstance(out, dict)
                and out.get("name") == wait.event
                and isinstance(out.get("seq"), int)
            )
            s = attrs.evolve(s, after_seq=self.run.event.seq, skip=taken)
        if (
            prior is not None
            and (prior.kind, prior.position, prior.step_id) == (s.kind, s.position, s.step_id)
            and prior.since
        ):
            # Woken early (a clock behind the store's): the wait keeps its own times.
            s = attrs.evolve(s, since=prior.since, wake_at=prior.wake_at, wake_in=None)
        return s

    def _suspend_blocking(self, slot: _Slot, suspension: Suspension) -> StepRecord:
        try:
            result = self.store.suspend_run(
                self.worker, self.run_id, suspension, attempt=self.attempt
            )
        except LeaseLostError as lost:
            self._raise_stop(_Abandon(), lost)
        except StoreError as failed:
            # The handler must not go on past a wait the store never took (a handler's
            # `except Exception` must not see this): stop, and leave the run leased, so it
            # is taken up again when the lease lapses.
            self._raise_stop(_Abandon(failed), failed)
        return self._suspended_or_record(slot, result)

    async def _suspend_async(self, slot: _Slot, suspension: Callable[[], Suspension]) -> StepRecord:
        import asyncio

        if self._suspend_lock is None:
            self._suspend_lock = asyncio.Lock()
        async with self._suspend_lock:
            if self.suspended:
                raise self.halt(_Suspend())
            # Let gathered sibling steps finish and be recorded before letting go.
            while self._in_flight > 0:
                waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                self._idle_waiters.append(waiter)
                await waiter
            if self.cancel_requested:
                raise self.halt(_Cancel())
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self.pool, self._suspend_blocking, slot, suspension())

    def _suspended_or_record(self, slot: _Slot, result: SuspendResult) -> StepRecord:
        if result.cancel_requested:
            self.cancel_requested = True
            raise self.halt(_Cancel())
        if result.suspended:
            self.suspended = True
            raise self.halt(_Suspend())
        record = result.step
        assert record is not None, "suspend_run neither suspended nor returned the record"
        self.recorded[slot.position] = record
        self.steps_executed += 1
        return record

    def _flight(self, delta: int) -> None:
        self._in_flight += delta
        if self._in_flight == 0:
            waiters, self._idle_waiters = self._idle_waiters, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    def step(
        self,
        base_id: str,
        input: Any,
        fn: Callable[..., Any],
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        output_type: Any = Any,
        *,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Run ``fn`` as the step ``base_id``: a value in a sync run, an awaitable in an async.

        ``retry`` tries a failing ``fn`` again later (the run sleeps in between);
        ``timeout`` fails a try that runs longer with :class:`StepTimeoutError`.
        """
        slot = self.begin(base_id, input)
        if self.is_async:
            return self.run_async(slot, fn, args, kwargs or {}, output_type, retry, timeout)
        if slot.entry is not None:
            return self.replayed(slot, output_type)  # run_blocking's first test, inlined
        return self.run_blocking(slot, fn, args, kwargs or {}, output_type, retry, timeout)

    # -- the whole run ------------------------------------------------------------------

    def _outcome_of(self, exc: BaseException | None, output: Any) -> Outcome:
        if self.suspended:
            # The store holds the run now, whatever else unwound the handler.
            return Outcome("suspended")
        if self.stopped is not None:
            # The first stop decides, whatever the handler caught, raised or returned.
            exc, output = self.stopped, None
        if exc is None:
            # A handler that returns without reaching steps its record holds took another
            # path than the recorded one: its output must not pass for that run's.
            unreached = [p for p in self.recorded if p >= self._next_position]
            if unreached:
                first = self.recorded[min(unreached)]
                drift = NonDeterminismError(
                    self.run_id,
                    first.position,
                    repr(first.id),
                    "no further step (the handler returned)",
                )
                # Kept like any divergence, so a replay can report it whole.
                return Outcome("failed", error=error_info(self.halt(drift)))
            try:
                output = to_json_value(output, f"run {self.run_id} output", "output")
            except NotSerializableError as bad:
                return Outcome("failed", error=error_info(bad))
            return Outcome("completed", output=output)
        if isinstance(exc, _Drain):
            return Outcome("released")
        if isinstance(exc, _Cancel):
            return Outcome("cancelled", error=ErrorInfo("Cancelled", "the run was cancelled"))
        if isinstance(exc, _Abandon):
            cause = exc.args[0] if exc.args else None
            return Outcome(
                "abandoned", error=error_info(cause) if isinstance(cause, Exception) else None
            )
        if isinstance(exc, _Suspend):
            return Outcome("suspended")
        if isinstance(exc, _PastRecord):
            return Outcome("past_record")
        if isinstance(exc, _RunTimeout):
            started = self.run.created_at
            limit = "" if self.deadline is None else f" of {self.deadline - started:g}s"
            return Outcome(
                "failed",
                error=ErrorInfo(
                    "RunTimeoutError",
                    f"run {self.run_id} ran past its timeout{limit} (counted from its start); "
                    "raise @agent(timeout=...) if it needs longer",
                    traceback=format_tb(exc.__cause__) if exc.__cause__ else None,
                ),
            )
        return Outcome("failed", error=error_info(exc))

    def _fails_for_good(self, exc: BaseException) -> bool:
        """Whether ``on_failure`` should run: the handler raised, and no stop is kept
        (after a divergence the record no longer fits the code, and more steps would
        only guess; a drain, cancel or lost lease is not a failure)."""
        return (
            self.on_failure is not None
            and isinstance(exc, Exception)
            and self.stopped is None
            and not self.suspended
        )

    def execute(self, handler: Callable[[], Any]) -> Outcome:
        """Run a sync handler to its end (or to a stop) in this thread."""
        try:
            return self._run_handler(handler)
        finally:
            self._drop_stop_frames()

    async def execute_async(self, handler: Callable[[], Awaitable[Any]]) -> Outcome:
        """Run an async handler to its end (or to a stop) on the running loop."""
        try:
            return await self._run_handler_async(handler)
        finally:
            self._drop_stop_frames()

    def _drop_stop_frames(self) -> None:
        """Let go of the frames the kept stop's traceback holds, once the outcome is decided.

        Those frames hold this execution (``self`` in :meth:`begin`), and the execution
        holds the stop: a cycle that kept the run and every recorded step alive until
        a full garbage collection, which then had all of them to walk (issue 13 target
        6). The stop itself stays, still sticky and still readable (``ironflow replay``
        reads the divergence); the outcome already holds what the tracebacks said.
        """
        seen: set[int] = set()
        pending: list[BaseException | None] = [self.stopped, self.past_record]
        while pending:
            exc = pending.pop()
            if exc is None or id(exc) in seen:
                continue
            seen.add(id(exc))
            exc.__traceback__ = None
            pending += (exc.__cause__, exc.__context__)

    def _run_handler(self, handler: Callable[[], Any]) -> Outcome:
        token = _execution.set(self)
        scope = self.observer.enter() if self.observer is not None else None
        try:
            output = handler()
        except (Exception, _Stop) as exc:
            if self._fails_for_good(exc):
                try:
                    self.on_failure(exc)  # type: ignore[misc]
                except (Exception, _Stop) as stop:
                    return self._outcome_of(stop, None)
            return self._outcome_of(exc, None)
        finally:
            _execution.reset(token)
            if self.observer is not None:
                self.observer.exit(scope)
        return self._outcome_of(None, output)

    async def _run_handler_async(self, handler: Callable[[], Awaitable[Any]]) -> Outcome:
        token = _execution.set(self)
        scope = self.observer.enter() if self.observer is not None else None
        try:
            output = await handler()
        except (Exception, _Stop) as exc:
            if self._fails_for_good(exc):
                try:
                    await self.on_failure(exc)  # type: ignore[misc]
                except (Exception, _Stop) as stop:
                    return self._outcome_of(stop, None)
            return self._outcome_of(exc, None)
        finally:
            _execution.reset(token)
            if self.observer is not None:
                self.observer.exit(scope)
        return self._outcome_of(None, output)

    def settle(self, outcome: Outcome, *, finish: Callable[..., object] | None = None) -> None:
        """Write the outcome to the store: finish the run, or give it back on a drain.

        A suspended run is already written: the store holds it until it is due.
        ``finish`` is called instead of ``store.finish_run``, with its arguments (the
        worker's, leasing its next run in the same transaction).
        """
        try:
            self._settle(outcome, finish or self.store.finish_run)
        finally:
            if self.observer is not None:
                self.observer.ended(outcome)

    def _settle(self, outcome: Outcome, finish: Callable[..., object]) -> None:
        try:
            if outcome.status == "released":
                self.store.release_run(self.worker, self.run_id, attempt=self.attempt)
            elif outcome.status not in ("abandoned", "suspended"):
                finish(
                    self.worker,
                    self.run_id,
                    status=outcome.status,
                    output=outcome.output,
                    error=outcome.error,
                    attempt=self.attempt,
                )
        except LeaseLostError:
            pass  # the run belongs to another worker now; its outcome is theirs to write


def _clip(text: str, width: int = 200) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def _seconds(delay: float) -> str:
    """A retry delay for the log: ``0.62 s``, ``12 s``, ``3 min``."""
    if delay < 10:
        return f"{delay:.2g} s"
    if delay < 120:
        return f"{delay:.0f} s"
    return f"{delay / 60:.0f} min"


def _from_record(record: StepRecord, output_type: Any) -> Any:
    """A recorded step's value: its output re-typed, or its failure raised again."""
    if record.status == "failed":
        err = record.error or ErrorInfo(type="Error", message="")
        raise StepFailedError(record.id, err.type, err.message)
    return structure(record.output, output_type)


def _cut_by_run(exc: BaseException, limit: float | None, timeout: float | None) -> bool:
    """Whether a step timed out at the run's deadline rather than at its own timeout."""
    return (
        isinstance(exc, StepTimeoutError)
        and limit is not None
        and (timeout is None or limit < timeout)
    )


def _timeout_error(slot: _Slot, limit: float) -> StepTimeoutError:
    return StepTimeoutError(
        f"step {slot.step_id!r} was still running after {limit:g}s and was given up; "
        "raise its timeout= if it needs longer (a sync tool's thread runs on in the "
        "background, its result thrown away)"
    )


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."

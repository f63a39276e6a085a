"""One attempt's state, its step positions and the replay check.

The base of :class:`~ironflow.replay._engine.Execution`: what an attempt holds (the
run, its records by position, the stop it keeps), how a step call takes its position
and step id and is checked against the record, and a recorded step's value. Separate
because every other part of the engine (executing, suspending, the run's outcome)
stands on it, and it stands on none of them: the rule "a step call takes the next
position, and the record must agree" lives here alone.
"""

from __future__ import annotations

import concurrent.futures
import inspect
import threading
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, NoReturn

from ironflow._pure._trace import TraceContext
from ironflow.errors import DefinitionError, NonDeterminismError, StepFailedError, StoreError
from ironflow.replay._current import StepInfo, _step
from ironflow.replay._observer import UNWATCHED, AttemptObserver, StepWatch
from ironflow.replay._recorded import Recorded, _Slot
from ironflow.replay._stops import _Abandon, _Cancel, _Drain, _PastRecord, _RunTimeout, _Suspend
from ironflow.store import ErrorInfo, LeasedRun, StepRecord, StepTry, Store, WorkerInfo
from ironflow.store._codec import structure
from ironflow.store._steplog import StepLog

__all__ = ["_Positions", "_from_record"]

if TYPE_CHECKING:
    # Imported where used instead: asyncio adds about 20 ms to `import ironflow`,
    # and a worker serving only sync agents never needs it.
    import asyncio


class _Positions:
    """An attempt's state; positions, the replay check and a recorded step's value."""

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
        #: Async runs: the step calls handed to the handler as coroutines whose body has
        #: not started yet, by position. One left at the handler's end was never awaited
        #: (a missing ``await``): the step never ran, and the run must not pass for done.
        self._unawaited: dict[int, tuple[str, Coroutine[Any, Any, Any]]] = {}
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

    def handed_out(self, slot: _Slot, call: Coroutine[Any, Any, Any]) -> Any:
        """Give the handler an async step call, remembered until its body starts
        (:meth:`started`): see :meth:`forgotten_calls`."""
        self._unawaited[slot.position] = (slot.step_id, call)
        return call

    def started(self, slot: _Slot) -> None:
        """An async step call's body began: it was awaited (or gathered, or made a task)."""
        self._unawaited.pop(slot.position, None)

    def forgotten_calls(self) -> list[str]:
        """The step ids of the async step calls the handler never awaited, now closed.

        Called once the handler has ended. A call still unstarted then was never awaited:
        its step did not run. Closing it spares the user Python's warning about an
        engine coroutine "never awaited", which names our code instead of theirs. One
        closed without starting (a task cancelled before its first turn) was handed to
        asyncio, not forgotten.
        """
        forgotten = []
        for step_id, call in self._unawaited.values():
            if inspect.getcoroutinestate(call) == inspect.CORO_CREATED:
                forgotten.append(step_id)
                call.close()
        self._unawaited.clear()
        return forgotten

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


def _from_record(record: StepRecord, output_type: Any) -> Any:
    """A recorded step's value: its output re-typed, or its failure raised again."""
    if record.status == "failed":
        err = record.error or ErrorInfo(type="Error", message="")
        raise StepFailedError(record.id, err.type, err.message)
    return structure(record.output, output_type)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."

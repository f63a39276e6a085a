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

import asyncio
import concurrent.futures
import contextvars
import threading
import time
import traceback
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import attrs

from ironflow.errors import (
    LeaseLostError,
    NonDeterminismError,
    NotSerializableError,
    StepFailedError,
)
from ironflow.store import ErrorInfo, LeasedRun, StepRecord, Store, WorkerInfo
from ironflow.store._codec import structure, to_json_value

__all__ = [
    "Execution",
    "Outcome",
    "StepInfo",
    "current_execution",
    "current_step",
]


@attrs.frozen
class StepInfo:
    """The step now executing, as a tool sees it through :func:`ironflow.current_step`."""

    run_id: str
    step_id: str
    position: int
    attempt: int

    @property
    def idempotency_key(self) -> str:
        """``run_id/step_id``: the same on every execution of this step, for external APIs."""
        return f"{self.run_id}/{self.step_id}"


_execution: contextvars.ContextVar[Execution | None] = contextvars.ContextVar(
    "ironflow_execution", default=None
)
_step: contextvars.ContextVar[StepInfo | None] = contextvars.ContextVar(
    "ironflow_step", default=None
)


def current_execution() -> Execution | None:
    """The run whose handler is executing in this context, unless a step is executing."""
    if _step.get() is not None:
        return None  # inside a step, tools are ordinary calls: steps do not nest
    return _execution.get()


def current_step() -> StepInfo | None:
    """The step executing in this context, or None outside a step."""
    return _step.get()


class _Stop(BaseException):
    """Engine control flow. A BaseException so a tool's ``except Exception`` cannot eat it."""


class _Drain(_Stop):
    """The worker is shutting down: stop at this step boundary and give the run back."""


class _Cancel(_Stop):
    """The run was cancelled: stop at this step boundary."""


class _Abandon(_Stop):
    """Another worker owns the run now: stop and write nothing more."""


@attrs.frozen
class Outcome:
    """How an execution ended: the run's new status, or ``released``/``abandoned``."""

    status: str
    output: Any = None
    error: ErrorInfo | None = None


@attrs.frozen
class _Slot:
    position: int
    step_id: str
    input: Any
    record: StepRecord | None


def error_info(exc: BaseException, step_id: str | None = None) -> ErrorInfo:
    if isinstance(exc, StepFailedError):
        return ErrorInfo(
            type=exc.error_type,
            message=exc.message,
            traceback=_format_tb(exc.__cause__) if exc.__cause__ else None,
            step_id=exc.step_id,
        )
    return ErrorInfo(
        type=type(exc).__name__, message=str(exc), traceback=_format_tb(exc), step_id=step_id
    )


def _format_tb(exc: BaseException) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))[-8000:]


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
        self.recorded: dict[int, StepRecord] = {s.position: s for s in leased.steps}
        self.cancel_requested = leased.run.cancel_requested
        self.steps_executed = 0
        self.steps_replayed = 0
        self._next_position = 0
        self._counts: dict[str, int] = {}

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

    def begin(self, base_id: str, input: Any) -> _Slot:
        """Take the next position for a step called ``base_id``; check it against the record.

        The step boundary is also where a drain, a cancellation or a lost lease stops
        the handler.
        """
        position = self._next_position
        record = self.recorded.get(position)
        if record is None:
            if self.stopping.is_set():
                raise _Drain()
            if self.cancel_requested:
                raise _Cancel()
        count = self._counts.get(base_id, 0) + 1
        self._counts[base_id] = count
        step_id = base_id if count == 1 else f"{base_id}#{count}"
        self._next_position = position + 1
        if record is not None:
            if record.id != step_id:
                raise NonDeterminismError(self.run_id, position, repr(record.id), repr(step_id))
            if record.input != input:
                raise NonDeterminismError(
                    self.run_id,
                    position,
                    f"{record.id!r} with input {_short(record.input)}",
                    f"{step_id!r} with input {_short(input)}",
                )
        return _Slot(position, step_id, input, record)

    # -- outcomes of one step -----------------------------------------------------------

    def replayed(self, slot: _Slot, output_type: Any) -> Any:
        record = slot.record
        assert record is not None
        self.steps_replayed += 1
        if record.status == "failed":
            err = record.error or ErrorInfo(type="Error", message="")
            raise StepFailedError(record.id, err.type, err.message)
        return structure(record.output, output_type)

    def _step_info(self, slot: _Slot) -> StepInfo:
        return StepInfo(self.run_id, slot.step_id, slot.position, self.attempt)

    def _record(self, slot: _Slot, started: float, output: Any, exc: BaseException | None) -> Any:
        """Record the step's result; return its JSON output, or raise StepFailedError."""
        if exc is None:
            try:
                output = to_json_value(output, f"step {slot.step_id!r} output", "output")
            except NotSerializableError as bad:
                exc = bad
        if exc is None:
            record = StepRecord(
                run_id=self.run_id,
                position=slot.position,
                id=slot.step_id,
                status="completed",
                input=slot.input,
                output=output,
                started_at=started,
                ended_at=time.time(),
                attempt=self.attempt,
            )
        else:
            record = StepRecord(
                run_id=self.run_id,
                position=slot.position,
                id=slot.step_id,
                status="failed",
                input=slot.input,
                output=None,
                started_at=started,
                ended_at=time.time(),
                error=error_info(exc, slot.step_id),
                attempt=self.attempt,
            )
        try:
            ack = self.store.record_step(self.worker, record)
        except LeaseLostError as lost:
            raise _Abandon() from lost
        self.recorded[slot.position] = record
        self.steps_executed += 1
        if ack.cancel_requested:
            self.cancel_requested = True
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
    ) -> Any:
        """Execute an unrecorded step on this thread and record it before returning."""
        if slot.record is not None:
            return self.replayed(slot, output_type)
        token = _step.set(self._step_info(slot))
        started = time.time()
        try:
            result = fn(*args, **kwargs)
            if asyncio.iscoroutine(result):
                result = self._await_from_thread(result)
        except Exception as exc:
            _step.reset(token)
            self._record(slot, started, None, exc)
            raise AssertionError("unreachable") from None
        except BaseException:
            # A dying thread (or a pool thread reused by the next run) must not stay
            # "inside a step", where tool calls would no longer be recorded.
            _step.reset(token)
            raise
        _step.reset(token)
        return structure(self._record(slot, started, result, None), output_type)

    def _await_from_thread(self, coro: Coroutine[Any, Any, Any]) -> Any:
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
    ) -> Any:
        """Execute an unrecorded step without blocking the event loop.

        A sync ``fn`` and the durable write both run on the bounded pool.
        """
        if slot.record is not None:
            return self.replayed(slot, output_type)
        loop = asyncio.get_running_loop()
        started = time.time()
        token = _step.set(self._step_info(slot))
        try:
            if asyncio.iscoroutinefunction(fn):
                result = await fn(*args, **kwargs)
            else:
                ctx = contextvars.copy_context()
                result = await loop.run_in_executor(self.pool, lambda: ctx.run(fn, *args, **kwargs))
                if asyncio.iscoroutine(result):
                    result = await result
        except Exception as exc:
            _step.reset(token)
            await loop.run_in_executor(self.pool, self._record, slot, started, None, exc)
            raise AssertionError("unreachable") from None
        except BaseException:
            _step.reset(token)  # cancelled or dying: leave the context as we found it
            raise
        _step.reset(token)
        output = await loop.run_in_executor(self.pool, self._record, slot, started, result, None)
        return structure(output, output_type)

    def step(
        self,
        base_id: str,
        input: Any,
        fn: Callable[..., Any],
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        output_type: Any = Any,
    ) -> Any:
        """Run ``fn`` as the step ``base_id``: a value in a sync run, an awaitable in an async."""
        slot = self.begin(base_id, input)
        if self.is_async:
            return self.run_async(slot, fn, args, kwargs or {}, output_type)
        return self.run_blocking(slot, fn, args, kwargs or {}, output_type)

    # -- the whole run ------------------------------------------------------------------

    def _outcome_of(self, exc: BaseException | None, output: Any) -> Outcome:
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
                return Outcome("failed", error=error_info(drift))
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
            return Outcome("abandoned")
        return Outcome("failed", error=error_info(exc))

    def execute(self, handler: Callable[[], Any]) -> Outcome:
        """Run a sync handler to its end (or to a stop) in this thread."""
        token = _execution.set(self)
        try:
            output = handler()
        except (Exception, _Stop) as exc:
            return self._outcome_of(exc, None)
        finally:
            _execution.reset(token)
        return self._outcome_of(None, output)

    async def execute_async(self, handler: Callable[[], Awaitable[Any]]) -> Outcome:
        """Run an async handler to its end (or to a stop) on the running loop."""
        token = _execution.set(self)
        try:
            output = await handler()
        except (Exception, _Stop) as exc:
            return self._outcome_of(exc, None)
        finally:
            _execution.reset(token)
        return self._outcome_of(None, output)

    def settle(self, outcome: Outcome) -> None:
        """Write the outcome to the store: finish the run, or give it back on a drain."""
        try:
            if outcome.status == "released":
                self.store.release_run(self.worker, self.run_id)
            elif outcome.status != "abandoned":
                self.store.finish_run(
                    self.worker,
                    self.run_id,
                    status=outcome.status,
                    output=outcome.output,
                    error=outcome.error,
                )
        except LeaseLostError:
            pass  # the run belongs to another worker now; its outcome is theirs to write


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."

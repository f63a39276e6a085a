"""Run a handler against its recorded steps.

The handler re-executes from the top on every attempt. Each step call takes the next
*position* (0, 1, 2, ... in call order) and a step id derived from its name. If the
record holds that position, the step returns the stored output without running; the
first unrecorded step runs and is durably recorded before the handler continues.

Why positions are taken at call time: under ``asyncio.gather`` steps finish in any
order, but they are *called* in program order, so ids and positions stay
deterministic however the scheduler interleaves them.

``Execution`` is built in layers, one job a module: ``_positions.py`` (the attempt's
state, positions and the replay check), ``_suspending.py`` (steps that wait),
``_executing.py`` (steps that run and are recorded), and this module, the run as a
whole: the handler called to its end and the outcome written to the store.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from ironflow.errors import (
    LeaseLostError,
    MissingAwaitError,
    NonDeterminismError,
    NotSerializableError,
)
from ironflow.replay._current import StepInfo, _execution, current_execution, current_step
from ironflow.replay._executing import _Executing
from ironflow.replay._outcome import Outcome, error_info, format_tb
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
from ironflow.store import ErrorInfo
from ironflow.store._codec import to_json_value

__all__ = [
    "Execution",
    "Outcome",
    "RetryPolicy",
    "StepInfo",
    "current_execution",
    "current_step",
    "error_info",
]


class Execution(_Executing):
    """One attempt at a leased run: hands out positions and records steps.

    Thread-safety: positions are handed out on the handler's own thread (or event
    loop); recording may happen on pool threads and goes through the thread-safe store.
    """

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
            try:
                output = await handler()
            finally:
                forgotten = self.forgotten_calls()
            if forgotten:
                raise MissingAwaitError(self.run_id, forgotten)
        except (Exception, _Stop) as exc:
            if forgotten and not isinstance(exc, MissingAwaitError | _Stop):
                # Likely the very cause ("'coroutine' object is not subscriptable"):
                # name the missing await first, the handler's error after it.
                # Its traceback is the handler's: `raised at` points at the user's line.
                exc = MissingAwaitError(self.run_id, forgotten, exc).with_traceback(
                    exc.__traceback__
                )
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

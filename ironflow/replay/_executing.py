"""Executing an unrecorded step and recording it, in a sync run or an async one.

A step runs (on the handler's thread, the loop, or the bounded pool), within its time
limit, and is durably recorded before the handler continues; a failed try either
suspends the run until its next try or is recorded as the step's failure. Separate
because this is the engine's one write path for a step's result, with its timeouts and
retries, apart from what decides positions (``_positions.py``) and how a run waits
(``_suspending.py``).
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from ironflow.errors import (
    LeaseLostError,
    NotSerializableError,
    StepFailedError,
    StepTimeoutError,
    StoreError,
)
from ironflow.replay._current import _step
from ironflow.replay._outcome import error_info
from ironflow.replay._positions import _from_record
from ironflow.replay._recorded import _Slot
from ironflow.replay._retry import RetryPolicy
from ironflow.replay._stops import _Abandon, _RunTimeout
from ironflow.replay._suspending import _Suspending
from ironflow.store import StepRecord, StepTry, Suspension
from ironflow.store._codec import structure, to_json_value

__all__ = ["_Executing"]

log = logging.getLogger("ironflow.replay")

if TYPE_CHECKING:
    # Imported where used instead: asyncio adds about 20 ms to `import ironflow`,
    # and a worker serving only sync agents never needs it.
    import asyncio


class _Executing(_Suspending):
    """The steps that run: executed, timed, retried, and recorded before returning."""

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
        if limit is None:
            return self._awaited(fn(*args, **kwargs))
        # Python cannot stop a thread: the step runs on one of its own, which is left
        # behind (its result thrown away) if it overruns.
        box: list[tuple[bool, Any]] = []
        done = threading.Event()

        def target() -> None:
            try:
                box.append((True, self._awaited(fn(*args, **kwargs))))
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

    def _awaited(self, result: Any) -> Any:
        """A sync step's result; if its function returned a coroutine, what that gives."""
        if isinstance(result, Coroutine):
            return self._await_from_thread(result)
        return result

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
        self.started(slot)
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
            call = self.run_async(slot, fn, args, kwargs or {}, output_type, retry, timeout)
            return self.handed_out(slot, call)
        if slot.entry is not None:
            return self.replayed(slot, output_type)  # run_blocking's first test, inlined
        return self.run_blocking(slot, fn, args, kwargs or {}, output_type, retry, timeout)


def _clip(text: str, width: int = 200) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def _seconds(delay: float) -> str:
    """A retry delay for the log: ``0.62 s``, ``12 s``, ``3 min``."""
    if delay < 10:
        return f"{delay:.2g} s"
    if delay < 120:
        return f"{delay:.0f} s"
    return f"{delay / 60:.0f} min"


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

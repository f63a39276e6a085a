"""The one place the engine and the worker report to tracing, metrics and logs.

A worker with observers asks each one, as an attempt at a run starts, for an
:class:`AttemptObserver` (or None: not interested). The engine then reports to it the
steps that attempt **executes**; a replayed step did not run and is not reported one by
one, the attempt's end carries how many there were (``Execution.steps_replayed``).

Why a small interface of its own: tracing (``ironflow.contrib.otel``), metrics
(``ironflow.contrib.prometheus``) and structured logs all need the same few moments, and
none of them may cost a run without observers anything. Without one, the engine's cost
is an ``is None`` test per executed step; no OpenTelemetry or Prometheus module is
imported.

Calls come from the worker's threads and event loop: an observer must be thread-safe.
It should not raise; if it does, :class:`Observers` logs it and the run goes on.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Literal

from ironflow._pure._trace import TraceContext

if TYPE_CHECKING:
    from ironflow.replay._engine import Execution, Outcome, StepInfo
    from ironflow.replay._positions import _Positions
    from ironflow.store import StepRecord, WorkerInfo

__all__ = ["AttemptObserver", "Observer", "Observers", "StepOutcome", "StepWatch"]

log = logging.getLogger("ironflow.observe")

#: How an executed step ended: recorded ``completed`` or ``failed``; ``suspended`` (the
#: run now sleeps or waits in the store: a sleep, a wait, a retry's backoff); ``stopped``
#: (nothing was recorded: the worker drained, the run was cancelled, the lease was lost,
#: the store failed, or the thread died).
StepOutcome = Literal["completed", "failed", "suspended", "stopped"]


class AttemptObserver:
    """Watches one attempt at a run. Every method does nothing unless overridden.

    Order: :meth:`enter` on the handler's thread or task before it runs and :meth:`exit`
    on the same one after; in between, :meth:`step_started` and :meth:`step_ended` for
    each executed step, on the thread or task that runs it (both on the same one);
    :meth:`ended` once the store holds the attempt's outcome.
    """

    def enter(self) -> Any:
        """The handler is about to run in this context; the result is given to :meth:`exit`."""
        return None

    def exit(self, scope: Any) -> None:
        """The handler returned or raised, in the context :meth:`enter` was called in."""

    def step_started(self, step: StepInfo, input: Any) -> Any:
        """An unrecorded step starts executing; the result is this step's token."""
        return None

    def step_note(self, token: Any, key: str, value: Any) -> None:
        """Code inside the step adds a fact (``provider``: the LLM provider's name)."""

    def step_trace(self, token: Any) -> TraceContext | None:
        """The trace context work started from inside this step joins (a child run)."""
        return None

    def step_ended(
        self,
        token: Any,
        step: StepInfo,
        outcome: StepOutcome,
        record: StepRecord | None,
        error: BaseException | None,
    ) -> None:
        """The step ended: ``record`` is its record if one was written."""

    def ended(self, outcome: Outcome) -> None:
        """The attempt is over and its outcome written (or the run given back)."""


class Observer:
    """Watches a worker: gives an :class:`AttemptObserver` to each attempt it cares about."""

    def attempt(
        self, execution: Execution, taken_from: WorkerInfo | None
    ) -> AttemptObserver | None:
        """An attempt at ``execution.run`` starts (``taken_from``: the dead or lapsed worker
        the run was taken over from, if it was). None: nothing to watch."""
        return None

    def close(self) -> None:
        """The worker stopped: flush what is buffered."""


class _Guarded(AttemptObserver):
    """The attempt observers of one attempt as one, each call guarded (see :class:`Observers`).

    Called in order (``exit`` and ``step_ended`` in reverse, so the first to enter is the
    last to leave). A part that raises is logged, once per method and observer type, and
    its result taken as None: the run goes on as if nobody watched that moment.
    """

    def __init__(self, parts: list[AttemptObserver], warned: set[tuple[str, str]]) -> None:
        self.parts = parts
        self._warned = warned

    def _call(self, part: AttemptObserver, method: str, *args: Any) -> Any:
        try:
            return getattr(part, method)(*args)
        except Exception:
            key = (type(part).__qualname__, method)
            if key not in self._warned:
                self._warned.add(key)
                log.exception(
                    "observer %s failed in %s; the run goes on (this is logged once)", *key
                )
            return None

    def enter(self) -> Any:
        return [self._call(p, "enter") for p in self.parts]

    def exit(self, scope: Any) -> None:
        for part, token in reversed(list(zip(self.parts, scope, strict=True))):
            self._call(part, "exit", token)

    def step_started(self, step: StepInfo, input: Any) -> Any:
        return [self._call(p, "step_started", step, input) for p in self.parts]

    def step_note(self, token: Any, key: str, value: Any) -> None:
        for part, t in zip(self.parts, token, strict=True):
            self._call(part, "step_note", t, key, value)

    def step_trace(self, token: Any) -> TraceContext | None:
        for part, t in zip(self.parts, token, strict=True):
            trace = self._call(part, "step_trace", t)
            if trace is not None:
                return trace  # type: ignore[no-any-return]
        return None

    def step_ended(
        self,
        token: Any,
        step: StepInfo,
        outcome: StepOutcome,
        record: StepRecord | None,
        error: BaseException | None,
    ) -> None:
        for part, t in reversed(list(zip(self.parts, token, strict=True))):
            self._call(part, "step_ended", t, step, outcome, record, error)

    def ended(self, outcome: Outcome) -> None:
        for part in self.parts:
            self._call(part, "ended", outcome)


class Observers(Observer):
    """The observers a worker holds, as one: the one place their calls are made from.

    Monitoring must never change what a run does, so every call is guarded: an observer
    that raises (a bug, an exporter in trouble) is logged once per method (per worker) and
    skipped, and the run, its steps and their records go on as they would unwatched.
    """

    def __init__(self, observers: list[Observer]) -> None:
        self.observers = observers
        self._warned: set[tuple[str, str]] = set()

    def attempt(
        self, execution: Execution, taken_from: WorkerInfo | None
    ) -> AttemptObserver | None:
        parts = []
        for o in self.observers:
            try:
                part = o.attempt(execution, taken_from)
            except Exception:
                log.exception("observer %s failed to watch an attempt", type(o).__qualname__)
                continue
            if part is not None:
                parts.append(part)
        return _Guarded(parts, self._warned) if parts else None

    def close(self) -> None:
        for observer in self.observers:
            try:
                observer.close()
            except Exception:
                log.exception("observer %s failed to close", type(observer).__qualname__)


class StepWatch:
    """One executed step seen by the attempt's observer, as a ``with`` block around it.

    The outcome is read when the block ends: the record the engine wrote for the step's
    position, else ``suspended`` if the run now waits in the store, else ``stopped``.
    """

    __slots__ = ("execution", "input", "observer", "step", "token")

    def __init__(
        self, execution: _Positions, observer: AttemptObserver, step: StepInfo, input: Any
    ) -> None:
        self.execution = execution
        self.observer = observer
        self.step = step
        self.input = input
        self.token: Any = None

    def __enter__(self) -> StepWatch:
        self.token = self.observer.step_started(self.step, self.input)
        self.execution._watches[self.step.position] = self
        return self

    def __exit__(self, kind: Any, error: BaseException | None, tb: Any) -> None:
        self.execution._watches.pop(self.step.position, None)
        record = self.execution.recorded.get(self.step.position)
        outcome: StepOutcome
        if record is not None:
            outcome = record.status
        elif self.execution.suspended:
            outcome = "suspended"
        else:
            outcome = "stopped"
        self.observer.step_ended(self.token, self.step, outcome, record, error)


class _Unwatched:
    """The ``with`` block of a step nobody watches: nothing at all."""

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, error: BaseException | None, tb: Any) -> None:
        return None


UNWATCHED = _Unwatched()

"""Traces of runs: one ``invoke_agent`` span per attempt, one span per executed step.

**One trace per run, across processes and crashes.** A run's attempts are children of
the context its event was emitted in (``Event.trace``: the emitter's span, or for a
child run its parent's ``spawn`` step), so every attempt, on any worker, joins that
trace. A run emitted with no context gets a trace id made from its run id, the same in
every process, and its attempts are that trace's roots.

**A lost attempt still has its span.** An attempt's span id is made from the run id and
the attempt number, so the worker that takes over a run from a dead one knows the id of
the span the dead worker never ended; it ends that span for it (status ``lost``, from the
dead attempt's first recorded step, or from the takeover, to the takeover), and the step
spans the dead worker exported before it died hang under it. The chosen ids go through
our tracer's own id generator; a tracer provider without one (not the SDK's) still gets
every span, with random ids, and a lost attempt's span is then missing.

**Replayed steps get no span**: they do not run. The attempt's span says how many
there were (``ironflow.run.steps_replayed``).
"""

from __future__ import annotations

import contextvars
import hashlib
import os
import threading
import time
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import Span, SpanContext, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from ironflow.contrib.otel import _genai as g
from ironflow.replay._engine import Execution, Outcome, StepInfo
from ironflow.replay._observer import AttemptObserver, Observer, StepOutcome
from ironflow.store import StepRecord, TraceContext, WorkerInfo

__all__ = ["Tracing", "attempt_span_id", "run_trace_id", "trace_context_of"]

#: The standard switch of the OpenTelemetry GenAI instrumentations for message contents.
CAPTURE_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
_PROPAGATOR = TraceContextTextMapPropagator()


def _digest(text: str, size: int) -> int:
    value = int.from_bytes(hashlib.sha256(text.encode()).digest()[:size], "big")
    return value or 1  # an all-zero id is invalid


def run_trace_id(run_id: str) -> int:
    """The trace id of a run emitted without a trace context: made from its id."""
    return _digest(f"ironflow.run/{run_id}", 16)


def attempt_span_id(run_id: str, attempt: int) -> int:
    """The span id of the ``invoke_agent`` span of one attempt at a run."""
    return _digest(f"ironflow.attempt/{run_id}/{attempt}", 8)


def trace_context_of(span_context: SpanContext) -> TraceContext:
    """A span's context as the W3C headers the store keeps."""
    return TraceContext(
        f"00-{span_context.trace_id:032x}-{span_context.span_id:016x}"
        f"-{int(span_context.trace_flags):02x}",
        span_context.trace_state.to_header() if span_context.trace_state else "",
    )


class _ChosenIds(IdGenerator):
    """Our tracer's id generator: the ids we chose for the next span on this thread,
    else the provider's own generator's."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.chosen = threading.local()

    def is_trace_id_random(self) -> bool:
        if getattr(self.chosen, "trace_id", None) is not None:
            return True  # a SHA-256 of a run id, whose last 80 bits are random
        return bool(getattr(self.inner, "is_trace_id_random", lambda: False)())

    def generate_span_id(self) -> int:
        span_id: int | None = getattr(self.chosen, "span_id", None)
        return span_id if span_id is not None else int(self.inner.generate_span_id())

    def generate_trace_id(self) -> int:
        trace_id: int | None = getattr(self.chosen, "trace_id", None)
        return trace_id if trace_id is not None else int(self.inner.generate_trace_id())


class Tracing(Observer):
    """Trace every attempt and executed step of the runs a worker serves.

    ``Worker(agents, observers=[Tracing()])``. Spans go to ``tracer_provider``, by
    default the global one (set up by ``ironflow worker`` from the ``OTEL_*`` variables,
    or by your application). ``capture_content`` records tool arguments and results and
    LLM messages on the spans; by default it follows
    ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`` (off unless ``true``), since
    they may hold personal data.
    """

    def __init__(
        self, *, tracer_provider: Any = None, capture_content: bool | None = None
    ) -> None:
        from ironflow import __version__

        provider = tracer_provider if tracer_provider is not None else trace.get_tracer_provider()
        self.provider = provider
        self.tracer = provider.get_tracer("ironflow", __version__, schema_url=g.SCHEMA_URL)
        self._ids: _ChosenIds | None = None
        # Our own tracer's ids only: the provider and other tracers are left as they are.
        if hasattr(self.tracer, "id_generator"):
            self._ids = _ChosenIds(self.tracer.id_generator)
            self.tracer.id_generator = self._ids
        if capture_content is None:
            capture_content = os.environ.get(CAPTURE_ENV, "").strip().lower() == "true"
        self.capture = capture_content

    # -- spans with chosen ids ---------------------------------------------------------

    def _start(
        self,
        name: str,
        parent: otel_context.Context,
        *,
        span_id: int | None,
        trace_id: int | None,
        attributes: dict[str, Any],
        start_time: int | None = None,
    ) -> Span:
        ids = self._ids
        if ids is None:
            return self.tracer.start_span(
                name, parent, SpanKind.INTERNAL, attributes, start_time=start_time
            )
        ids.chosen.span_id, ids.chosen.trace_id = span_id, trace_id
        try:
            return self.tracer.start_span(
                name, parent, SpanKind.INTERNAL, attributes, start_time=start_time
            )
        finally:
            ids.chosen.span_id = ids.chosen.trace_id = None

    def parent_of(self, execution: Execution) -> tuple[otel_context.Context, int | None]:
        """The context a run's attempts are children of, and the trace id to use when it
        has none (a run emitted without a trace context)."""
        run = execution.run
        carried = run.event.trace
        if carried is not None:
            carrier = {"traceparent": carried.traceparent}
            if carried.tracestate:
                carrier["tracestate"] = carried.tracestate
            found = _PROPAGATOR.extract(carrier, context=otel_context.Context())
            if trace.get_current_span(found).get_span_context().is_valid:
                return found, None
        return otel_context.Context(), run_trace_id(run.id)

    # -- the observer ------------------------------------------------------------------

    def attempt(
        self, execution: Execution, taken_from: WorkerInfo | None
    ) -> AttemptObserver | None:
        run = execution.run
        parent, trace_id = self.parent_of(execution)
        attributes = g.attempt_attributes(
            agent=run.agent,
            run_id=run.id,
            attempt=run.attempt,
            event=run.event.name,
            parent_id=run.parent_id,
            worker=execution.worker.id,
        )
        if taken_from is not None:
            attributes[g.RUN_TAKEN_FROM] = taken_from.id
            if taken_from.id != execution.worker.id and run.attempt > 1:
                self._end_lost_attempt(execution, parent, trace_id, taken_from)
        span = self._start(
            f"invoke_agent {run.agent}",
            parent,
            span_id=attempt_span_id(run.id, run.attempt),
            trace_id=trace_id,
            attributes=attributes,
        )
        return _Attempt(self, span, execution)

    def _end_lost_attempt(
        self,
        execution: Execution,
        parent: otel_context.Context,
        trace_id: int | None,
        taken_from: WorkerInfo,
    ) -> None:
        """End the span of the attempt before this one, whose worker died holding it."""
        run = execution.run
        lost = run.attempt - 1
        now = time.time_ns()
        starts = [s.started_at for s in execution.recorded.values() if s.attempt == lost]
        started = min(int(min(starts) * 1e9), now) if starts else now
        attributes = g.attempt_attributes(
            agent=run.agent,
            run_id=run.id,
            attempt=lost,
            event=run.event.name,
            parent_id=run.parent_id,
            worker=taken_from.id,
        )
        attributes[g.RUN_STATUS] = "lost"
        span = self._start(
            f"invoke_agent {run.agent}",
            parent,
            span_id=attempt_span_id(run.id, lost),
            trace_id=trace_id,
            attributes=attributes,
            start_time=started,
        )
        span.set_status(
            Status(
                StatusCode.ERROR,
                f"worker {taken_from.id} (pid {taken_from.pid} on {taken_from.host}) died or "
                f"stalled holding this attempt; worker {execution.worker.id} took the run over",
            )
        )
        span.set_attribute(g.ERROR_TYPE, "lost")
        span.end(end_time=now)

    def close(self) -> None:
        flush = getattr(self.provider, "force_flush", None)
        if flush is not None:
            flush()


class _Step:
    """An executed step's span, and the context it was made current with."""

    __slots__ = ("kind", "span", "token")

    def __init__(
        self, span: Span, kind: str, token: contextvars.Token[otel_context.Context]
    ) -> None:
        self.span = span
        self.kind = kind
        self.token = token


class _Attempt(AttemptObserver):
    """One attempt's ``invoke_agent`` span and the spans of the steps it executes."""

    def __init__(self, tracing: Tracing, span: Span, execution: Execution) -> None:
        self.tracing = tracing
        self.span = span
        self.execution = execution
        self.context = trace.set_span_in_context(span, otel_context.Context())

    def enter(self) -> Any:
        # Spans the handler's own code makes (outside steps) are this attempt's children.
        return otel_context.attach(self.context)

    def exit(self, scope: Any) -> None:
        otel_context.detach(scope)

    def step_started(self, step: StepInfo, input: Any) -> Any:
        capture = self.tracing.capture
        name, kind = g.step_span(step.step_id, input)
        attributes: dict[str, Any] = {
            g.STEP_ID: step.step_id,
            g.STEP_POSITION: step.position,
            g.RUN_ID: step.run_id,
        }
        if step.retry:
            attributes[g.STEP_RETRY] = step.retry
        if kind == "tool":
            tool = name.removeprefix("execute_tool ")
            attributes.update(g.tool_attributes(tool, step.idempotency_key, input, capture))
        elif kind == "chat":
            attributes.update(g.chat_start_attributes(input, capture))
        span = self.tracing.tracer.start_span(
            name,
            self.context,
            SpanKind.CLIENT if kind == "chat" else SpanKind.INTERNAL,
            attributes,
        )
        # The step's body (a tool calling an instrumented HTTP client) nests under it.
        return _Step(span, kind, otel_context.attach(trace.set_span_in_context(span)))

    def step_note(self, token: Any, key: str, value: Any) -> None:
        if key == "provider" and isinstance(token, _Step) and token.kind == "chat":
            token.span.set_attribute(g.PROVIDER, str(value))

    def step_trace(self, token: Any) -> TraceContext | None:
        if not isinstance(token, _Step):
            return None
        return trace_context_of(token.span.get_span_context())

    def step_ended(
        self,
        token: Any,
        step: StepInfo,
        outcome: StepOutcome,
        record: StepRecord | None,
        error: BaseException | None,
    ) -> None:
        assert isinstance(token, _Step)
        otel_context.detach(token.token)
        span = token.span
        attributes: dict[str, Any] = {g.STEP_OUTCOME: outcome}
        if record is not None and record.status == "completed":
            if token.kind == "chat":
                attributes.update(g.chat_end_attributes(record.output, self.tracing.capture))
            elif token.kind == "tool" and self.tracing.capture:
                attributes[g.TOOL_RESULT] = g._json(record.output)
        if record is not None and record.status == "failed" and record.error is not None:
            attributes[g.ERROR_TYPE] = record.error.type
            span.set_status(Status(StatusCode.ERROR, record.error.message[:1000]))
        elif outcome == "stopped":
            kind = type(error).__name__ if error is not None else "stopped"
            attributes[g.ERROR_TYPE] = kind
            span.set_status(Status(StatusCode.ERROR, f"the step was stopped ({kind})"))
        span.set_attributes(attributes)  # one lock, not one per attribute
        span.end()

    def ended(self, outcome: Outcome) -> None:
        span = self.span
        span.set_attribute(g.RUN_STATUS, outcome.status)
        span.set_attribute(g.RUN_EXECUTED, self.execution.steps_executed)
        span.set_attribute(g.RUN_REPLAYED, self.execution.steps_replayed)
        if outcome.status == "failed":
            err = outcome.error
            span.set_attribute(g.ERROR_TYPE, err.type if err is not None else "failed")
            span.set_status(Status(StatusCode.ERROR, (err.message if err else "")[:1000]))
        span.end()


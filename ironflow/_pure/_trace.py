"""W3C trace context (https://www.w3.org/TR/trace-context/): the ``traceparent`` and
``tracestate`` headers an emitter passes along so that a run joins the emitter's trace.

Plain text in, a checked :class:`TraceContext` out; no OpenTelemetry import. The store
keeps a context with the event it came with, so every attempt of the run, on any
worker, after any crash, can join the same trace.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping

import attrs

from ironflow._pure._limits import MAX_TRACESTATE_CHARS
from ironflow.errors import InvalidInputError

__all__ = [
    "TraceContext",
    "ambient_trace",
    "check_trace",
    "parse_trace",
    "tracing_configured",
]

# version "-" trace-id "-" parent-id "-" trace-flags; version 00 has nothing after the
# flags, a later version may add fields after a "-" (read as version 00, as the spec says).
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")


@attrs.frozen
class TraceContext:
    """The W3C trace context an event was emitted in: its ``traceparent`` header (version
    ``00``, lower-case hex) and its ``tracestate`` header (``""`` for none)."""

    traceparent: str
    tracestate: str = ""

    @property
    def trace_id(self) -> str:
        """The 32 hex digits of the trace id."""
        return self.traceparent[3:35]

    @property
    def span_id(self) -> str:
        """The 16 hex digits of the emitter's span (the parent of what the run does)."""
        return self.traceparent[36:52]


def parse_trace(traceparent: str | None, tracestate: str | None = None) -> TraceContext | None:
    """The context of these two header values, or None if ``traceparent`` is absent or
    not valid (the spec says to ignore an invalid one, and its ``tracestate`` with it)."""
    if not isinstance(traceparent, str):
        return None
    m = _TRACEPARENT.fullmatch(traceparent.strip())
    if m is None:
        return None
    version, trace_id, span_id, flags, rest = m.groups()
    if version == "ff" or (version == "00" and rest is not None):
        return None
    if trace_id == "0" * 32 or span_id == "0" * 16:
        return None
    state = tracestate.strip() if isinstance(tracestate, str) else ""
    if len(state) > MAX_TRACESTATE_CHARS or not state.isascii() or not state.isprintable():
        state = ""
    return TraceContext(f"00-{trace_id}-{span_id}-{flags}", state)


def check_trace(trace: TraceContext | None, where: str) -> TraceContext | None:
    """``trace`` if it is None or a valid context; raise InvalidInputError naming ``where``."""
    if trace is None:
        return None
    if not isinstance(trace, TraceContext):
        raise InvalidInputError(f"{where}: trace must be a TraceContext or None, not {trace!r}")
    checked = parse_trace(trace.traceparent, trace.tracestate)
    if checked is None or checked != trace:
        raise InvalidInputError(
            f"{where}: trace {trace!r} is not a W3C trace context: traceparent must look like "
            "'00-<32 hex trace id>-<16 hex span id>-<2 hex flags>' (not all zeros), and "
            f"tracestate be printable ASCII of at most {MAX_TRACESTATE_CHARS} characters"
        )
    return trace


def ambient_trace() -> TraceContext | None:
    """The trace context an emit made here should carry, or None.

    The current OpenTelemetry span, if this process uses OpenTelemetry (it is imported
    already: this never imports it), else the ``TRACEPARENT``/``TRACESTATE`` variables
    (OpenTelemetry's environment carrier, how a script hands its context to a command).
    """
    api = sys.modules.get("opentelemetry.trace")
    if api is not None:
        ctx = api.get_current_span().get_span_context()
        if ctx.is_valid:
            state = ctx.trace_state.to_header() if ctx.trace_state else ""
            return parse_trace(
                f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}", state
            )
    return parse_trace(os.environ.get("TRACEPARENT"), os.environ.get("TRACESTATE"))


def tracing_configured(environ: Mapping[str, str] | None = None) -> bool:
    """Whether the standard ``OTEL_*`` variables ask for traces to be exported.

    ``OTEL_SDK_DISABLED=true`` or ``OTEL_TRACES_EXPORTER=none`` say no; otherwise an
    ``OTEL_TRACES_EXPORTER`` or an OTLP endpoint (``OTEL_EXPORTER_OTLP_ENDPOINT``,
    ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) says yes. Read before anything is imported,
    so a process that exports nothing loads no OpenTelemetry.
    """
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporters:
        return exporters != "none"
    return bool(
        env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
        or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
    )

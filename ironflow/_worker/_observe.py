"""What Ironflow's commands watch with: traces from the ``OTEL_*`` variables.

Read before anything is imported, so a command whose environment asks for nothing
loads no OpenTelemetry at all.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ironflow._pure._trace import TraceContext, ambient_trace, tracing_configured
from ironflow.errors import MissingExtraError

__all__ = ["emitting", "start_tracing"]

log = logging.getLogger("ironflow.observe")


def start_tracing(service_name: str) -> Any | None:
    """The tracer provider this process exports with, if the environment asks for traces.

    None when no ``OTEL_*`` variable asks; a warning (not a silent skip) when they ask
    but the ``otel`` extra is not installed. Call ``shutdown()`` on it before exiting.
    """
    if not tracing_configured():
        return None
    try:
        from ironflow.contrib.otel._setup import configure_tracing
    except (ImportError, MissingExtraError):
        log.warning(
            "the OTEL_* variables ask for traces, but OpenTelemetry is not installed: "
            "pip install 'ironflow[otel]' (nothing is traced until then)"
        )
        return None
    return configure_tracing(service_name)


@contextmanager
def emitting(provider: Any | None, name: str) -> Iterator[TraceContext | None]:
    """The trace context to emit ``name`` with: inside an ``emit {name}`` span when this
    process traces (``provider``), else the ambient context (``TRACEPARENT``), if any."""
    if provider is None:
        yield ambient_trace()
        return
    from opentelemetry.trace import SpanKind
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    outer = ambient_trace()  # the caller's span, or TRACEPARENT: the emit span's parent
    carrier = {} if outer is None else {"traceparent": outer.traceparent}
    if outer is not None and outer.tracestate:
        carrier["tracestate"] = outer.tracestate
    tracer = provider.get_tracer("ironflow")
    with tracer.start_as_current_span(
        f"emit {name}",
        context=TraceContextTextMapPropagator().extract(carrier),
        kind=SpanKind.PRODUCER,
        attributes={"ironflow.event.name": name},
    ):
        yield ambient_trace()

"""OpenTelemetry traces of runs (``pip install 'ironflow[otel]'``).

``Tracing()`` is a worker observer: ``Worker(agents, observers=[Tracing()])``, or
``ironflow worker`` with the standard ``OTEL_*`` variables set. Each attempt at a run is
an ``invoke_agent {agent}`` span, each executed tool an ``execute_tool {tool}`` span, each
``ctx.llm`` call a ``chat {model}`` span (OpenTelemetry GenAI semantic conventions,
semantic-conventions v1.41.0); sleeps, waits, approvals, child runs and memory appends
have spans of their own. One trace per run, across workers and crashes.
"""

try:
    import opentelemetry.sdk
    import opentelemetry.trace  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised without the extra installed
    from ironflow.errors import MissingExtraError

    raise MissingExtraError("ironflow.contrib.otel", "opentelemetry-sdk", "otel") from exc

from ironflow.contrib.otel._genai import SEMCONV_VERSION
from ironflow.contrib.otel._tracing import Tracing, attempt_span_id, run_trace_id

__all__ = ["SEMCONV_VERSION", "Tracing", "attempt_span_id", "run_trace_id"]

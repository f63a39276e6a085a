"""A tracer provider set up from the standard ``OTEL_*`` variables, for Ironflow's commands.

``ironflow worker``, ``ironflow serve`` and ``ironflow emit`` call :func:`configure_tracing`
when :func:`~ironflow._pure._trace.tracing_configured` says the environment asks for
traces; an application that sets up OpenTelemetry itself passes its own provider to
:class:`~ironflow.contrib.otel.Tracing` instead.

What is read: ``OTEL_TRACES_EXPORTER`` (``otlp``, the default, and ``console``; a
comma-separated list), the ``OTEL_EXPORTER_OTLP_*`` variables (endpoint, headers,
protocol: ``http/protobuf``, the default, or ``grpc`` when its exporter package is
installed), ``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_SAMPLER``
and ``OTEL_BSP_*`` (the batch processor). Spans are exported in batches, off the steps'
path.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

from ironflow.errors import ConfigError

__all__ = ["configure_tracing"]


def _otlp_exporter() -> Any:
    protocol = (
        os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    ).strip()
    if protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    if protocol == "grpc":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # type: ignore[import-not-found,unused-ignore]
                OTLPSpanExporter as GrpcExporter,
            )
        except ImportError:
            raise ConfigError(
                "OTEL_EXPORTER_OTLP_PROTOCOL=grpc needs the gRPC exporter: pip install "
                "opentelemetry-exporter-otlp-proto-grpc, or use http/protobuf (ironflow[otel] "
                "installs that one; collectors take it on port 4318)"
            ) from None
        return GrpcExporter()
    raise ConfigError(
        f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r} is not one Ironflow can export with: "
        "use http/protobuf (the default) or grpc"
    )


def configure_tracing(service_name: str) -> TracerProvider:
    """Make the global tracer provider export as the ``OTEL_*`` variables say; return it.

    ``service_name`` names this process in the traces unless ``OTEL_SERVICE_NAME`` (or
    ``service.name`` in ``OTEL_RESOURCE_ATTRIBUTES``) does. Call ``shutdown()`` on the
    result before the process exits, so the last spans are sent.
    """
    resource = Resource.create({})
    if not str(resource.attributes.get(SERVICE_NAME, "")) or str(
        resource.attributes.get(SERVICE_NAME)
    ).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: service_name}))
    provider = TracerProvider(resource=resource)
    names = [
        n.strip().lower()
        for n in os.environ.get("OTEL_TRACES_EXPORTER", "otlp").split(",")
        if n.strip()
    ]
    for name in names:
        if name == "otlp":
            provider.add_span_processor(BatchSpanProcessor(_otlp_exporter()))
        elif name == "console":
            # stderr: stdout is the command's own output (emit --json, "worker ready")
            provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter(out=sys.stderr)))
        elif name != "none":
            raise ConfigError(
                f"OTEL_TRACES_EXPORTER names {name!r}; Ironflow exports to otlp or console "
                "(or none)"
            )
    trace.set_tracer_provider(provider)
    return provider

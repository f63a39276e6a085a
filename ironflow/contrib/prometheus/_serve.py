"""A registry for a whole process, and a port to serve it on."""

from __future__ import annotations

from typing import Any

from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    start_http_server,
)

from ironflow.errors import ConfigError

__all__ = ["MetricsServer", "process_registry", "serve_metrics"]


def process_registry() -> CollectorRegistry:
    """A fresh registry with the process's own metrics (CPU, memory, open files, GC),
    as prometheus-client's default registry has them."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


class MetricsServer:
    """``/metrics`` served on a daemon thread: its ``port``, and :meth:`close`."""

    def __init__(self, server: Any, port: int) -> None:
        self._server = server
        self.port = port

    def close(self) -> None:
        """Stop serving and release the port. Idempotent."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def serve_metrics(registry: CollectorRegistry, host: str, port: int) -> MetricsServer:
    """Serve ``registry`` at ``http://host:port/metrics`` on a daemon thread (port 0 picks
    a free one; the result says which)."""
    try:
        server, _thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise ConfigError(
            f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}; pick another "
            "--metrics-port"
        ) from None
    return MetricsServer(server, int(server.server_address[1]))

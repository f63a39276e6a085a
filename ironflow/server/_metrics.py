"""``GET /metrics``: the server's Prometheus metrics, what its store holds and its commits.

Behind the token like ``/api/v1`` (Prometheus sends it with ``authorization:
credentials:``), unless the server runs with ``--dev``; ``ironflow serve --metrics-port``
serves the same registry on a port of its own, without the token, for a scraper on a
private network. Without the ``prometheus`` extra the path answers 501 saying so.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

__all__ = ["METRICS_PATH", "add_metrics", "metrics_registry"]

METRICS_PATH = "/metrics"


def metrics_registry(store: Any) -> tuple[Any, Any] | None:
    """A registry with the process's and ``store``'s metrics, and the StoreMetrics to close;
    None without prometheus-client."""
    try:
        from ironflow.contrib.prometheus import StoreMetrics, process_registry
    except ImportError:
        return None
    registry = process_registry()
    return registry, StoreMetrics(store, registry)


def add_metrics(app: web.Application, registry: Any | None) -> None:
    """Serve ``registry`` at ``/metrics`` on ``app`` (501 when there is none)."""

    async def metrics(request: web.Request) -> web.StreamResponse:
        if registry is None:
            return web.json_response(
                {
                    "error": "no_metrics",
                    "message": "this server has no Prometheus metrics: install them with "
                    "pip install 'ironflow[prometheus]' and restart it",
                },
                status=501,
            )
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        # Off the event loop: the store's census scans the runs table.
        body = await asyncio.get_running_loop().run_in_executor(None, generate_latest, registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app.router.add_get(METRICS_PATH, metrics)

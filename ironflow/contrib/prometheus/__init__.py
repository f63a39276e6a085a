"""Prometheus metrics of workers and stores (``pip install 'ironflow[prometheus]'``).

``Metrics()`` is a worker observer counting runs, steps and tokens; ``StoreMetrics``
reads what an ``LmdbStore`` holds at each scrape and times its commits. ``ironflow serve``
serves both at ``/metrics``; ``ironflow worker --metrics-port`` serves a worker's. The
metric names are listed in ``_metrics.py`` and in the README's "Observability" section.
"""

try:
    import prometheus_client  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised without the extra installed
    from ironflow.errors import MissingExtraError

    raise MissingExtraError(
        "ironflow.contrib.prometheus", "prometheus-client", "prometheus"
    ) from exc

from ironflow.contrib.prometheus._metrics import (
    LIVE_STATUSES,
    Metrics,
    StoreMetrics,
    step_label,
)
from ironflow.contrib.prometheus._serve import MetricsServer, process_registry, serve_metrics

__all__ = [
    "LIVE_STATUSES",
    "Metrics",
    "MetricsServer",
    "StoreMetrics",
    "process_registry",
    "serve_metrics",
    "step_label",
]

"""The contrib wrappers' public names, and that `import ironflow` loads no framework."""

from __future__ import annotations

import subprocess
import sys


def test_pydantic_ai_surface() -> None:
    """ironflow.contrib.pydantic_ai exports what the README shows (add, never remove)."""
    from ironflow.contrib import pydantic_ai

    assert {"IronflowAgent", "IronflowModel"} <= set(pydantic_ai.__all__)
    assert pydantic_ai.__all__ == sorted(pydantic_ai.__all__)


def test_openai_agents_surface() -> None:
    """ironflow.contrib.openai_agents exports what the README shows (add, never remove)."""
    from ironflow.contrib import openai_agents

    assert {"IronflowRunner"} <= set(openai_agents.__all__)
    assert openai_agents.__all__ == sorted(openai_agents.__all__)


def test_observability_surfaces() -> None:
    """ironflow.contrib.otel and .prometheus export what the README shows (add, never remove)."""
    from ironflow.contrib import otel, prometheus

    assert {"Tracing", "SEMCONV_VERSION"} <= set(otel.__all__)
    assert {"Metrics", "StoreMetrics", "serve_metrics"} <= set(prometheus.__all__)
    assert otel.__all__ == sorted(otel.__all__)
    assert prometheus.__all__ == sorted(prometheus.__all__)


def test_import_ironflow_loads_no_agent_framework() -> None:
    """The frameworks are loaded by ironflow.contrib.<name> only, never by `import ironflow`."""
    probe = (
        "import sys, ironflow, ironflow.llm\n"
        "heavy = ['pydantic_ai', 'agents', 'ironflow.contrib', 'opentelemetry',\n"
        "         'prometheus_client']\n"
        "print(' '.join(m for m in heavy if m in sys.modules))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert proc.stdout.strip() == ""

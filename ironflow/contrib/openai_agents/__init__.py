"""Durable OpenAI Agents SDK runs: ``IronflowRunner`` (``pip install 'ironflow[openai-agents]'``).

``await IronflowRunner.run(agent, input)`` inside an ``@agent`` handler is
``Runner.run`` with every model call the step ``llm.<model>``, every function tool call
``tool.<name>``, every handoff ``handoff.<name>`` and every guardrail check
``guardrail.<name>``; outside a run it is ``Runner``.

Built on the SDK's public extension points (``Model``, ``ModelProvider``, the tools',
handoffs' and guardrails' callables), on durable clones of the user's agents.
"""

try:
    import agents  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised without the extra installed
    from ironflow.errors import MissingExtraError

    raise MissingExtraError(
        "ironflow.contrib.openai_agents", "openai-agents", "openai-agents"
    ) from exc

from ironflow.contrib.openai_agents._model import StepModel, StepModelProvider
from ironflow.contrib.openai_agents._runner import IronflowRunner

__all__ = ["IronflowRunner", "StepModel", "StepModelProvider"]

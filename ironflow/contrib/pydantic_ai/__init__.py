"""Durable Pydantic AI agents: ``IronflowAgent(agent)`` (``pip install 'ironflow[pydantic-ai]'``).

Inside an ``@agent`` handler, the wrapped agent's model requests are the steps
``llm.<model>``, its tool calls ``tool.<name>`` and its MCP server calls
``mcp.<server id>.<tool>``; outside a run it is the agent it wraps.

Built on Pydantic AI's public wrappers (``WrapperAgent``, ``WrapperModel``,
``WrapperToolset``), as its own durable-execution integrations are.
"""

try:
    import pydantic_ai  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised without the extra installed
    from ironflow.errors import MissingExtraError

    raise MissingExtraError(
        "ironflow.contrib.pydantic_ai", "pydantic-ai-slim", "pydantic-ai"
    ) from exc

from ironflow.contrib.pydantic_ai._agent import IronflowAgent, ToolCallMode
from ironflow.contrib.pydantic_ai._model import IronflowModel
from ironflow.contrib.pydantic_ai._toolset import MCPStepToolset, ToolStepToolset

__all__ = ["IronflowAgent", "IronflowModel", "MCPStepToolset", "ToolCallMode", "ToolStepToolset"]

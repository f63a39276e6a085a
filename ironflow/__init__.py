"""Ironflow: durable AI agents in plain Python.

Decorate functions with ``@agent`` and ``@tool``; every tool call inside a run is a
recorded step in an embedded LMDB store. Kill the worker at any moment, start it
again, and the run continues from the last completed step.
"""

from ironflow._agent._context import AgentContext
from ironflow._agent._dsl import AgentDefinition, Memory, ToolDefinition, agent, tool
from ironflow._agent._memory import AgentMemory, ProjectionDefinition, projection
from ironflow._agent._primitives import ApproveResult, ChildRun
from ironflow._cli._client import Client
from ironflow._worker._worker import Worker
from ironflow.errors import (
    ConcurrencyError,
    DefinitionError,
    IronflowError,
    NonDeterminismError,
    NonRetryableError,
    NotSerializableError,
    RunTimeoutError,
    StepFailedError,
    StepTimeoutError,
    ToolInputError,
)
from ironflow.replay import StepInfo, current_step
from ironflow.store import Event, LmdbStore, Run, StepRecord, Store

__version__ = "0.1.0"

__all__ = [
    "AgentContext",
    "AgentDefinition",
    "AgentMemory",
    "ApproveResult",
    "ChildRun",
    "Client",
    "ConcurrencyError",
    "DefinitionError",
    "Event",
    "IronflowError",
    "LmdbStore",
    "Memory",
    "NonDeterminismError",
    "NonRetryableError",
    "NotSerializableError",
    "ProjectionDefinition",
    "Run",
    "RunTimeoutError",
    "StepFailedError",
    "StepInfo",
    "StepRecord",
    "StepTimeoutError",
    "Store",
    "ToolDefinition",
    "ToolInputError",
    "Worker",
    "agent",
    "current_step",
    "projection",
    "tool",
]

"""Ironflow: durable AI agents in plain Python.

Decorate functions with ``@agent`` and ``@tool``; every tool call inside a run is a
recorded step in an embedded LMDB store. Kill the worker at any moment, start it
again, and the run continues from the last completed step.

Every error Ironflow raises is exported here too (the tree is drawn in
:mod:`ironflow.errors`), so ``except ironflow.RunNotFoundError`` needs no other import.
"""

from ironflow._agent._context import AgentContext
from ironflow._agent._dsl import AgentDefinition, Memory, ToolDefinition, agent, tool
from ironflow._agent._memory import AgentMemory, ProjectionDefinition, projection
from ironflow._agent._primitives import ApproveResult, ChildRun
from ironflow._cli._client import Client
from ironflow._worker._worker import Worker
from ironflow.errors import (
    AuthError,
    ConcurrencyError,
    ConfigError,
    DefinitionError,
    FilterError,
    InvalidInputError,
    IronflowError,
    LeaseLostError,
    LlmError,
    MissingAwaitError,
    MissingExtraError,
    NonDeterminismError,
    NonRetryableError,
    NotSerializableError,
    ProjectionNotFoundError,
    ProjectionTimeoutError,
    ProviderNotConfiguredError,
    RunNotFoundError,
    RunTimeoutError,
    ScriptExhaustedError,
    ServerUnavailableError,
    StepFailedError,
    StepTimeoutError,
    StoreCorruptedError,
    StoreError,
    StoreFormatError,
    StoreLockedError,
    ToolInputError,
    ToolLoopLimitError,
    WaitTimeoutError,
    WorkerStoppedError,
)
from ironflow.replay import StepInfo, current_step
from ironflow.store import Event, LmdbStore, PostgresStore, Run, StepRecord, Store

__version__ = "0.1.0"

__all__ = [
    "AgentContext",
    "AgentDefinition",
    "AgentMemory",
    "ApproveResult",
    "AuthError",
    "ChildRun",
    "Client",
    "ConcurrencyError",
    "ConfigError",
    "DefinitionError",
    "Event",
    "FilterError",
    "InvalidInputError",
    "IronflowError",
    "LeaseLostError",
    "LlmError",
    "LmdbStore",
    "Memory",
    "MissingAwaitError",
    "MissingExtraError",
    "NonDeterminismError",
    "NonRetryableError",
    "NotSerializableError",
    "PostgresStore",
    "ProjectionDefinition",
    "ProjectionNotFoundError",
    "ProjectionTimeoutError",
    "ProviderNotConfiguredError",
    "Run",
    "RunNotFoundError",
    "RunTimeoutError",
    "ScriptExhaustedError",
    "ServerUnavailableError",
    "StepFailedError",
    "StepInfo",
    "StepRecord",
    "StepTimeoutError",
    "Store",
    "StoreCorruptedError",
    "StoreError",
    "StoreFormatError",
    "StoreLockedError",
    "ToolDefinition",
    "ToolInputError",
    "ToolLoopLimitError",
    "WaitTimeoutError",
    "Worker",
    "WorkerStoppedError",
    "agent",
    "current_step",
    "projection",
    "tool",
]

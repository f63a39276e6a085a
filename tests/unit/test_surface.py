"""The public surface and the one-way layers stay as designed."""

from __future__ import annotations

import ast
from pathlib import Path

import ironflow

PACKAGE = Path(ironflow.__file__).parent


def test_public_names_do_not_disappear() -> None:
    """Every name users were promised is still exported (add to this list, never remove)."""
    promised = {
        "AgentContext",
        "AgentDefinition",
        "ApproveResult",
        "ChildRun",
        "DefinitionError",
        "Event",
        "IronflowError",
        "LmdbStore",
        "Memory",
        "NonDeterminismError",
        "NonRetryableError",
        "NotSerializableError",
        "PostgresStore",
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
        "tool",
    }
    assert promised <= set(ironflow.__all__)
    assert ironflow.__all__ == sorted(ironflow.__all__)
    for name in ironflow.__all__:
        assert hasattr(ironflow, name), name


#: Every public module's ``__all__``, exactly. A name added or removed on purpose is
#: added or removed here in the same commit; by accident, this test says which.
PUBLIC: dict[str, list[str]] = {
    "ironflow": [
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
    ],
    "ironflow.store": [
        "AgentSpec",
        "EmitResult",
        "ErrorInfo",
        "Event",
        "FINISHED",
        "Lease",
        "LeasedRun",
        "LmdbStore",
        "PostgresStore",
        "ProjectionSpec",
        "ProjectionState",
        "ProjectionStatus",
        "ProjectionWrite",
        "PruneResult",
        "RemoteStore",
        "Run",
        "StepAck",
        "StepRecord",
        "StepTry",
        "Store",
        "SuspendResult",
        "Suspension",
        "TraceContext",
        "WorkerInfo",
    ],
    "ironflow.replay": [
        "StepInfo",
        "current_step",
    ],
    "ironflow.testing": [
        "Boundary",
        "CrashCase",
        "CrashReport",
        "CrashingStore",
        "Driver",
        "FakeClock",
        "Fault",
        "MemoryStore",
        "SimulatedCrash",
        "StandInWorker",
        "crash_matrix",
        "replay",
        "replay_history",
        "run_once",
    ],
    "ironflow.llm": [
        "AnthropicProvider",
        "LlmCall",
        "LlmRequest",
        "LlmResponse",
        "Message",
        "MessagesInput",
        "OpenAIProvider",
        "Provider",
        "Reply",
        "Role",
        "ScriptedProvider",
        "ToolCall",
        "ToolSchema",
        "ToolsInput",
        "ToolsLoopResult",
        "Usage",
        "current_call",
        "get_default_provider",
        "json_schema",
        "run_tools_loop",
        "set_default_provider",
        "tool_schema",
    ],
    "ironflow.server": [
        "API_PREFIX",
        "BackgroundServer",
        "DEFAULT_MAX_BODY",
        "make_app",
    ],
    "ironflow.errors": [
        "AuthError",
        "ConcurrencyError",
        "ConfigError",
        "DefinitionError",
        "FilterError",
        "InvalidInputError",
        "IronflowError",
        "LeaseLostError",
        "LlmError",
        "MissingAwaitError",
    "MissingExtraError",
        "NonDeterminismError",
        "NonRetryableError",
        "NotSerializableError",
        "ProjectionNotFoundError",
        "ProjectionTimeoutError",
        "ProviderNotConfiguredError",
        "RunNotFoundError",
        "RunTimeoutError",
        "ScriptExhaustedError",
        "ServerUnavailableError",
        "StepFailedError",
        "StepTimeoutError",
        "StoreCorruptedError",
        "StoreError",
        "StoreFormatError",
        "StoreLockedError",
        "ToolInputError",
        "ToolLoopLimitError",
        "WaitTimeoutError",
        "WorkerStoppedError",
    ],
}


def test_each_public_module_exports_exactly_its_snapshot() -> None:
    """Each public module's ``__all__`` is its snapshot: nothing appears or disappears by
    accident, and every name in it resolves."""
    import importlib

    for module_name, expected in PUBLIC.items():
        module = importlib.import_module(module_name)
        exported = list(module.__all__)
        assert len(set(exported)) == len(exported), f"{module_name}: a name twice"
        added = sorted(set(exported) - set(expected))
        removed = sorted(set(expected) - set(exported))
        assert not added and not removed, (
            f"{module_name}.__all__ changed: added {added}, removed {removed}; if on "
            "purpose, update PUBLIC in this test"
        )
        for name in exported:
            assert getattr(module, name) is not None, f"{module_name}.{name}"


def test_internals_are_not_public() -> None:
    """The engine's and the store's machinery stays private (issue 11's list)."""
    import ironflow.replay
    import ironflow.store

    for name in ("Execution", "Outcome", "RetryPolicy", "current_execution", "error_info"):
        assert name not in ironflow.replay.__all__, name
    for name in ("converter", "process_alive", "FORMAT_VERSION", "SUSPENDED", "this_worker"):
        assert name not in ironflow.store.__all__, name


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


#: The layers, bottom first. A module may import from its own layer and those below it,
#: never from a layer above (docs/architecture.md draws the same picture).
LAYERS: list[tuple[str, ...]] = [
    ("ironflow.errors",),
    ("ironflow._pure",),
    ("ironflow.store",),
    ("ironflow.replay",),
    ("ironflow._agent", "ironflow.llm"),
    ("ironflow._worker",),
    ("ironflow.server",),
    ("ironflow._cli",),
]


def _layer_of(module: str) -> int | None:
    for level, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return level
    return None


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_every_module_belongs_to_a_layer() -> None:
    """No private module sits flat at the top: each lives in the package of its layer."""
    top = {p.name for p in PACKAGE.glob("*.py")}
    assert top == {"__init__.py", "errors.py", "run.py"}, sorted(top)


def test_layers_only_import_downwards() -> None:
    """Each layer imports only from itself and the layers below it."""
    checked = 0
    for path in PACKAGE.rglob("*.py"):
        level = _layer_of(_module_name(path))
        if level is None:
            continue  # the faces on top: ironflow/__init__, run, testing/, contrib
        for module in _imports(path):
            other = _layer_of(module)
            assert other is None or other <= level, (
                f"{_module_name(path)} (layer {LAYERS[level][0]}) imports {module} "
                f"(layer {LAYERS[other][0]}, above it)"
            )
        checked += 1
    assert checked > 40


def test_every_error_derives_from_ironflow_error() -> None:
    """One error root: each public exception class is an IronflowError."""
    from ironflow import errors

    for name in errors.__all__:
        assert issubclass(getattr(errors, name), ironflow.IronflowError), name
        assert getattr(errors, name).__doc__, f"{name} needs a docstring saying when it happens"


def test_import_ironflow_leaves_heavy_optional_modules_unloaded() -> None:
    """`import ironflow` loads no asyncio, HTTP stack or LLM SDK: each is imported on first use.

    Import time is a benchmark target (bench/, under 150 ms); this keeps the modules that
    cost most and that many workers never use from creeping back into it.
    """
    import subprocess
    import sys

    probe = (
        "import sys, ironflow\n"
        "heavy = ['asyncio', 'ssl', 'http.client', 'aiohttp', 'openai', 'anthropic']\n"
        "print(' '.join(m for m in heavy if m in sys.modules))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert proc.stdout.strip() == "", f"imported by `import ironflow`: {proc.stdout.strip()}"

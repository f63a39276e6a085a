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


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_layers_only_import_downwards() -> None:
    """The store knows nothing above it; the engine knows only the store."""
    forbidden = {
        "store": (
            "ironflow.replay",
            "ironflow._dsl",
            "ironflow._context",
            "ironflow._worker",
            "ironflow.server",
            "ironflow._cli",
        ),
        "replay": (
            "ironflow._dsl",
            "ironflow._context",
            "ironflow._worker",
            "ironflow.server",
            "ironflow._cli",
        ),
    }
    for package, banned in forbidden.items():
        for path in (PACKAGE / package).glob("*.py"):
            for module in _imports(path):
                assert not module.startswith(banned), f"{path.name} imports {module}"


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

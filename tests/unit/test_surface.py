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

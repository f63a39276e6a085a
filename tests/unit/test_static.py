"""The package type-checks under mypy --strict and passes ruff: CI keeps it so."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _tool(name: str) -> str:
    path = Path(sys.executable).with_name(name)
    found = str(path) if path.exists() else shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed (pip install -e '.[test]')")
    return found


def test_mypy_strict_passes_on_the_package() -> None:
    """`mypy` (strict, configured in pyproject.toml) finds no error in ironflow/."""
    proc = subprocess.run([_tool("mypy")], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


def test_ruff_passes() -> None:
    """`ruff check` finds nothing in the package, tests, examples or bench."""
    proc = subprocess.run(
        [_tool("ruff"), "check", "ironflow", "tests", "examples", "bench"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-4000:]

"""`make demo-agent-crash-resume` is a test too, so CI proves the README's first command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.process
def test_the_seed_demo_passes() -> None:
    """The seed's demo: serve, worker, emit, kill -9 mid-OCR, resume, memory holds doc-2."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "doc_processor" / "demo.py")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "demo passed" in proc.stdout
    assert "the projection holds doc-2 as published" in proc.stdout

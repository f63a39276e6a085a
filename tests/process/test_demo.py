"""`make demo-agent-crash-resume` and `make demo-cluster` are tests too, so CI proves the
README's commands."""

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


@pytest.mark.process
def test_the_cluster_demo_passes() -> None:
    """`make demo-cluster`: PostgreSQL, two servers, two workers; a worker and a server
    killed in each run; both runs resume, each step recorded once."""
    proc = subprocess.run(
        [sys.executable, "-m", "examples.doc_processor.cluster_demo"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "demo passed" in proc.stdout
    assert "OCR did not run again" in proc.stdout
    assert "servers 1 and 2 give the same record" in proc.stdout

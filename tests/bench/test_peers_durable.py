"""The peers are measured as durable as Ironflow: their SQLite connections sync (FULL).

Needs the bench extra (``make bench`` installs it); skipped without it. ``make bench``
checks the same in each peer's child before it measures.
"""

from __future__ import annotations

from pathlib import Path

import pytest


def test_dbos_writes_its_steps_with_synchronous_full(tmp_path: Path) -> None:
    """DBOS's own system-database connections: synchronous=FULL (2)."""
    pytest.importorskip("dbos", reason="the bench extra is not installed (make bench)")
    from bench.peers import dbos_peer

    assert dbos_peer.sqlite_synchronous(str(tmp_path)) == 2


def test_langgraph_writes_its_checkpoints_with_synchronous_full(tmp_path: Path) -> None:
    """The SqliteSaver connection LangGraph checkpoints through: synchronous=FULL (2)."""
    pytest.importorskip(
        "langgraph.checkpoint.sqlite", reason="the bench extra is not installed (make bench)"
    )
    from bench.peers import langgraph_peer

    assert langgraph_peer.sqlite_synchronous(str(tmp_path)) == 2

"""The research example: parallel searches recorded one by one, a crash re-runs only some."""

from __future__ import annotations

from pathlib import Path

import pytest

from examples.research import demo
from examples.research.agent import research
from ironflow import Worker
from ironflow.store import LmdbStore
from ironflow.testing import CrashingStore
from tests.primitives.conftest import emit, serve_until_crash

IDS = ["llm.plan", "tool.search", "tool.search#2", "tool.search#3", "llm.summarize"]


def test_the_demo_searches_in_parallel_and_summarizes(tmp_path: Path) -> None:
    """Three gathered searches, each its own step, then a summary of three sources."""
    output = demo.main("durable execution", str(tmp_path / "data"))
    assert len(output["queries"]) == 3
    assert output["summary"].startswith("3 sources agree: Durable execution records")
    with LmdbStore(tmp_path / "data", sync=False) as store:
        [run] = store.list_runs()
        assert [s.id for s in store.get_steps(run.id)] == IDS


def test_a_crash_mid_gather_reruns_only_the_unfinished_searches(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Dying right after the first search is recorded, the next worker runs the rest once."""
    reference = demo.main("durable execution", str(tmp_path / "ref"))
    capsys.readouterr()
    inner = LmdbStore(tmp_path / "data", sync=False)
    try:
        run_id = emit(inner, "research.requested", {"topic": "durable execution"}, research)
        store = CrashingStore(inner)
        store.crash_at("record_step", when="after", position=1, run_id=run_id)
        serve_until_crash(store, [research])
        assert store.crashed
        first = capsys.readouterr().out.count("[search]")
        recorded = {s.position for s in inner.get_steps(run_id)}
        Worker([research], store=inner).run(until_idle=True, ready_message=False)
        second = capsys.readouterr().out.count("[search]")
        run = inner.get_run(run_id)
        assert run.status == "completed" and run.output == reference
        # Searches recorded before the crash were not run again; the others ran once more.
        assert second == 3 - len(recorded & {1, 2, 3})
        assert first + second <= 6
        assert [s.id for s in inner.get_steps(run_id)] == IDS
    finally:
        inner.close()

"""The code-review example: review, wait for a person, merge; crash-safe; times out."""

from __future__ import annotations

from pathlib import Path

from examples.code_review import demo
from examples.code_review.agent import PROVIDER, code_review
from ironflow._agent._primitives import approval_event
from ironflow.store import LmdbStore
from ironflow.testing import CrashingStore, FakeClock
from tests.primitives.conftest import emit, serve_until_crash, serving, wait_status


def test_the_demo_reviews_waits_and_merges(tmp_path: Path) -> None:
    """`python -m examples.code_review.demo` ends merged, with the offline review."""
    output = demo.main(str(tmp_path / "data"))
    assert output["merged"] is True and output["approver"] == "demo"
    assert "parameterized query" in output["review"]


def test_a_rejected_merge_is_commented_not_merged(tmp_path: Path) -> None:
    """Rejected: nothing merges; the run records a second comment saying so."""
    output = demo.main(str(tmp_path / "data"), approve=False)
    assert output["merged"] is False
    with LmdbStore(tmp_path / "data", sync=False) as store:
        [run] = store.list_runs()
        ids = [s.id for s in store.get_steps(run.id)]
    assert ids == [
        "tool.fetch_diff",
        "llm.review",
        "tool.post_comment",
        "approve.merge",
        "tool.post_comment#2",
    ]


def test_a_crash_before_the_wait_never_asks_the_model_twice(tmp_path: Path) -> None:
    """A worker dies as it suspends; the next one replays the review from the record."""
    inner = LmdbStore(tmp_path / "data", sync=False)
    try:
        run_id = emit(inner, "pr.opened", {"repo": "acme/api", "number": 43}, code_review)
        asked = PROVIDER.calls
        store = CrashingStore(inner)
        store.crash_at("suspend_run", when="before", run_id=run_id)
        serve_until_crash(store, [code_review])
        assert store.crashed and PROVIDER.calls == asked + 1
        with serving(inner, [code_review]):
            wait_status(inner, run_id, "waiting")
            inner.emit(*approval_event(run_id, "merge", approver="ann"))
            run = wait_status(inner, run_id, "completed")
        assert PROVIDER.calls == asked + 1, "the recorded review was asked for again"
        assert run.output["merged"] is True and "No problems found" in run.output["review"]
    finally:
        inner.close()


def test_no_answer_in_three_days_leaves_it_unmerged(tmp_path: Path) -> None:
    """Past the three-day ttl the approval times out and the PR is not merged."""
    clock = FakeClock()
    store = LmdbStore(tmp_path / "data", sync=False, clock=clock)
    try:
        run_id = emit(store, "pr.opened", {"repo": "acme/api", "number": 42}, code_review)
        with serving(store, [code_review]):
            wait_status(store, run_id, "waiting")
            clock.advance("3d")
            run = wait_status(store, run_id, "completed")
        assert run.output["merged"] is False
        last = store.get_steps(run_id)[-1]
        assert last.input["body"] == "Not merged: no answer within 3 days"
    finally:
        store.close()

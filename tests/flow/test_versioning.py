"""ctx.patched: runs recorded before a code change replay the old path, new runs the new."""

from __future__ import annotations

from typing import Any

from ironflow import AgentContext, agent
from ironflow.errors import NonDeterminismError
from ironflow.store import LmdbStore
from tests.flow._helpers import replay, run_agent, step_ids


def _value(label: str) -> Any:
    return lambda: label


@agent(id="versioned", triggers=["versioned"])
def old_code(ctx: AgentContext) -> Any:
    a = ctx.step("a", _value("a"))
    b = ctx.step("b", _value("b"))
    return [a, b]


@agent(id="versioned", triggers=["versioned"])
def new_code(ctx: AgentContext) -> Any:
    a = ctx.step("a", _value("a"))
    if ctx.patched("add-c"):
        c = ctx.step("c", _value("c"))
        assert ctx.patched("add-c"), "asked again, the same answer"
    else:
        c = "old"
    b = ctx.step("b", _value("b"))
    return [a, c, b]


def test_a_new_run_takes_the_new_path_and_records_a_marker(store: LmdbStore) -> None:
    """The first time a run reaches patched(), the marker patch.<id> is recorded: True."""
    run = run_agent(store, new_code, {})
    assert run.status == "completed", run.error
    assert run.output == ["a", "c", "b"]
    assert step_ids(store, run.id) == ["a", "patch.add-c", "c", "b"]
    outcome = replay(store, run.id, new_code)
    assert (outcome.status, outcome.output) == ("completed", ["a", "c", "b"])


def test_a_run_recorded_by_the_old_code_replays_the_old_path(store: LmdbStore) -> None:
    """patched() is False where the record holds the old code's step; nothing is guessed."""
    run = run_agent(store, old_code, {})
    outcome = replay(store, run.id, new_code)
    assert (outcome.status, outcome.output) == ("completed", ["a", "old", "b"])
    assert step_ids(store, run.id) == ["a", "b"], "no marker is written into an old run"


def test_a_new_run_replayed_by_code_without_the_patch_is_non_determinism(
    store: LmdbStore,
) -> None:
    """Removing the patch while runs recorded with it are live fails them, not guesses."""
    run = run_agent(store, new_code, {})
    outcome = replay(store, run.id, old_code)
    assert outcome.status == "failed"
    assert outcome.error is not None and outcome.error.type == NonDeterminismError.__name__
    # The message says how to avoid it and how to finish the run it failed.
    assert 'if ctx.patched("my-change"):' in outcome.error.message
    assert f"`ironflow run resume {run.id} --from-step STEP_ID`" in outcome.error.message

"""crash_matrix: every boundary of a user's agent crashed and resumed, and what it catches."""

from __future__ import annotations

import pytest

from ironflow.testing import crash_matrix
from tests.debug import matrix_agents
from tests.debug.matrix_agents import drift, gather, journey


def test_a_sync_agent_with_sleep_approval_child_and_memory_survives_every_boundary() -> None:
    report = crash_matrix(journey, {"trip": "rome"}, approve=lambda name, payload: True)
    assert report.passed and report.output == {
        "booking": "B-rome",
        "approved": True,
        "notified": True,
    }
    described = [c.boundary.describe() for c in report.cases]
    for expected in (
        "before tool.book is recorded",
        "after tool.book is recorded",
        "before sleep suspends the run",
        "after sleep suspended the run",
        "before approve.confirm suspends the run",
        "after spawn.matrix-notify created the child run, before its record",
        "[child spawn.matrix-notify] before tool.send is recorded",
        "[child spawn.matrix-notify] before the run's finish is written",
        "inside memory.append: event appended, step not recorded",
        "before the run's finish is written",
    ):
        assert expected in described, expected
    by_name = {c.boundary.describe(): c for c in report.cases}
    assert by_name["before tool.book is recorded"].reran == ("tool.book",)
    assert by_name["after tool.book is recorded"].reran == ()
    text = str(report)
    assert text.startswith(f"crash matrix of matrix-journey: {len(report.cases)} boundaries")
    assert "all survived" in text and "ok   before tool.book is recorded" in text


def test_an_async_agent_with_gathered_steps_survives_every_boundary() -> None:
    report = crash_matrix(gather, {"cities": ["rome", "oslo", "lima"]})
    assert report.passed and report.output == [4, 4, 4]
    assert "before tool.lookup#3 is recorded" in [c.boundary.describe() for c in report.cases]


def test_a_tool_that_may_not_repeat_fails_naming_the_boundary() -> None:
    with pytest.raises(AssertionError) as caught:
        crash_matrix(
            journey,
            {"trip": "oslo"},
            approve=lambda name, payload: True,
            tools_may_repeat=["send"],
        )
    message = str(caught.value)
    assert message.startswith(
        "matrix-journey did not survive a crash before tool.book is recorded: tool.book was "
        "in flight at the crash and ran again"
    )
    assert "idempotency_key" in message and "FAIL before tool.book is recorded" in message
    # The child's send is listed, so its boundary passes.
    assert "ok   [child spawn.matrix-notify] before tool.send is recorded" in message


def test_a_handler_that_branches_on_process_state_fails_naming_the_boundary() -> None:
    matrix_agents.STARTS.clear()
    with pytest.raises(AssertionError) as caught:
        crash_matrix(drift, {})
    message = str(caught.value)
    assert "matrix-drift did not survive a crash" in message
    assert "NonDeterminismError" in message


def test_an_approval_without_a_callback_says_what_to_pass() -> None:
    with pytest.raises(AssertionError, match=r"waits for the approval 'confirm': pass approve="):
        crash_matrix(journey, {"trip": "lima"})

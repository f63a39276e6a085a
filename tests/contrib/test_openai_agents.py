"""IronflowRunner: the Agents SDK's model calls, tools, handoffs and guardrails as steps."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from agents import Runner

from ironflow.llm import LlmRequest, LlmResponse
from ironflow.store import LmdbStore
from ironflow.store._codec import converter
from ironflow.testing import replay, run_once
from tests.contrib import _openai_agents_agents as oa
from tests.property._world import World


@pytest.fixture
def store(tmp_path: Path) -> Iterator[LmdbStore]:
    s = LmdbStore(tmp_path / "data", sync=False)
    with World(tmp_path / "w").active() as w:
        w._store = None  # the agents count their side effects; no crash is armed
        yield s
    s.close()


def test_model_calls_are_recorded_as_ctx_llm_records_them(store: LmdbStore) -> None:
    """llm.<model> holds an LlmRequest and an LlmResponse with usage; the rest are steps too."""
    run = run_once(store, oa.weather_async, {"city": "oslo"})
    assert run.status == "completed", run.error
    steps = store.get_steps(run.id)
    first = next(s for s in steps if s.id == "llm.planner")
    request = converter.structure(first.input, LlmRequest)
    assert request.messages[0].role == "system" and request.messages[1].content == "oslo"
    assert [t.name for t in request.tools] == ["transfer_to_weather"]
    response = converter.structure(first.output, LlmResponse)
    assert response.tool_calls[0].name == "transfer_to_weather"
    assert (response.usage.input_tokens, response.usage.output_tokens) == (40, 8)
    tool = next(s for s in steps if s.id == "tool.forecast")
    assert tool.input["call_id"] == "call-forecast"
    assert next(s for s in steps if s.id == "handoff.transfer_to_weather").output == {
        "agent": "weather"
    }
    assert (
        next(s for s in steps if s.id == "guardrail.polite").output["tripwire_triggered"] is False
    )


def test_a_replay_calls_no_model_tool_or_guardrail(store: LmdbStore, tmp_path: Path) -> None:
    """Re-executing a finished run against its record: the same output, nothing executed."""
    run = run_once(store, oa.weather_async, {"city": "oslo"})
    with World(tmp_path / "replay").active() as w:
        outcome = replay(store, run.id, oa.weather_async)
        assert outcome.status == "completed" and outcome.output == run.output
        assert not w.executions


def test_outside_a_run_it_is_the_sdks_runner(tmp_path: Path) -> None:
    """No run, no steps: IronflowRunner.run gives what Runner.run gives."""
    with World(tmp_path / "w").active() as w:
        w.executed = lambda: None  # type: ignore[method-assign]
        ours = asyncio.run(oa.IronflowRunner.run(oa.triage, "bergen", run_config=oa.CONFIG))
        theirs = asyncio.run(Runner.run(oa.triage, "bergen", run_config=oa.CONFIG))
    assert ours.final_output == theirs.final_output
    assert ours.last_agent.name == "weather"


def test_a_changed_instruction_is_caught_at_the_model_call(store: LmdbStore) -> None:
    """A replay whose request differs from the record fails with NonDeterminismError."""
    run = run_once(store, oa.weather_async, {"city": "oslo"})
    original = oa.triage.instructions
    oa.triage.instructions = "Triage, but differently."
    try:
        outcome = replay(store, run.id, oa.weather_async)
    finally:
        oa.triage.instructions = original
    assert outcome.status == "failed" and outcome.error is not None
    assert outcome.error.type == "NonDeterminismError" and "llm.planner" in outcome.error.message

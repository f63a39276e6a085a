"""IronflowRunner: the Agents SDK's model calls, tools, handoffs and guardrails as steps."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from agents import Agent, GuardrailFunctionOutput, Runner, input_guardrail

from ironflow import AgentContext, AgentDefinition, agent
from ironflow.errors import StoreError
from ironflow.llm import LlmRequest, LlmResponse
from ironflow.replay._engine import Execution
from ironflow.store import AgentSpec, LmdbStore, StepRecord, WorkerInfo
from ironflow.store._codec import converter
from ironflow.testing import StandInWorker, replay, run_once
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


class _Outage:
    """The store goes away when the first model call is recorded: that record and every
    later one fail (a lost lease would do the same), so each step in flight stops."""

    def __init__(self, inner: LmdbStore) -> None:
        self.inner = inner
        self.down = threading.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def record_step(self, worker: WorkerInfo, record: StepRecord) -> Any:
        if record.id.startswith("llm."):
            self.down.set()
        if self.down.is_set():
            raise StoreError("the store cannot be reached")
        return self.inner.record_step(worker, record)


_outage: _Outage | None = None


@input_guardrail
async def slow_check(ctx: Any, agent: Any, input: Any) -> GuardrailFunctionOutput:
    """A slow moderation call: still running when the model call's record fails."""
    assert _outage is not None
    deadline = time.monotonic() + 30
    while not _outage.down.is_set() and time.monotonic() < deadline:
        await asyncio.sleep(0.005)
    await asyncio.sleep(0.2)  # the model call's stop has long reached the runner by now
    return GuardrailFunctionOutput(output_info=None, tripwire_triggered=False)


checked = Agent(
    name="checked",
    instructions="Say hello.",
    model=oa.PlannerModel(lambda instructions, items: [oa._say("hello")]),
    input_guardrails=[slow_check],
)


@agent(id="oa-checked-stream", triggers=["oa.checked"])
async def checked_stream(ctx: AgentContext) -> Any:
    result = oa.IronflowRunner.run_streamed(checked, "hi", run_config=oa.CONFIG)
    async for _ in result.stream_events():
        pass
    return result.final_output


def test_a_stop_in_a_streamed_guardrail_and_model_call_ends_the_run(store: LmdbStore) -> None:
    """Regression: when the engine stopped both the first model call and the input
    guardrail beside it (the model call first), ``stream_events`` waited forever: the
    SDK's run loop died in its cleanup, on the guardrail's stop, before ending the stream.
    The run must stop, abandoned as the failed writes require, with nothing written."""
    global _outage
    defn = AgentDefinition.must_from_fn(checked_stream)
    store.register_agents([AgentSpec(id=defn.id, triggers=defn.triggers)])
    run_id = store.emit("oa.checked", {}).run_ids[0]
    _outage = outage = _Outage(store)
    pool = concurrent.futures.ThreadPoolExecutor(4)
    try:
        with StandInWorker() as process:
            (leased,) = store.lease_runs(process.info, [defn.id], limit=1, ttl=60)

            async def attempt() -> Any:
                execution = Execution(
                    outage,  # type: ignore[arg-type]
                    process.info,
                    leased,
                    is_async=True,
                    loop=asyncio.get_running_loop(),
                    pool=pool,
                )
                ctx = AgentContext(execution, defn)
                # Bounded, so the hang this test is about fails it instead of hanging it.
                return await asyncio.wait_for(execution.execute_async(lambda: defn.fn(ctx)), 30)

            outcome = asyncio.run(attempt())
    finally:
        _outage = None
        pool.shutdown(wait=True)
    assert outage.down.is_set(), "the model call was never recorded"
    assert outcome.status == "abandoned", outcome
    assert store.get_steps(run_id) == []

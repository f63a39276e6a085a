"""The replay engine through real agents: recording, replay, re-typing, failures."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from typing import Any

import attrs
import pytest

from ironflow import (
    AgentContext,
    StepFailedError,
    ToolInputError,
    Worker,
    agent,
    current_step,
    tool,
)
from ironflow.store import AgentSpec, LmdbStore
from ironflow.testing import replay
from ironflow.testing import run_once as run_agent

calls: list[str] = []


@attrs.frozen
class OcrResult:
    text: str
    pages: int


@tool
def ocr(image_url: str) -> OcrResult:
    calls.append(f"ocr:{image_url}")
    return OcrResult(text=f"text of {image_url}", pages=1)


@tool(name="classify", description="categorize")
def classify_text(text: str) -> dict[str, str]:
    calls.append("classify")
    return {"category": "invoice" if "invoice" in text else "other"}


@tool
def explode(reason: str) -> None:
    calls.append("explode")
    raise ValueError(reason)


@tool
def unstorable() -> Any:
    calls.append("unstorable")
    return {"n": float("nan")}


@agent(id="pipeline", triggers=["doc.received"])
def pipeline(ctx: AgentContext) -> dict[str, Any]:
    result = ocr(image_url=ctx.event.data["url"])
    assert isinstance(result, OcrResult), type(result)
    first = classify_text(text=result.text)
    second = classify_text(text="an invoice")
    return {"ocr": result.text, "first": first["category"], "second": second["category"]}


@pytest.fixture(autouse=True)
def _reset_calls() -> None:
    calls.clear()


def test_steps_are_recorded_with_call_order_positions_and_repeat_ids(store: LmdbStore) -> None:
    """Each tool call is a step; a second call of one tool gets the id `tool.x#2`."""
    run = run_agent(store, pipeline, {"url": "https://x/invoice.png"})
    assert run.status == "completed", run.error
    assert run.output == {
        "ocr": "text of https://x/invoice.png",
        "first": "invoice",
        "second": "invoice",
    }
    steps = store.get_steps(run.id)
    assert [(s.position, s.id, s.status) for s in steps] == [
        (0, "tool.ocr", "completed"),
        (1, "tool.classify", "completed"),
        (2, "tool.classify#2", "completed"),
    ]
    assert steps[0].input == {"image_url": "https://x/invoice.png"}
    assert steps[0].output == {"text": "text of https://x/invoice.png", "pages": 1}


def test_replay_returns_recorded_outputs_retyped_without_running_tools(store: LmdbStore) -> None:
    """A replayed step returns its record as the tool's return type and does not run."""
    run = run_agent(store, pipeline, {"url": "u"})
    calls.clear()
    outcome = replay(store, run.id, pipeline)
    assert outcome.status == "completed"
    assert outcome.output == run.output
    assert calls == []  # the handler's isinstance(OcrResult) assert passed, too


def test_changed_code_raises_non_determinism_naming_both_steps(store: LmdbStore) -> None:
    """Replaying a record against code that calls another step fails loudly."""
    run = run_agent(store, pipeline, {"url": "u"})
    calls.clear()

    @agent(id="pipeline", triggers=["doc.received"])
    def changed(ctx: AgentContext) -> None:
        ocr(image_url="u")
        explode(reason="x")  # the record holds tool.classify here

    outcome = replay(store, run.id, changed)
    assert outcome.status == "failed"
    assert outcome.error is not None and outcome.error.type == "NonDeterminismError"
    assert "position 1" in outcome.error.message
    assert "'tool.classify'" in outcome.error.message and "'tool.explode'" in outcome.error.message
    assert calls == []


def test_changed_input_is_non_determinism_too(store: LmdbStore) -> None:
    """The same step id with a different input does not silently reuse the record."""
    run = run_agent(store, pipeline, {"url": "u"})

    @agent(id="pipeline", triggers=["doc.received"])
    def changed(ctx: AgentContext) -> None:
        ocr(image_url="other")

    outcome = replay(store, run.id, changed)
    assert outcome.error is not None
    assert outcome.error.type == "NonDeterminismError"
    assert "'other'" in outcome.error.message


@agent(id="failing", triggers=["fail"])
def failing(ctx: AgentContext) -> str:
    try:
        explode(reason="boom")
    except StepFailedError as exc:
        assert exc.error_type == "ValueError"
        calls.append("caught")
    explode(reason="again")
    return "unreachable"


def test_failing_tool_is_recorded_and_replays_the_same_error(store: LmdbStore) -> None:
    """A raising tool is a failed step; the run fails with it; replay re-raises, not re-runs."""
    run = run_agent(store, failing, {})
    assert run.status == "failed"
    assert run.error is not None
    assert (run.error.type, run.error.message, run.error.step_id) == (
        "ValueError",
        "again",
        "tool.explode#2",
    )
    steps = store.get_steps(run.id)
    assert [s.status for s in steps] == ["failed", "failed"]
    assert steps[0].error is not None and "ValueError: boom" in (steps[0].error.traceback or "")
    calls.clear()
    outcome = replay(store, run.id, failing)
    assert outcome.status == "failed"
    assert calls == ["caught"]


@agent(id="bad-output", triggers=["bad"])
def bad_output(ctx: AgentContext) -> None:
    unstorable()


def test_unstorable_output_fails_its_step_with_the_path(store: LmdbStore) -> None:
    """A tool returning NaN fails at once; the error names output['n']."""
    run = run_agent(store, bad_output, {})
    assert run.status == "failed"
    assert run.error is not None and run.error.type == "NotSerializableError"
    assert "output['n']" in run.error.message
    assert [s.status for s in store.get_steps(run.id)] == ["failed"]


@agent(id="bad-input", triggers=["bad-input"])
def bad_input(ctx: AgentContext) -> None:
    ocr(image_url=42)


def test_tool_input_error_fails_before_anything_is_recorded(store: LmdbStore) -> None:
    """Wrongly typed arguments never reach the tool or the record."""
    run = run_agent(store, bad_input, {})
    assert run.status == "failed"
    assert run.error is not None and run.error.type == "ToolInputError"
    assert "argument 'image_url' expected str, got int 42" in run.error.message
    assert store.get_steps(run.id) == []
    assert calls == []


def test_tool_outside_a_run_is_an_ordinary_call() -> None:
    """Unit tests may call a tool directly: no store, no validation, no record."""
    assert ocr(image_url="plain") == OcrResult("text of plain", 1)
    with pytest.raises(ValueError, match="direct"):
        explode(reason="direct")
    with pytest.raises(ToolInputError):
        ocr.__ironflow_tool__.bind((), {"image_url": 1})  # type: ignore[attr-defined]


keys: list[str] = []


@tool
def charge(amount: int) -> str:
    info = current_step()
    assert info is not None
    keys.append(info.idempotency_key)
    return info.step_id


@agent(id="determinism", triggers=["det"])
def determinism(ctx: AgentContext) -> dict[str, Any]:
    now = ctx.now()
    ident = ctx.uuid()
    r = ctx.random()
    assert isinstance(ident, uuid.UUID)
    step_out = ctx.step("double", lambda n: n * 2, 21)
    return {
        "now": now.isoformat(),
        "uuid": str(ident),
        "random": r,
        "double": step_out,
        "charge": charge(amount=5),
    }


def test_now_uuid_random_and_step_replay_identically(store: LmdbStore) -> None:
    """ctx.now/uuid/random/step are recorded, so a replay sees the same values."""
    keys.clear()
    run = run_agent(store, determinism, {})
    assert run.status == "completed", run.error
    assert [s.id for s in store.get_steps(run.id)] == [
        "now",
        "uuid",
        "random",
        "double",
        "tool.charge",
    ]
    assert run.output["double"] == 42
    assert keys == [f"{run.id}/tool.charge"]
    outcome = replay(store, run.id, determinism)
    assert outcome.output == run.output
    assert len(keys) == 1


@tool
async def search(query: str) -> dict[str, str]:
    await asyncio.sleep(0.01 if query == "a" else 0)
    calls.append(f"search:{query}")
    return {"query": query}


@tool
def summarize(texts: list[str]) -> str:
    calls.append(f"summarize:{threading.current_thread().name.split('_')[0]}")
    return "+".join(texts)


@agent(id="research", triggers=["research"])
async def research(ctx: AgentContext) -> str:
    found = await asyncio.gather(search(query="a"), search(query="b"), search(query="c"))
    stamp = await ctx.now()
    assert stamp.tzinfo is not None
    return await summarize(texts=[f["query"] for f in found])  # type: ignore[no-any-return]


def test_async_agent_gather_gets_call_order_ids_and_sync_tools_use_the_pool(
    store: LmdbStore,
) -> None:
    """Steps started together under gather get ids in call order, whatever finishes first."""
    run = run_agent(store, research, {})
    assert run.status == "completed", run.error
    assert run.output == "a+b+c"
    steps = store.get_steps(run.id)
    assert [(s.position, s.id, s.input) for s in steps][:3] == [
        (0, "tool.search", {"query": "a"}),
        (1, "tool.search#2", {"query": "b"}),
        (2, "tool.search#3", {"query": "c"}),
    ]
    assert [s.id for s in steps][3:] == ["now", "tool.summarize"]
    assert "summarize:ironflow-step" in calls  # not on the event loop's thread


def test_emit_with_the_same_id_creates_nothing_new(store: LmdbStore) -> None:
    """An event id emitted twice starts its runs once."""
    store.register_agents([AgentSpec("pipeline", ("doc.received",))])
    first = store.emit("doc.received", {"url": "u"}, id="doc-1")
    again = store.emit("doc.received", {"url": "other"}, id="doc-1")
    assert first.created and not again.created
    assert again.run_ids == first.run_ids and len(first.run_ids) == 1
    assert len(store.list_runs()) == 1


gate = threading.Event()


@tool
def wait_for_gate() -> str:
    gate.wait(10)
    return "passed"


@agent(id="cancellable", triggers=["cancel-me"])
def cancellable(ctx: AgentContext) -> str:
    wait_for_gate()
    explode(reason="must not run after cancel")
    return "done"


def test_cancel_stops_a_running_run_at_its_next_step_boundary(store: LmdbStore) -> None:
    """A cancel request lands at the next step boundary; no later step executes."""
    gate.clear()
    worker = Worker([cancellable], store=store)
    thread = threading.Thread(
        target=worker.run, kwargs={"until_idle": True, "ready_message": False}
    )
    result = store.emit("cancel-me", {})
    thread.start()
    run_id = result.run_ids[0]
    try:
        # Generous: cancelling a run still pending would end it before its first step.
        deadline = time.monotonic() + 30
        while store.get_run(run_id).status != "running":
            assert time.monotonic() < deadline, "the worker never leased the run"
            time.sleep(0.01)
        store.request_cancel(run_id)
    finally:
        gate.set()
        thread.join(30)  # the worker must be done with the store before the fixture closes it
    assert not thread.is_alive(), "the worker did not go idle"
    run = store.get_run(run_id)
    assert run.status == "cancelled"
    assert [s.id for s in store.get_steps(run_id)] == ["tool.wait_for_gate"]
    assert "explode" not in calls

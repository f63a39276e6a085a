"""run_tools_loop: model calls and tool calls, each its own recorded step, across crashes."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import attrs
import pytest

from ironflow import AgentContext, agent, tool
from ironflow.errors import StepFailedError, ToolInputError, ToolLoopLimitError
from ironflow.llm import (
    LlmRequest,
    Message,
    ScriptedProvider,
    ToolCall,
    run_tools_loop,
    set_default_provider,
)
from ironflow.store import LmdbStore
from tests.llm.conftest import Crash, attempt, run_agent, start

calls: list[str] = []
crash_in = {"tool": ""}


@attrs.frozen
class Forecast:
    city: str
    celsius: int


@attrs.frozen
class Place:
    city: str
    country: str = "FR"


@tool(description="Weather for a city")
def weather(city: str) -> Forecast:
    calls.append(f"weather:{city}")
    if crash_in["tool"] == f"weather:{city}":
        crash_in["tool"] = ""
        raise Crash()
    return Forecast(city, 21 if city == "Paris" else 12)


@tool
def locate(place: Place) -> str:
    """Where a place is."""
    calls.append(f"locate:{place.city}")
    assert isinstance(place, Place)
    return f"{place.city}, {place.country}"


@tool
def flaky(n: int) -> int:
    calls.append(f"flaky:{n}")
    raise ValueError(f"no luck with {n}")


def last_tool_results(request: LlmRequest) -> str:
    results = [m.content for m in request.messages if m.role == "tool"]
    return " | ".join(r or "" for r in results)


def script() -> list[Any]:
    return [
        ToolCall("weather", {"city": "Paris"}),
        [ToolCall("weather", {"city": "Oslo"}), ToolCall("locate", {"place": {"city": "Oslo"}})],
        last_tool_results,
    ]


@agent(id="assistant", triggers=["ask"])
def assistant(ctx: AgentContext) -> dict[str, Any]:
    result = run_tools_loop(
        ctx,
        model="m",
        messages=[Message.system("use tools"), Message.user("weather?")],
        tools=[weather, locate],
    )
    return {"text": result.text, "turns": result.turns, "tokens": result.usage.total_tokens}


@pytest.fixture(autouse=True)
def _reset() -> None:
    calls.clear()
    crash_in["tool"] = ""


def test_each_model_call_and_tool_call_is_its_own_step(store: LmdbStore) -> None:
    """The loop records llm and tool steps in the model's order and feeds results back."""
    provider = ScriptedProvider(script())
    set_default_provider(provider)
    run = run_agent(store, assistant)
    assert run.status == "completed", run.error
    expected = '{"city": "Paris", "celsius": 21} | {"city": "Oslo", "celsius": 12} | Oslo, FR'
    assert run.output["text"] == expected
    assert run.output["turns"] == 3
    assert [s.id for s in store.get_steps(run.id)] == [
        "llm.m",
        "tool.weather",
        "llm.m#2",
        "tool.weather#2",
        "tool.locate",
        "llm.m#3",
    ]
    assert calls == ["weather:Paris", "weather:Oslo", "locate:Oslo"]
    # The model saw the tool schemas, and each result answers its call's id.
    last = provider.requests[-1]
    assert [t.name for t in last.tools] == ["weather", "locate"]
    assert [(m.role, m.tool_call_id) for m in last.messages if m.role == "tool"] == [
        ("tool", "call_0_0"),
        ("tool", "call_1_0"),
        ("tool", "call_1_1"),
    ]
    assert run.output["tokens"] == sum(
        s.output["usage"]["input_tokens"] + s.output["usage"]["output_tokens"]
        for s in store.get_steps(run.id)
        if s.id.startswith("llm.")
    )


def test_a_crash_mid_loop_resumes_at_the_tool_in_flight(store: LmdbStore) -> None:
    """Killed during the second turn's first tool: resume re-runs only that tool onwards."""
    set_default_provider(ScriptedProvider(script()))
    uncrashed = run_agent(store, assistant)
    calls.clear()

    run_id = start(store, assistant)
    first = ScriptedProvider(script())
    set_default_provider(first)
    crash_in["tool"] = "weather:Oslo"
    assert attempt(store, assistant) is None
    assert [s.id for s in store.get_steps(run_id)] == ["llm.m", "tool.weather", "llm.m#2"]
    assert first.calls == 2

    fresh = ScriptedProvider(script())
    set_default_provider(fresh)
    calls.clear()
    outcome = attempt(store, assistant)
    assert outcome is not None and outcome.status == "completed"
    assert outcome.output == uncrashed.output
    assert calls == ["weather:Oslo", "locate:Oslo"]  # Paris replayed from its record
    assert fresh.calls == 1  # only the third model call was never recorded
    assert [s.attempt for s in store.get_steps(run_id)] == [1, 1, 1, 2, 2, 2]


def test_tool_errors_are_told_to_the_model(store: LmdbStore) -> None:
    """A raising tool, bad arguments and an unknown tool become error results for the model."""
    provider = ScriptedProvider(
        [
            [
                ToolCall("flaky", {"n": 1}),
                ToolCall("flaky", {"n": "one"}),
                ToolCall("nope", {}),
            ],
            last_tool_results,
        ]
    )

    @agent(id="errors", triggers=["errors"])
    def errors(ctx: AgentContext) -> str:
        return str(
            run_tools_loop(ctx, model="m", messages="go", tools=[flaky], provider=provider).text
        )

    run = run_agent(store, errors)
    assert run.status == "completed", run.error
    replies = run.output.split(" | ")
    assert replies[0] == "error: ValueError: no luck with 1"
    assert replies[1].startswith("error: tool 'flaky': argument 'n' expected int, got str")
    assert replies[2] == "error: there is no tool named 'nope'; the tools are: flaky"
    assert calls == ["flaky:1"]
    assert [(s.id, s.status) for s in store.get_steps(run.id)] == [
        ("llm.m", "completed"),
        ("tool.flaky", "failed"),
        ("llm.m#2", "completed"),
    ]


def test_on_tool_error_raise_propagates(store: LmdbStore) -> None:
    """With on_tool_error='raise' a failing tool or bad arguments fail the loop."""
    seen: list[str] = []

    @agent(id="strict", triggers=["strict"])
    def strict(ctx: AgentContext) -> None:
        for reply in (ToolCall("flaky", {"n": 2}), ToolCall("flaky", {"x": 1})):
            try:
                run_tools_loop(
                    ctx,
                    model="m",
                    messages="go",
                    tools=[flaky],
                    provider=ScriptedProvider([reply]),
                    on_tool_error="raise",
                )
            except (StepFailedError, ToolInputError) as exc:
                seen.append(type(exc).__name__)

    run = run_agent(store, strict)
    assert run.status == "completed", run.error
    assert seen == ["StepFailedError", "ToolInputError"]


def test_max_turns_stops_the_loop_without_running_the_last_tools(store: LmdbStore) -> None:
    """A model that keeps calling tools hits ToolLoopLimitError; the last turn's tools never run."""

    @agent(id="looping", triggers=["looping"])
    def looping(ctx: AgentContext) -> str:
        provider = ScriptedProvider([ToolCall("weather", {"city": "Rome"})], repeat_last=True)
        try:
            run_tools_loop(
                ctx, model="m", messages="go", tools=[weather], provider=provider, max_turns=2
            )
        except ToolLoopLimitError as exc:
            return str(exc)
        return "unreachable"

    run = run_agent(store, looping)
    assert "max_turns=2" in run.output and "(weather)" in run.output
    assert calls == ["weather:Rome"]
    assert [s.id for s in store.get_steps(run.id)] == ["llm.m", "tool.weather", "llm.m#2"]


order: list[str] = []


@tool
async def search(query: str) -> dict[str, str]:
    # The first call finishes last, so recording order differs from call order.
    await asyncio.sleep(0.02 if query == "a" else 0)
    order.append(query)
    return {"query": query, "hit": f"{query}!"}


@agent(id="async-assistant", triggers=["async-ask"])
async def async_assistant(ctx: AgentContext) -> str:
    result = await run_tools_loop(ctx, model="m", messages="find", tools=[search])
    return str(result.text)


def test_async_loop_runs_one_turns_tools_together_in_model_order(store: LmdbStore) -> None:
    """In an async agent a turn's tool calls run concurrently, with ids in the model's order."""
    order.clear()
    queries = [ToolCall("search", {"query": q}) for q in "abc"]
    set_default_provider(ScriptedProvider([queries, last_tool_results]))
    run = run_agent(store, async_assistant)
    assert run.status == "completed", run.error
    assert order[-1] == "a"  # it really ran concurrently with the others
    assert [json.loads(r)["query"] for r in run.output.split(" | ")] == ["a", "b", "c"]
    steps = store.get_steps(run.id)
    assert [(s.id, s.input) for s in steps[1:4]] == [
        ("tool.search", {"query": "a"}),
        ("tool.search#2", {"query": "b"}),
        ("tool.search#3", {"query": "c"}),
    ]
    # The same run again, through the attempt helper: it ends with the same answer.
    order.clear()
    start(store, async_assistant)
    set_default_provider(ScriptedProvider([queries, last_tool_results]))
    outcome = attempt(store, async_assistant)
    assert outcome is not None and outcome.output == run.output

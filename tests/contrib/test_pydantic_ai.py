"""IronflowAgent: Pydantic AI's model requests, tool calls and MCP calls as steps."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastmcp import FastMCP
from pydantic_ai import Agent, ModelRetry, ToolReturn
from pydantic_ai.mcp import MCPToolset
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ToolCallPart
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.models.test import TestModel

from ironflow import AgentContext, DefinitionError, agent, current_step
from ironflow.contrib.pydantic_ai import IronflowAgent
from ironflow.llm import LlmRequest, LlmResponse
from ironflow.store import LmdbStore
from ironflow.store._codec import converter
from ironflow.testing import replay, run_once


@pytest.fixture
def store(tmp_path: Path) -> Iterator[LmdbStore]:
    s = LmdbStore(tmp_path / "data", sync=False)
    yield s
    s.close()


calls: list[str] = []


def _tools_agent() -> Agent[None, str]:
    pa: Agent[None, str] = Agent(TestModel(), instructions="Be brief.", name="calc")

    @pa.tool_plain
    def add(a: int, b: int) -> int:
        info = current_step()
        calls.append(f"add:{info.step_id if info else None}")
        return a + b

    return pa


calc = IronflowAgent(_tools_agent())


@agent(id="pa-calc", triggers=["pa.calc"])
def calc_agent(ctx: AgentContext) -> str:
    return calc.run_sync(ctx.event.data["q"]).output


def test_model_requests_and_tool_calls_are_recorded_as_ctx_llm_records_them(
    store: LmdbStore,
) -> None:
    """llm.<model> steps hold an LlmRequest and an LlmResponse with usage; tools tool.<name>."""
    calls.clear()
    run = run_once(store, calc_agent, {"q": "add"})
    assert run.status == "completed", run.error
    steps = store.get_steps(run.id)
    assert [s.id for s in steps] == ["llm.test", "tool.add", "llm.test#2"]
    request = converter.structure(steps[0].input, LlmRequest)
    assert request.model == "test"
    assert request.messages[0].role == "system" and request.messages[0].content == "Be brief."
    assert request.messages[1].content == "add"
    assert [t.name for t in request.tools] == ["add"]
    response = converter.structure(steps[0].output, LlmResponse)
    assert response.tool_calls[0].name == "add"
    assert response.usage.input_tokens > 0 and response.usage.output_tokens > 0
    assert steps[1].input == {"args": {"a": 0, "b": 0}, "call_id": response.tool_calls[0].id}
    assert steps[1].output == {"return": 0}
    # The tool ran inside its step: it sees its idempotency key.
    assert calls == ["add:tool.add"]
    final = converter.structure(steps[2].output, LlmResponse)
    assert final.content == run.output


def test_a_replay_asks_no_model_and_runs_no_tool(store: LmdbStore) -> None:
    """Re-executing a finished run against its record completes with the same output."""
    calls.clear()
    run = run_once(store, calc_agent, {"q": "add"})
    calls.clear()
    outcome = replay(store, run.id, calc_agent)
    assert outcome.status == "completed" and outcome.output == run.output
    assert calls == []


def test_a_changed_prompt_is_caught_at_the_model_request(store: LmdbStore) -> None:
    """A replay whose request differs from the record fails with NonDeterminismError."""
    run = run_once(store, calc_agent, {"q": "add"})
    changed = IronflowAgent(Agent(TestModel(), instructions="Be verbose.", name="calc"))

    @agent(id="pa-calc", triggers=["pa.calc"])
    def drifted(ctx: AgentContext) -> str:
        return changed.run_sync(ctx.event.data["q"]).output

    outcome = replay(store, run.id, drifted)
    assert outcome.status == "failed"
    assert outcome.error is not None and outcome.error.type == "NonDeterminismError"
    assert "llm.test" in outcome.error.message


def test_outside_a_run_the_wrapped_agent_behaves_as_the_original() -> None:
    """No run, no steps: the same output as the bare agent, sync and async."""
    bare = _tools_agent()
    try:
        assert calc.run_sync("add").output == bare.run_sync("add").output
    finally:
        # run_sync leaves the loop it made on this thread (Pydantic AI's way); close it.
        asyncio.get_event_loop_policy().get_event_loop().close()
        asyncio.set_event_loop(None)
    assert asyncio.run(calc.run("add")).output == asyncio.run(bare.run("add")).output
    assert calc.name == "calc"


# -- control flow from tools, recorded as data ---------------------------------------------


def _retrying_model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    returned = [
        p for m in messages for p in getattr(m, "parts", []) if type(p).__name__ == "ToolReturnPart"
    ]
    if returned and not str(returned[-1].content).startswith("try again"):
        return ModelResponse(
            parts=[TextPart(f"done after {len(returned) - 1} retries: {returned[-1].content}")]
        )
    n = len(returned)
    return ModelResponse(parts=[ToolCallPart("flaky", {"n": n}, tool_call_id=f"c{n}")])


flaky_runs: list[int] = []
retrying = Agent(FunctionModel(_retrying_model, model_name="retrier"), name="retrying")


@retrying.tool_plain(retries=3)
def flaky(n: int) -> ToolReturn:
    flaky_runs.append(n)
    if n < 2:
        raise ModelRetry(f"try again, n={n}")
    return ToolReturn(return_value=n * 10, metadata={"n": n})


durable_retrying = IronflowAgent(retrying)


@agent(id="pa-retry", triggers=["pa.retry"])
async def retry_agent(ctx: AgentContext) -> str:
    return (await durable_retrying.run("go")).output


def test_model_retry_and_tool_return_replay_from_the_record(store: LmdbStore) -> None:
    """ModelRetry is recorded as the tool's answer, not a failure; a replay raises it again."""
    flaky_runs.clear()
    run = run_once(store, retry_agent)
    assert run.status == "completed", run.error
    assert run.output == "done after 2 retries: 20"
    steps = store.get_steps(run.id)
    assert [s.id for s in steps] == [
        "llm.retrier", "tool.flaky", "llm.retrier#2", "tool.flaky#2",
        "llm.retrier#3", "tool.flaky#3", "llm.retrier#4",
    ]  # fmt: skip
    assert steps[1].output == {"raise": "ModelRetry", "message": "try again, n=0"}
    assert steps[5].output["tool_return"]["metadata"] == {"n": 2}
    flaky_runs.clear()
    assert replay(store, run.id, retry_agent).output == run.output
    assert flaky_runs == []


# -- MCP ---------------------------------------------------------------------------------

mcp_calls: list[str] = []
docs = FastMCP("docs")


@docs.tool
def search(query: str) -> str:
    """Search the docs."""
    mcp_calls.append(query)
    return f"found: {query}"


def _mcp_model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    if len(messages) == 1:
        names = sorted(t.name for t in info.function_tools)
        return ModelResponse(parts=[ToolCallPart(names[0], {"query": "steps"}, tool_call_id="m1")])
    last = messages[-1].parts[-1]  # type: ignore[union-attr]
    return ModelResponse(parts=[TextPart(str(last.content))])


mcp_agent = IronflowAgent(
    Agent(FunctionModel(_mcp_model, model_name="mcp-user"), toolsets=[MCPToolset(docs, id="docs")])
)


@agent(id="pa-mcp", triggers=["pa.mcp"])
async def mcp_user(ctx: AgentContext) -> str:
    async with mcp_agent:
        return (await mcp_agent.run("look it up")).output


def test_mcp_server_calls_are_steps(store: LmdbStore) -> None:
    """Listing the server's tools and calling one are steps; a replay calls no server."""
    mcp_calls.clear()
    run = run_once(store, mcp_user)
    assert run.status == "completed", run.error
    assert run.output == "found: steps"
    ids = [s.id for s in store.get_steps(run.id)]
    assert ids == [
        "mcp.docs.list_tools", "llm.mcp-user", "mcp.docs.search",
        "mcp.docs.list_tools#2", "llm.mcp-user#2",
    ]  # fmt: skip
    assert mcp_calls == ["steps"]
    mcp_calls.clear()
    assert replay(store, run.id, mcp_user).output == run.output
    assert mcp_calls == []


def test_an_mcp_toolset_without_an_id_is_refused_with_the_fix() -> None:
    """Its steps are named after the server, so the wrapper asks for an id."""
    server = FastMCP("anon")
    toolset: Any = MCPToolset(server)
    if toolset.id:  # pragma: no cover - depends on whether the client derives one
        pytest.skip("this transport derives an id from the server")
    with pytest.raises(DefinitionError, match="id="):
        IronflowAgent(Agent(TestModel(), toolsets=[toolset]))


# -- streaming ---------------------------------------------------------------------------

streamer = IronflowAgent(Agent(TestModel(custom_output_text="a streamed answer"), name="s"))


@agent(id="pa-run-stream", triggers=["pa.run-stream"])
async def run_stream_agent(ctx: AgentContext) -> list[str]:
    async with streamer.run_stream("hi") as result:
        return [chunk async for chunk in result.stream_text(delta=True)]


def test_run_stream_reads_the_recorded_response(store: LmdbStore) -> None:
    """run_stream in a run streams the response its llm step recorded, replayed or not."""
    run = run_once(store, run_stream_agent)
    assert run.status == "completed", run.error
    assert "".join(run.output) == "a streamed answer"
    assert [s.id for s in store.get_steps(run.id)] == ["llm.test"]
    assert replay(store, run.id, run_stream_agent).output == run.output

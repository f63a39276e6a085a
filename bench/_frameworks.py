"""Overhead of Ironflow's framework wrappers over the bare frameworks, per model request.

An agent on a no-op offline model makes ``rounds`` (20) model requests, each asking for one
call of a no-op tool, then answers. Its time per round is measured twice, the same
way: bare (the framework alone, ``asyncio.run`` of the agent, no run, no store) and
durable (the wrapped agent inside an Ironflow run served by a Worker on an LmdbStore,
fsync on), each as the difference of a ``rounds``-round run and a 1-round run, so the
per-run costs cancel. The row is durable minus bare: what making a model request (and
the tool call it asks for: two recorded steps) durable costs.

The LangGraph row is a checkpointer against checkpointers, not a wrapper against its
bare framework: ``langgraph_saver_node_us`` times IronflowSaver on the graph, and with
the method, that the LangGraph column times SqliteSaver on
(``bench.peers.langgraph_savers``).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable
from typing import Any

from bench._ironflow import _fresh, _timed_runs
from ironflow import AgentContext, AgentDefinition, LmdbStore, agent
from ironflow.store import AgentSpec


def _pydantic_ai() -> tuple[Callable[[int], Any], AgentDefinition]:
    from pydantic_ai import Agent
    from pydantic_ai.messages import ModelRequest, ModelResponse, TextPart, ToolCallPart
    from pydantic_ai.models.function import FunctionModel

    from ironflow.contrib.pydantic_ai import IronflowAgent

    def noop_model(messages: list[Any], info: Any) -> ModelResponse:
        rounds = int(str(messages[0].parts[-1].content))
        done = sum(1 for m in messages if isinstance(m, ModelRequest)) - 1
        if done + 1 >= rounds:
            return ModelResponse(parts=[TextPart("done")])
        return ModelResponse(parts=[ToolCallPart("noop", {"i": done}, tool_call_id=f"c{done}")])

    bare = Agent(FunctionModel(noop_model, model_name="noop"))

    @bare.tool_plain
    def noop(i: int) -> int:
        return i

    durable = IronflowAgent(bare)

    @agent(id="bench-pydantic-ai", triggers=["bench.pydantic-ai"])
    async def run_durable(ctx: AgentContext) -> str:
        return (await durable.run(str(ctx.event.data["n"]))).output

    def run_bare(rounds: int) -> Any:
        return asyncio.run(bare.run(str(rounds))).output

    return run_bare, AgentDefinition.must_from_fn(run_durable)


def _openai_agents() -> tuple[Callable[[int], Any], AgentDefinition]:
    import json

    from agents import Agent, ModelResponse, RunConfig, Runner, function_tool
    from agents.models.interface import Model
    from agents.usage import Usage
    from openai.types.responses import (
        ResponseFunctionToolCall,
        ResponseOutputMessage,
        ResponseOutputText,
    )

    from ironflow.contrib.openai_agents import IronflowRunner

    class NoopModel(Model):
        model = "noop"

        async def get_response(
            self, system_instructions: Any, input: Any, *a: Any, **k: Any
        ) -> Any:
            items = [i if isinstance(i, dict) else i.model_dump() for i in input]
            rounds = int(items[0]["content"])
            done = sum(1 for i in items if i.get("type") == "function_call_output")
            usage = Usage(requests=1, input_tokens=1, output_tokens=1, total_tokens=2)
            if done + 1 >= rounds:
                text = ResponseOutputText(type="output_text", text="done", annotations=[])
                out: Any = ResponseOutputMessage(
                    type="message", id="m", role="assistant", status="completed", content=[text]
                )
            else:
                out = ResponseFunctionToolCall(
                    type="function_call", name="noop", arguments=json.dumps({"i": done}),
                    call_id=f"c{done}", id=f"c{done}",
                )  # fmt: skip
            return ModelResponse(output=[out], usage=usage, response_id=None)

        async def stream_response(self, *a: Any, **k: Any) -> Any:
            raise NotImplementedError

    @function_tool
    def noop(i: int) -> int:
        """Nothing."""
        return i

    bare = Agent(name="bench", model=NoopModel(), tools=[noop])
    config = RunConfig(tracing_disabled=True)

    @agent(id="bench-openai-agents", triggers=["bench.openai-agents"])
    async def run_durable(ctx: AgentContext) -> Any:
        result = await IronflowRunner.run(
            bare, str(ctx.event.data["n"]), run_config=config, max_turns=10_000
        )
        return result.final_output

    def run_bare(rounds: int) -> Any:
        return asyncio.run(
            Runner.run(bare, str(rounds), run_config=config, max_turns=10_000)
        ).final_output

    return run_bare, AgentDefinition.must_from_fn(run_durable)


def _overhead_us(
    workdir: str, build: Callable[[], tuple[Callable[[int], Any], AgentDefinition]],
    rounds: int, reps: int,
) -> float:  # fmt: skip
    run_bare, defn = build()
    store = LmdbStore(_fresh(workdir, f"{defn.id}-"))
    store.register_agents([AgentSpec(id=defn.id, triggers=defn.triggers)])
    trigger = defn.triggers[0]

    def bare(n: int) -> float:
        t0 = time.perf_counter()
        run_bare(n)
        return time.perf_counter() - t0

    def durable(n: int) -> float:
        return _timed_runs(store, defn, trigger, [{"n": n}])

    try:
        bare(1), durable(1)  # warm both paths (imports, first-use caches)
        samples = []
        for _ in range(reps):
            per_bare = (bare(rounds) - bare(1)) / (rounds - 1)
            per_durable = (durable(rounds) - durable(1)) / (rounds - 1)
            samples.append((per_durable - per_bare) * 1e6)
        return statistics.median(samples)
    finally:
        store.close()


def pydantic_ai_request_us(workdir: str, rounds: int, reps: int) -> float:
    """µs added per model request (and its tool call) by IronflowAgent over Pydantic AI."""
    return _overhead_us(workdir, _pydantic_ai, rounds, reps)


def openai_agents_request_us(workdir: str, rounds: int, reps: int) -> float:
    """µs added per model call (and its tool call) by IronflowRunner over Runner."""
    return _overhead_us(workdir, _openai_agents, rounds, reps)


def langgraph_saver_node_us(workdir: str, steps: int, reps: int) -> float:
    """µs per node of a LangGraph agent loop, durability="sync", checkpointed by
    IronflowSaver on an LmdbStore with fsync on (a node's writes, then its checkpoint:
    two durable appends).
    """
    from bench.peers.langgraph_savers import node_us
    from ironflow.contrib.langgraph import IronflowSaver

    with LmdbStore(_fresh(workdir, "langgraph-saver-")) as store:
        return node_us(IronflowSaver(store), steps, reps)

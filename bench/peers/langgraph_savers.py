"""The checkpointer row: one LangGraph graph, durability="sync", on each checkpointer.

The graph is an agent loop, the shape of ``examples/langgraph_agent``: an ``agent`` node
and a ``tools`` node taking turns until the state's counter reaches its stop, each a
no-op that bumps the counter. A checkpoint holds the same few channels at every step,
so the cost per node does not grow with the run (in a chain of N distinct nodes every
checkpoint carries a version for each of them, and "per node" would mean "per node of
an N-node graph"). Each saver gets the same graph and timing: ``node_us(saver, ...)``.

Imports LangGraph only; each saver comes from the child that measures it (SqliteSaver
from the LangGraph child, IronflowSaver from the ironflow child; see
``bench._spec.LANGGRAPH_SAVERS``).
"""

from __future__ import annotations

import statistics
import time
import uuid
from typing import Any, TypedDict

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph


class _State(TypedDict):
    n: int
    stop: int
    last: str


def _turn(name: str) -> Any:
    def node(state: _State) -> dict[str, Any]:
        return {"n": state["n"] + 1, "last": name}

    return node


def _next(after: str) -> Any:
    def route(state: _State) -> str:
        return END if state["n"] >= state["stop"] else after

    return route


def build(saver: BaseCheckpointSaver[Any]) -> Any:
    """agent -> tools -> agent -> ... until ``n`` reaches ``stop``: one node a superstep."""
    g = StateGraph(_State)
    g.add_node("agent", _turn("agent"))
    g.add_node("tools", _turn("tools"))
    g.add_edge(START, "agent")
    g.add_conditional_edges("agent", _next("tools"))
    g.add_conditional_edges("tools", _next("agent"))
    return g.compile(checkpointer=saver)


def _invoke(graph: Any, nodes: int) -> float:
    """Seconds to run ``nodes`` nodes on a fresh thread, each checkpoint durable before the next."""
    config = {"configurable": {"thread_id": uuid.uuid4().hex}, "recursion_limit": nodes + 10}
    t0 = time.perf_counter()
    final = graph.invoke({"n": 0, "stop": nodes, "last": ""}, config, durability="sync")
    took = time.perf_counter() - t0
    if final["n"] != nodes:
        raise RuntimeError(f"the graph ran {final['n']} nodes, not {nodes}")
    return took


def node_us(saver: BaseCheckpointSaver[Any], nodes: int = 100, reps: int = 5) -> float:
    """Marginal cost of one checkpointed node, in µs: median of (t_nodes - t_1)/(nodes - 1).

    The differencing cancels each invoke's fixed costs (the first read of the thread,
    the input's checkpoint). One untimed invoke of each length first.
    """
    graph = build(saver)
    _invoke(graph, 1)
    _invoke(graph, nodes)
    samples = []
    for _ in range(reps):
        many = _invoke(graph, nodes)
        one = _invoke(graph, 1)
        samples.append((many - one) / (nodes - 1) * 1e6)
    return statistics.median(samples)

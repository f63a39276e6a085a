"""A LangGraph weather graph: an ``agent`` node and a ``tools`` node, checkpointed by Ironflow.

Everything here is ordinary LangGraph code; the only Ironflow line is the checkpointer,
``builder.compile(checkpointer=IronflowSaver())``. The model is an offline function (no
network, no key) that answers as a chat model would: it asks for ``lookup`` and
``forecast`` at once, then ``convert``, then answers with JSON. ``run.py`` drives it.

Each node and tool notes that it ran (``note``): printed, and appended with the process
id to the file ``$DEMO_LOG`` names, so the demo can count executions from outside the
process, across a ``kill -9``.
"""

from __future__ import annotations

import json
import os
from typing import Annotated, Any, TypedDict

from langchain_core.messages import AIMessage, AnyMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.graph.state import CompiledStateGraph
from langgraph.prebuilt import ToolNode, tools_condition

from examples._gate import wait_for_gate


def note(text: str) -> None:
    """Say that a node or tool ran: as a line of ``$DEMO_LOG`` if it is set, then on stdout
    (in that order: the demo kills the process once it has printed)."""
    log = os.environ.get("DEMO_LOG")
    if log:
        with open(log, "a") as f:  # one short append per line: lines never interleave
            f.write(f"{os.getpid()} {text}\n")
    print(text, flush=True)


class State(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]


def offline_model(messages: list[AnyMessage]) -> AIMessage:
    """What a chat model with these tools would answer here, as a function of the conversation."""
    city = str(messages[0].content)
    done = {m.name: m.content for m in messages if isinstance(m, ToolMessage)}
    turn = sum(isinstance(m, AIMessage) for m in messages) + 1
    if "lookup" not in done:
        calls = [
            {"name": "lookup", "args": {"city": city}, "id": "lookup-1"},
            {"name": "forecast", "args": {"city": city}, "id": "forecast-1"},
        ]
        return AIMessage("", tool_calls=calls, id=f"ai-{turn}")
    if "convert" not in done:
        celsius = json.loads(str(done["forecast"]))["celsius"]
        calls = [{"name": "convert", "args": {"celsius": celsius}, "id": "convert-1"}]
        return AIMessage("", tool_calls=calls, id=f"ai-{turn}")
    answer = {"city": done["lookup"], "fahrenheit": float(str(done["convert"]))}
    return AIMessage(json.dumps(answer), id=f"ai-{turn}")


def agent(state: State) -> dict[str, Any]:
    reply = offline_model(state["messages"])
    note(f"[agent] {reply.id}")
    return {"messages": [reply]}


@tool
def lookup(city: str) -> str:
    """The city's proper name."""
    note(f"[lookup] {city}")
    return city.title()


@tool
def forecast(city: str) -> dict[str, Any]:
    """Tomorrow's temperature in the city, in °C."""
    note(f"[forecast] {city}")
    return {"city": city, "celsius": len(city) * 3}


@tool
def convert(celsius: int) -> float:
    """°C to °F."""
    note(f"[convert] start {celsius}")
    wait_for_gate()  # the demo kills the process here, in the graph's fourth node
    note(f"[convert] done {celsius}")
    return celsius * 9 / 5 + 32


def build(checkpointer: BaseCheckpointSaver[Any]) -> CompiledStateGraph[Any, Any, Any, Any]:
    """agent -> tools -> agent -> ... until the agent answers without a tool call."""
    builder = StateGraph(State)
    builder.add_node("agent", agent)
    builder.add_node("tools", ToolNode([lookup, forecast, convert]))
    builder.add_edge(START, "agent")
    builder.add_conditional_edges("agent", tools_condition)
    builder.add_edge("tools", "agent")
    return builder.compile(checkpointer=checkpointer)


def question(city: str) -> dict[str, Any]:
    """The graph's input: the user asks about a city."""
    return {"messages": [HumanMessage(city, id="question")]}

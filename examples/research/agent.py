"""The research agent (async): plan, search in parallel with asyncio.gather, summarize.

Each search is its own recorded step: the gathered calls take their positions in call
order, so after a crash only the searches that had not finished run again. Offline by
default: a ScriptedProvider plays both the planner and the writer.
"""

from __future__ import annotations

import asyncio
from typing import Any

from examples.research.tools import Hit, search
from ironflow import AgentContext, agent
from ironflow.llm import LlmRequest, Message, ScriptedProvider


def _offline_model(request: LlmRequest) -> str:
    """Plans three queries from the topic, or writes a summary from the notes given."""
    prompt = request.messages[-1].content or ""
    if request.model == "planner":
        topic = prompt.removeprefix("Topic: ")
        return "\n".join(
            [f"what is {topic}", f"{topic} write-ahead logging", f"{topic} idempotency keys"]
        )
    notes = [line[2:] for line in prompt.splitlines() if line.startswith("- ")]
    return f"{len(notes)} sources agree: " + " ".join(notes)


PROVIDER = ScriptedProvider(_offline_model)


@agent(id="research", triggers=["research.requested"], timeout="1h")
async def research(ctx: AgentContext) -> dict[str, Any]:
    topic = ctx.event.data["topic"]
    plan = await ctx.llm(
        model="planner",
        name="plan",
        messages=[
            Message.system("Plan web searches, one per line."),
            Message.user(f"Topic: {topic}"),
        ],
        provider=PROVIDER,
    )
    queries = [line.strip() for line in plan.text.splitlines() if line.strip()]

    # In parallel: each search() call is the step tool.search, tool.search#2, ...
    results: list[list[Hit]] = await asyncio.gather(*(search(query=q) for q in queries))

    sources: dict[str, Hit] = {}
    for hits in results:
        for hit in hits:
            sources.setdefault(hit.url, hit)
    notes = "\n".join(f"- {hit.snippet}" for hit in sources.values())
    summary = await ctx.llm(
        model="writer",
        name="summarize",
        messages=[Message.system("Summarize these notes."), Message.user(notes)],
        provider=PROVIDER,
    )
    return {
        "topic": topic,
        "queries": queries,
        "sources": list(sources),
        "summary": summary.text,
    }

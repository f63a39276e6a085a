"""The doc-processor agent: each tool call is a memoized step."""

from __future__ import annotations

from typing import Any

from examples.doc_processor.tools import classify, ocr, publish
from ironflow import AgentContext, Memory, agent


@agent(
    id="doc-processor",
    description="Durable OCR → classify → publish pipeline",
    triggers=["doc.received"],
    memory=Memory(stream="agent-memory", projection="doc-processor-memory"),
)
def doc_processor(ctx: AgentContext) -> dict[str, Any]:
    doc = ctx.event.data
    ctx.logger.info(f"processing {doc['docId']}")

    # Each tool call is a recorded step. Crash here and the worker resumes from the
    # step that was in flight; completed steps return their recorded output.
    text = ocr(image_url=doc["imageUrl"])["text"]
    category = classify(text=text)["category"]
    publish(doc_id=doc["docId"], category=category)

    # Memory writes are durable too: an event on the agent-memory entity stream, then a
    # wait until the doc-processor-memory projection has applied it.
    ctx.memory.append(
        "doc.processed", {"docId": doc["docId"], "status": "published", "category": category}
    )

    return {"docId": doc["docId"], "category": category}

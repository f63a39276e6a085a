"""The doc-processor's memory projection: the latest record of each processed document."""

from __future__ import annotations

from typing import Any

from ironflow import Event, projection


@projection(name="doc-processor-memory", events=["doc.processed"], initial_state={})
def doc_memory(state: dict[str, Any], event: Event) -> dict[str, Any]:
    # A pure fold: a rebuild from the log gives exactly the state built incrementally.
    data = event.data
    return {**state, data["docId"]: data}

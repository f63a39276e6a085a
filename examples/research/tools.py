"""An offline search engine over a tiny corpus, standing in for a web search API."""

from __future__ import annotations

import asyncio

import attrs

from ironflow import tool


@attrs.frozen
class Hit:
    """One search result."""

    title: str
    url: str
    snippet: str


CORPUS: tuple[Hit, ...] = (
    Hit(
        "Durable execution",
        "https://example.com/durable",
        "Durable execution records each step so a crashed program resumes where it stopped.",
    ),
    Hit(
        "Write-ahead logging",
        "https://example.com/wal",
        "A write-ahead log makes a change durable before it is applied.",
    ),
    Hit(
        "LMDB",
        "https://example.com/lmdb",
        "LMDB is an embedded key-value store with copy-on-write B+trees and one writer.",
    ),
    Hit(
        "Idempotency keys",
        "https://example.com/idempotency",
        "An idempotency key lets a retried request take effect once.",
    ),
    Hit(
        "Sagas",
        "https://example.com/sagas",
        "A saga undoes completed steps with compensations when a later step fails.",
    ),
)


@tool(description="Search the web", retries=2, backoff="500ms", timeout="20s")
async def search(query: str) -> list[Hit]:
    """The hits whose title or snippet shares a word with the query, best first."""
    print(f"[search] {query!r}", flush=True)
    await asyncio.sleep(0.2)  # the network round trip; gathered searches overlap
    words = {w for w in query.lower().split() if len(w) > 3}
    scored = [
        (sum(w in (hit.title + " " + hit.snippet).lower() for w in words), hit) for hit in CORPUS
    ]
    return [hit for score, hit in sorted(scored, key=lambda s: -s[0]) if score > 0][:2]

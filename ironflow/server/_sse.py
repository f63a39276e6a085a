"""Server-sent events: the plumbing any endpoint that pushes to a browser shares.

A stream is a ``text/event-stream`` response kept open; each message is an ``event:``
name and one ``data:`` line of JSON. A comment line every ``KEEPALIVE`` seconds keeps
proxies from closing an idle stream and lets the server notice a client that left.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

__all__ = ["KEEPALIVE", "open_stream", "send_comment", "send_event"]

#: Seconds between keep-alive comments on an idle stream.
KEEPALIVE = 15.0


async def open_stream(request: web.Request) -> web.StreamResponse:
    """Start an event stream answering ``request``."""
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream; charset=utf-8",
            "Cache-Control": "no-cache, no-store",
            # Proxies that buffer (nginx) would hold events back until the buffer fills.
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)
    # Tell EventSource to reconnect after a second if the stream drops.
    await response.write(b"retry: 1000\n\n")
    return response


async def send_event(
    response: web.StreamResponse, event: str, data: Any, *, id: int | str | None = None
) -> None:
    """Send one message; ``data`` is JSON-encoded on a single line.

    An ``id`` is what a reconnecting client sends back as ``Last-Event-ID``.
    """
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    head = "" if id is None else f"id: {id}\n"
    await response.write(f"{head}event: {event}\ndata: {text}\n\n".encode())


async def send_comment(response: web.StreamResponse, text: str = "keep-alive") -> None:
    await response.write(f": {text}\n\n".encode())

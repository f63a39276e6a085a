"""Reading the server's event stream (``GET /events/stream``, server-sent events) back
into events, for :meth:`RemoteStore.tail_events <ironflow.store.RemoteStore.tail_events>`.

Separate from ``_remote.py`` because it is a wire format of its own (``id:`` the log
position, ``data:`` the event as the server's views render it), read line by line from
a long-lived response, unlike the store routes' one JSON reply per request.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ironflow.store._records import Event

if TYPE_CHECKING:
    import http.client

__all__ = ["_sse_events"]


def _sse_events(
    response: http.client.HTTPResponse, conn: http.client.HTTPConnection, deadline: float | None
) -> Iterator[tuple[int, Event]]:
    """(position, event) of each message on an event stream, until ``deadline``."""
    seq: int | None = None
    data: list[str] = []
    while True:
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            if conn.sock is not None:
                conn.sock.settimeout(remaining)
        try:
            raw = response.readline()
        except TimeoutError:
            if deadline is not None and time.monotonic() >= deadline:
                return
            # The server sends a keep-alive every 15 s: this long a silence is a dead link.
            raise ConnectionError("the event stream went silent") from None
        if not raw:
            raise ConnectionError("the event stream ended")
        line = raw.decode("utf-8").rstrip("\r\n")
        if line.startswith("id:"):
            seq = int(line[3:].strip())
        elif line.startswith("data:"):
            data.append(line[5:].strip())
        elif not line and data and seq is not None:
            yield seq, _event_from_json(json.loads("\n".join(data)))
            data = []


def _event_from_json(obj: dict[str, Any]) -> Event:
    """An event as the server's views render it (ISO time), back as a record."""
    import datetime as _dt

    ts = _dt.datetime.fromisoformat(obj["ts"].replace("Z", "+00:00")).timestamp()
    return Event(
        id=obj["id"],
        name=obj["name"],
        data=obj["data"],
        ts=ts,
        seq=obj["seq"],
        stream=obj.get("stream"),
        version=obj.get("version") or 0,
    )

"""Endpoints that answer when something happens: a run's long poll and the event stream.

- ``GET /api/v1/runs/{id}?wait=30s`` (and ``/store/runs/{id}/wait?timeout=``): the run once it is
  finished, or as it is when the wait runs out. The wait parks a coroutine, no thread,
  and is woken by every write through this server that can finish a run (a worker's
  finish, a cancel, an event that cancels), so it answers the moment the run finishes.
  A worker writing the data directory directly, from another process, wakes it too,
  through the store's wake-ups (``Api.listen``); the look every half second is only for
  a wake-up that was lost.
- ``GET /api/v1/events/stream?pattern=order.*``: server-sent events, one message per
  event of the log as it is appended, ``id:`` its log position. A client that
  reconnects with ``Last-Event-ID`` (or ``?after_seq=``) gets every event after it;
  without either the stream starts at the end of the log.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from aiohttp import web

from ironflow._pure._durations import parse_duration
from ironflow._pure._limits import MAX_RUN_WAIT
from ironflow.errors import InvalidInputError
from ironflow.server._sse import KEEPALIVE, open_stream, send_comment, send_event
from ironflow.server._views import event_json
from ironflow.store import FINISHED, Run
from ironflow.store._browse import last_seq
from ironflow.store._tail import check_pattern
from ironflow.store._triggers import trigger_matches

if TYPE_CHECKING:
    from ironflow.server._app import Api

__all__ = ["MAX_RUN_WAIT", "events_stream", "parse_wait", "wait_finished"]

# A lost wake-up (another process's write) costs at most this: look again.
_RECHECK = 0.5
_PAGE = 500


def parse_wait(request: web.Request) -> float:
    """``?wait=30s`` (or ``2.5``, ``500ms``) in seconds; 0 without it."""
    raw = request.query.get("wait")
    if raw is None:
        return 0.0
    seconds = parse_duration(raw[:40], "?wait")
    if seconds > MAX_RUN_WAIT:
        raise InvalidInputError(
            f"?wait may be at most {MAX_RUN_WAIT:g}s, not {raw[:40]!r}; to wait longer, "
            "ask again when the answer shows the run still going"
        )
    return seconds


async def wait_finished(api: Api, run_id: str, seconds: float) -> Run:
    """The run once finished, or as it is after ``seconds``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while True:
        # Taken before reading, so a finish landing after the read still wakes us.
        woken = api.work_event()
        run = await api.quick_call(api.store.get_run, run_id)
        remaining = deadline - loop.time()
        if run.status in FINISHED or remaining <= 0 or api.closing:
            return run
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(woken.wait(), min(remaining, _RECHECK))


def _start(request: web.Request) -> int | None:
    raw = request.headers.get("Last-Event-ID") or request.query.get("after_seq")
    if raw is None:
        return None
    if not raw.isascii() or not raw.isdigit() or len(raw) > 19:
        raise InvalidInputError(
            f"Last-Event-ID and ?after_seq must be an event position (an integer), "
            f"not {raw[:40]!r}"
        )
    return int(raw)


async def events_stream(api: Api, request: web.Request) -> web.StreamResponse:
    """The event log as server-sent events, from ``Last-Event-ID`` or the end."""
    pattern = check_pattern(request.query.get("pattern"))
    start = _start(request)
    cursor = await api.call(last_seq, api.store) if start is None else start
    response = await open_stream(request)
    loop = asyncio.get_running_loop()
    with contextlib.suppress(ConnectionResetError, asyncio.CancelledError):
        idle_since = loop.time()
        while not api.closing:
            transport = request.transport
            if transport is None or transport.is_closing():
                break
            woken = api.work_event()
            page = await api.call(api.store.events, after_seq=cursor, limit=_PAGE)
            for event in page:
                cursor = event.seq
                if pattern is None or trigger_matches(pattern, event.name):
                    await send_event(response, "event", event_json(event), id=event.seq)
                    idle_since = loop.time()
            if len(page) == _PAGE:
                continue
            if loop.time() - idle_since >= KEEPALIVE:
                await send_comment(response)
                idle_since = loop.time()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(woken.wait(), _RECHECK)
    return response

"""``ironflow mcp``: the runs, events and memory of a store as Model Context Protocol tools.

Built on the official ``mcp`` SDK (``pip install 'ironflow[mcp]'``). Read-only tools by
default; ``allow_writes`` adds the tools that change things (emit, cancel, pause,
resume, approve or reject, re-run from a step, rebuild a projection), each marked as
such in its annotations. Every result is JSON, the same rendering as the HTTP API and
``--json``, and is bounded: a listing returns at most ``limit`` items and at most
about 50,000 characters, with a ``next_cursor`` to pass back for more; a single large
value (a step's output, a projection's state) comes as JSON text in pieces.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Annotated, Any

from pydantic import Field

try:
    from mcp.server.mcpserver import MCPServer
    from mcp.server.mcpserver.exceptions import ToolError
    from mcp_types import ToolAnnotations
except ImportError:  # pragma: no cover - depends on the install
    from ironflow.errors import MissingExtraError

    raise MissingExtraError("ironflow mcp", "mcp", "mcp") from None

from ironflow._agent._primitives import approval_event
from ironflow.errors import InvalidInputError, IronflowError
from ironflow.server._views import event_json, projection_json, run_json, step_json
from ironflow.store import Store
from ironflow.store._tail import check_pattern
from ironflow.store._triggers import trigger_matches
from ironflow.store._waits import data_matches

__all__ = ["MAX_RESULT_CHARS", "READ_TOOLS", "WRITE_TOOLS", "build_server"]

#: About the most characters of JSON one tool result holds; more comes with a cursor.
MAX_RESULT_CHARS = 50_000
#: How many of the newest runs a run listing or search looks through.
_MAX_SCAN = 10_000

READ_TOOLS = (
    "list_runs",
    "get_run",
    "get_step",
    "list_agents",
    "list_events",
    "get_projection",
    "read_stream",
    "search_runs",
)
WRITE_TOOLS = (
    "emit_event",
    "cancel_run",
    "pause_run",
    "resume_run",
    "answer_approval",
    "rerun_from_step",
    "rebuild_projection",
)

Limit = Annotated[int, Field(ge=1, le=200, description="At most this many items (1-200).")]
Cursor = Annotated[
    str | None, Field(description="The next_cursor of a previous call, to continue from there.")
]
RunId = Annotated[str, Field(description="A run id, like run_01HZX...")]


def _size(value: Any) -> int:
    return len(json.dumps(value, ensure_ascii=False, default=str))


def _page(items: list[Any], key: str, more: str | None, start: int = 0) -> dict[str, Any]:
    """``{key: items, "next_cursor": ...}``, cut so the JSON stays within the bound.

    Cut short, the cursor is the offset of the first item left out (``start`` is the
    offset of the first item here).
    """
    kept: list[Any] = []
    used = 0
    for i, item in enumerate(items):
        used += _size(item)
        if kept and used > MAX_RESULT_CHARS:
            return {key: kept, "next_cursor": str(start + i), "truncated": True}
        kept.append(item)
    return {key: kept, "next_cursor": more}


def _offset(cursor: str | None) -> int:
    """The position a cursor this server gave out stands for."""
    if cursor is None:
        return 0
    if not cursor.isascii() or not cursor.isdigit() or len(cursor) > 19:
        raise InvalidInputError(f"cursor {cursor!r} is not one this tool gave out")
    return int(cursor)


def _text_piece(value: Any, cursor: str | None) -> dict[str, Any]:
    """A value small enough whole, or its JSON text from the cursor's offset on."""
    text = json.dumps(value, ensure_ascii=False)
    if cursor is None and len(text) <= MAX_RESULT_CHARS:
        return {"value": value}
    start = _offset(cursor)
    end = start + MAX_RESULT_CHARS
    return {
        "json_text": text[start:end],
        "offset": start,
        "total_chars": len(text),
        "next_cursor": str(end) if end < len(text) else None,
    }


class _Tools:
    """The tools' bodies over one store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # -- reading -------------------------------------------------------------------------

    def list_runs(
        self,
        status: Annotated[
            str | None,
            Field(
                description="Only runs with this status: pending, running, sleeping, waiting, "
                "queued, paused, completed, failed or cancelled."
            ),
        ] = None,
        agent: Annotated[str | None, Field(description="Only runs of this agent id.")] = None,
        limit: Limit = 20,
        cursor: Cursor = None,
    ) -> dict[str, Any]:
        """List runs, newest first, with status, agent, triggering event, output or error.

        Returns {"runs": [...], "next_cursor": str | null}; pass next_cursor back as
        cursor for the next page.
        """
        start = _offset(cursor)
        scan = min(start + limit + 1, _MAX_SCAN)
        runs = self.store.list_runs(limit=scan, status=status, agent=agent)
        window = runs[start : start + limit]
        more = str(start + limit) if len(runs) > start + limit else None
        return _page([run_json(r) for r in window], "runs", more, start)

    def get_run(
        self,
        run_id: RunId,
        limit: Annotated[
            int, Field(ge=1, le=200, description="At most this many steps (1-200).")
        ] = 50,
        cursor: Cursor = None,
    ) -> dict[str, Any]:
        """One run: status, event, output or error, timing, and its recorded steps in order
        (each step's id, status, input and output), a page of steps at a time."""
        run = self.store.get_run(run_id)
        steps = self.store.get_steps(run_id)
        start = _offset(cursor)
        window = steps[start : start + limit]
        more = str(start + limit) if len(steps) > start + limit else None
        page = _page([step_json(s) for s in window], "steps", more, start)
        return {"run": run_json(run, self.store.get_lease(run_id)), **page}

    def get_step(
        self,
        run_id: RunId,
        step: Annotated[
            str, Field(description="The step's id (tool.ocr, tool.ocr#2) or its position (0, 1).")
        ],
        cursor: Cursor = None,
    ) -> dict[str, Any]:
        """One recorded step of a run in full: its input and output (or error) and timing.
        A large step comes as JSON text in pieces: pass next_cursor back for the rest."""
        steps = self.store.get_steps(run_id)
        found = [s for s in steps if s.id == step or str(s.position) == step]
        if not found:
            ids = ", ".join(s.id for s in steps[:20]) or "none yet"
            raise InvalidInputError(f"run {run_id} has no step {step!r} (its steps: {ids})")
        return _text_piece(step_json(found[0]), cursor)

    def list_agents(self, limit: Limit = 100, cursor: Cursor = None) -> dict[str, Any]:
        """The agents workers have registered: id, description and the event names
        (triggers) that start their runs; `agent.invoke.<id>` starts one directly."""
        agents = sorted(self.store.agents(), key=lambda a: a.id)
        start = _offset(cursor)
        window = [
            {"id": a.id, "description": a.description, "triggers": list(a.triggers)}
            for a in agents[start : start + limit]
        ]
        more = str(start + limit) if len(agents) > start + limit else None
        return _page(window, "agents", more, start)

    def list_events(
        self,
        pattern: Annotated[
            str | None,
            Field(description="Only events whose name matches: order.* (one part), order.>."),
        ] = None,
        after_seq: Annotated[
            int, Field(ge=0, description="Start after this log position (0: the beginning).")
        ] = 0,
        limit: Limit = 50,
        cursor: Cursor = None,
    ) -> dict[str, Any]:
        """Events of the global log, oldest first, with their data and log position (seq).
        next_cursor is the position to continue after."""
        check_pattern(pattern)
        position = _offset(cursor) if cursor is not None else after_seq
        out: list[dict[str, Any]] = []
        scanned = 0
        while len(out) < limit and scanned < _MAX_SCAN:
            batch = self.store.events(after_seq=position, limit=500)
            if not batch:
                break
            for event in batch:
                position = event.seq
                scanned += 1
                if pattern is None or trigger_matches(pattern, event.name):
                    out.append(event_json(event))
                    if len(out) >= limit:
                        break
        more = str(position) if out or scanned else None
        page = _page(out, "events", more)
        if page.get("truncated"):
            page["next_cursor"] = str(page["events"][-1]["seq"])
        return page

    def get_projection(
        self,
        name: Annotated[str, Field(description="The projection's name.")],
        cursor: Cursor = None,
    ) -> dict[str, Any]:
        """A projection's current state (agent memory) and the log position it reflects.
        A large state comes as JSON text in pieces: pass next_cursor back for the rest."""
        return _text_piece(projection_json(self.store.get_projection(name)), cursor)

    def read_stream(
        self,
        stream_id: Annotated[str, Field(description="The entity stream's id.")],
        from_version: Annotated[int, Field(ge=1, description="The first version to read.")] = 1,
        limit: Limit = 50,
        cursor: Cursor = None,
    ) -> dict[str, Any]:
        """An entity stream's events in version order (1, 2, 3, ...), with their data.
        next_cursor is the version to continue from."""
        version = _offset(cursor) if cursor is not None else from_version
        events = self.store.read_stream(stream_id, from_version=version, limit=limit + 1)
        more = str(events[limit].version) if len(events) > limit else None
        page = _page([event_json(e) for e in events[:limit]], "events", more)
        if page.get("truncated"):
            page["next_cursor"] = str(page["events"][-1]["version"] + 1)
        return page

    def search_runs(
        self,
        match: Annotated[
            dict[str, Any],
            Field(
                description='Fields the triggering event\'s data must have, with equal values; '
                'a key may be a dotted path: {"docId": "doc-2"}, {"user.id": 7}.'
            ),
        ],
        agent: Annotated[str | None, Field(description="Only runs of this agent id.")] = None,
        status: Annotated[str | None, Field(description="Only runs with this status.")] = None,
        limit: Limit = 20,
        cursor: Cursor = None,
    ) -> dict[str, Any]:
        """Runs, newest first, whose triggering event's data matches every field of match.
        Looks through the newest 10,000 runs."""
        start = _offset(cursor)
        runs = self.store.list_runs(limit=_MAX_SCAN, status=status, agent=agent)
        hits = [r for r in runs if data_matches(r.event.data, match)]
        window = hits[start : start + limit]
        more = str(start + limit) if len(hits) > start + limit else None
        return _page([run_json(r) for r in window], "runs", more, start)

    # -- writing -------------------------------------------------------------------------

    def emit_event(
        self,
        name: Annotated[str, Field(description="The event name, like doc.received.")],
        data: Annotated[dict[str, Any], Field(description="The event's data (JSON object).")],
        id: Annotated[
            str | None, Field(description="Idempotency key: an id emitted before starts nothing.")
        ] = None,
    ) -> dict[str, Any]:
        """Emit an event: it is appended to the log and starts one run per agent whose trigger
        matches its name. Returns the event id and the run ids it started."""
        result = self.store.emit(name, data, id=id)
        return {
            "event_id": result.event_id,
            "run_ids": list(result.run_ids),
            "created": result.created,
        }

    def cancel_run(self, run_id: RunId) -> dict[str, Any]:
        """Cancel a run: a pending, sleeping or waiting one now, a running one at its next step
        boundary. Its unfinished child runs are cancelled with it."""
        return run_json(self.store.request_cancel(run_id))

    def pause_run(self, run_id: RunId) -> dict[str, Any]:
        """Pause a run: a pending one now, a running one at its next step boundary."""
        return run_json(self.store.pause_run(run_id))

    def resume_run(self, run_id: RunId) -> dict[str, Any]:
        """Let a paused run go on."""
        return run_json(self.store.resume_run(run_id))

    def answer_approval(
        self,
        run_id: RunId,
        name: Annotated[str, Field(description="The approval's name, as in ctx.approve(name).")],
        approved: Annotated[bool, Field(description="true to approve, false to reject.")],
        reason: Annotated[str | None, Field(description="Why, kept with the answer.")] = None,
    ) -> dict[str, Any]:
        """Approve or reject what a run waits for with ctx.approve(name); the run goes on."""
        self.store.get_run(run_id)
        event, data = approval_event(
            run_id, name, approved=approved, approver="mcp", reason=reason
        )
        result = self.store.emit(event, data)
        return {"event_id": result.event_id, "event": event, "approved": approved}

    def rerun_from_step(
        self,
        run_id: RunId,
        step_id: Annotated[str, Field(description="The id of the step to run again from.")],
    ) -> dict[str, Any]:
        """Re-run a finished run from one of its steps: the steps before it are kept, it and
        those after run again."""
        return run_json(self.store.resume_run(run_id, from_step=step_id))

    def rebuild_projection(
        self, name: Annotated[str, Field(description="The projection's name.")]
    ) -> dict[str, Any]:
        """Ask the worker serving a projection to rebuild its state from the event log.
        Returns the rebuild's ticket; the status's rebuilt count reaches it when done."""
        return {"name": name, "ticket": self.store.request_projection_rebuild(name)}


def _answering(fn: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    """``fn``, its errors (an unknown run, a bad cursor) shown to the client as they are."""

    @functools.wraps(fn)
    def tool(*args: Any, **kwargs: Any) -> dict[str, Any]:
        try:
            return fn(*args, **kwargs)
        except IronflowError as exc:
            raise ToolError(f"{type(exc).__name__}: {exc}") from exc

    return tool


def build_server(store: Store, *, allow_writes: bool = False) -> MCPServer:
    """The MCP server over ``store``: read tools, and the write tools with ``allow_writes``."""
    tools = _Tools(store)
    server = MCPServer(
        name="ironflow",
        instructions="Ironflow's durable agent runs: list and inspect runs and their recorded "
        "steps, events, entity streams and projections (agent memory)."
        + (" Write tools can emit events and control runs." if allow_writes else ""),
    )
    for name in READ_TOOLS:
        server.add_tool(
            _answering(getattr(tools, name)),
            name=name,
            annotations=ToolAnnotations(read_only_hint=True, open_world_hint=False),
            structured_output=False,
        )
    if allow_writes:
        for name in WRITE_TOOLS:
            server.add_tool(
                _answering(getattr(tools, name)),
                name=name,
                annotations=ToolAnnotations(
                    read_only_hint=False,
                    destructive_hint=name in ("cancel_run", "rerun_from_step"),
                    idempotent_hint=name in ("cancel_run", "pause_run", "resume_run"),
                    open_world_hint=False,
                ),
                structured_output=False,
            )
    return server

"""The web dashboard: ``ironflow serve`` serves it at ``/`` beside the API.

The page is plain HTML, CSS and JavaScript shipped in ``ironflow/server/static`` (no
build step, nothing fetched at run time). It reads and acts through its own JSON
endpoints under ``/ui/api``, which a session cookie opens (see ``_session``), so the
API under ``/api/v1`` keeps its bearer tokens and never accepts a cookie.

Each action does what its CLI command does, through the same store call: cancel is
``ironflow run cancel``, approve is ``ironflow approve`` (the same approval event),
re-run is ``ironflow run resume --from-step``. Live updates are one server-sent event
stream per page (``/ui/api/live``) that says "the store changed"; the page then
fetches what it shows again. A change is seen by watching LMDB's last transaction
id, so a write by any process on the data directory counts, not only this server's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import sysconfig
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

import ironflow
from ironflow._agent._primitives import APPROVAL_PREFIX, approval_event
from ironflow._pure._cron import parse_cron
from ironflow._pure._limits import MAX_NAME_BYTES, MAX_REASON_BYTES, MAX_SEQ, MAX_STEP_ID_BYTES
from ironflow.errors import IronflowError, ProjectionNotFoundError
from ironflow.server._session import COOKIE, CSRF_HEADER, SESSION_SECONDS, Session, Sessions
from ironflow.server._sse import KEEPALIVE, open_stream, send_comment, send_event
from ironflow.server._views import (
    iso,
    projection_json,
    run_json,
    run_with_steps_json,
    runner_alive,
)
from ironflow.store import FINISHED, AgentSpec, Run, WorkerInfo
from ironflow.store._browse import (
    event_page,
    last_seq,
    projection_leases,
    run_leases,
    run_page,
    stream_heads,
)
from ironflow.store._liveness import process_alive
from ironflow.store._triggers import why_no_run

if TYPE_CHECKING:
    from ironflow.server._app import Api

__all__ = ["STATIC", "add_dashboard", "user_frame"]

STATIC = Path(__file__).parent / "static"
_ASSETS = {"app.js": "text/javascript", "app.css": "text/css", "favicon.svg": "image/svg+xml"}
#: How often a live stream looks for a change in the store, in seconds.
_LIVE_POLL = 0.15
_MAX_PAGE = 500
_STATUSES = (
    "pending",
    "queued",
    "running",
    "sleeping",
    "waiting",
    "paused",
    "completed",
    "failed",
    "cancelled",
)
# The pages' content security policy: our own scripts and styles only, no frames.
_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class _Refused(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _json(value: Any, status: int = 200) -> web.Response:
    body = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return web.Response(
        body=body.encode(),
        status=status,
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


def _security_headers(response: web.StreamResponse) -> web.StreamResponse:
    response.headers["Content-Security-Policy"] = _CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    # "same-origin", not "no-referrer": with no referrer, a form post says Origin: null.
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["X-Frame-Options"] = "DENY"
    return response


# -- reading requests ------------------------------------------------------------------------


def _q_int(request: web.Request, key: str, default: int, lo: int, hi: int) -> int:
    raw = request.query.get(key)
    if raw is None or raw == "":
        return default
    if not raw.isascii() or not raw.isdigit() or not lo <= int(raw) <= hi:
        raise _Refused(422, "invalid_input", f"?{key} must be an integer from {lo} to {hi}")
    return int(raw)


def _q_text(request: web.Request, key: str, *, max_len: int = MAX_NAME_BYTES) -> str | None:
    raw = request.query.get(key)
    if raw is None or raw == "":
        return None
    if len(raw) > max_len or "\x00" in raw:
        raise _Refused(422, "invalid_input", f"?{key} must be at most {max_len} characters")
    return raw


async def _body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if not raw:
        return {}
    try:
        value = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError):
        raise _Refused(400, "bad_json", "the request body is not valid JSON") from None
    if not isinstance(value, dict):
        raise _Refused(400, "bad_json", "the request body must be a JSON object")
    return value


def _opt_str(body: dict[str, Any], key: str, max_len: int = MAX_REASON_BYTES) -> str | None:
    value = body.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > max_len:
        raise _Refused(422, "invalid_input", f"{key!r} must be a string of at most {max_len}")
    return value


# -- what the pages show ---------------------------------------------------------------------

_FRAME = re.compile(r'^  File "(?P<file>[^"]+)", line (?P<line>\d+), in (?P<function>.+)$')
_LIBRARY_DIRS = tuple(
    str(Path(p).resolve())
    for p in {
        os.path.dirname(ironflow.__file__),
        sysconfig.get_paths()["stdlib"],
        sysconfig.get_paths()["platstdlib"],
        sysconfig.get_paths()["purelib"],
        sysconfig.get_paths()["platlib"],
    }
)


def user_frame(traceback: str | None) -> dict[str, Any] | None:
    """The innermost frame of a traceback that is the user's code, not Ironflow's,
    the standard library's or an installed package's: where to look first."""
    if not traceback:
        return None
    lines = traceback.splitlines()
    found: dict[str, Any] | None = None
    for i, line in enumerate(lines):
        match = _FRAME.match(line)
        if match is None:
            continue
        path = match["file"]
        if path.startswith("<") or os.path.abspath(path).startswith(_LIBRARY_DIRS):
            continue
        after = lines[i + 1] if i + 1 < len(lines) else ""
        code = after.strip() if after.startswith("    ") else ""
        found = {
            "file": path,
            "line": int(match["line"]),
            "function": match["function"],
            "code": code,
        }
    return found


def _step_kind(step_id: str) -> str:
    head = step_id.split("#", 1)[0].split("[", 1)[0]
    for prefix in (
        "tool",
        "llm",
        "sleep",
        "wait",
        "approve",
        "spawn",
        "compensate",
        "memory",
        "parallel",
        "map",
        "patch",
        "now",
        "uuid",
        "random",
    ):
        if head == prefix or head.startswith(prefix + "."):
            return prefix
    return "step"


def _lease_json(run: Run, store: Any) -> Any:
    return store.get_lease(run.id) if run.status == "running" else None


def run_detail(store: Any, run_id: str) -> dict[str, Any]:
    """A run for its page: the ``inspect --json`` object with what the page adds."""
    run = store.get_run(run_id)
    steps = store.get_steps(run.id)
    lease = store.get_lease(run.id)
    out = run_with_steps_json(run, steps, lease)
    if out["error"] is not None:
        out["error"]["user_frame"] = user_frame(out["error"].get("traceback"))
    for step, shown in zip(steps, out["steps"], strict=True):
        shown["kind"] = _step_kind(step.id)
        # Recorded by an earlier lease of the run: the latest attempt replayed it.
        shown["replayed"] = step.attempt < run.attempt
        if shown["error"] is not None:
            shown["error"]["user_frame"] = user_frame(shown["error"].get("traceback"))
        for t in shown["tries"]:
            if t["error"] is not None:
                t["error"]["user_frame"] = user_frame(t["error"].get("traceback"))
    suspension = out["suspension"]
    event = suspension.get("event") if suspension else None
    out["approval"] = (
        event[len(APPROVAL_PREFIX) :]
        if isinstance(event, str) and event.startswith(APPROVAL_PREFIX)
        else None
    )
    out["finished"] = run.status in FINISHED
    if lease is not None:
        out["lease"] = {
            "worker": lease.worker.id,
            "host": lease.worker.host,
            "pid": lease.worker.pid,
            "expires_at": iso(lease.expires_at),
        }
    return out


def _agent_json(spec: AgentSpec, now: float, queued: dict[str, dict[str, int]]) -> dict[str, Any]:
    flow = spec.flow
    crons = []
    for cron in flow.crons if flow is not None else ():
        try:
            nxt = parse_cron(cron.cron, cron.timezone).next_after(now)
        except IronflowError:
            nxt = None
        crons.append(
            {
                "cron": cron.cron,
                "timezone": cron.timezone,
                "catch_up": cron.catch_up,
                "next_fire": iso(nxt),
            }
        )
    return {
        "id": spec.id,
        "description": spec.description,
        "triggers": list(spec.triggers),
        "filter": flow.filter if flow else None,
        "concurrency": (
            {"limit": flow.concurrency.limit, "key": flow.concurrency.key}
            if flow and flow.concurrency
            else None
        ),
        "debounce": (
            {
                "period": flow.debounce.period,
                "key": flow.debounce.key,
                "max_wait": flow.debounce.max_wait,
            }
            if flow and flow.debounce
            else None
        ),
        "cancel_on": [{"event": c.event, "match": c.match} for c in flow.cancel_on] if flow else [],
        "crons": crons,
        "version": flow.version if flow else None,
        "queued": [{"key": k, "runs": n} for k, n in sorted(queued.get(spec.id, {}).items())],
    }


# -- the routes --------------------------------------------------------------------------------


class Dashboard:
    """The dashboard's handlers over the server's :class:`~ironflow.server._app.Api`."""

    def __init__(self, api: Api, token: str | None) -> None:
        self.api = api
        self.store = api.store
        self.sessions = Sessions(token)

    # -- guards --------------------------------------------------------------------------

    def _session(self, request: web.Request) -> Session | None:
        return self.sessions.check(request.cookies.get(COOKIE))

    def page(self, fn: Handler) -> Handler:
        """An HTML page: without a session, the login page instead."""

        async def handler(request: web.Request) -> web.StreamResponse:
            if self._session(request) is None:
                raise web.HTTPFound("/ui/login")
            return _security_headers(await fn(request))

        return handler

    def read(self, fn: Callable[[web.Request], Awaitable[Any]]) -> Handler:
        """A JSON read: without a session, 401."""

        async def handler(request: web.Request) -> web.StreamResponse:
            try:
                if self._session(request) is None:
                    raise _Refused(401, "unauthorized", "sign in to the dashboard at /ui/login")
                result = await fn(request)
                return result if isinstance(result, web.StreamResponse) else _json(result)
            except _Refused as exc:
                return _json({"error": {"code": exc.code, "message": exc.message}}, exc.status)

        return handler

    def act(self, fn: Callable[[web.Request], Awaitable[Any]]) -> Handler:
        """A JSON action: a session, the CSRF header, and no foreign Origin."""

        async def handler(request: web.Request) -> web.StreamResponse:
            try:
                session = self._session(request)
                if session is None:
                    raise _Refused(401, "unauthorized", "sign in to the dashboard at /ui/login")
                self._same_origin(request)
                if not Sessions.csrf_ok(session, request.headers.get(CSRF_HEADER)):
                    raise _Refused(
                        403,
                        "csrf",
                        f"a dashboard action needs the page's {CSRF_HEADER} header; "
                        "reload the page",
                    )
                return _json(await fn(request))
            except _Refused as exc:
                return _json({"error": {"code": exc.code, "message": exc.message}}, exc.status)

        return handler

    @staticmethod
    def _same_origin(request: web.Request) -> None:
        origin = request.headers.get("Origin")
        if origin is None:  # not sent by every browser for same-origin requests
            return
        expected = f"{request.scheme}://{request.host}"
        if origin != expected:
            raise _Refused(403, "csrf", f"cross-site request from {origin!r} refused")

    # -- pages ---------------------------------------------------------------------------------

    async def index(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    async def asset(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name not in _ASSETS:
            raise web.HTTPNotFound()
        if name != "app.css" and self._session(request) is None:
            raise web.HTTPUnauthorized()
        return web.FileResponse(
            STATIC / name,
            headers={"Content-Type": _ASSETS[name], "Cache-Control": "no-cache"},
        )

    async def login_page(self, request: web.Request, *, failed: bool = False) -> web.Response:
        html = (STATIC / "login.html").read_text(encoding="utf-8")
        html = html.replace(
            "<!--error-->",
            '<p class="error" role="alert">That token is not this server\'s token.</p>'
            if failed
            else "",
        )
        response = web.Response(
            text=html,
            content_type="text/html",
            status=401 if failed else 200,
            headers={"Cache-Control": "no-store"},
        )
        return _security_headers(response)  # type: ignore[return-value]

    async def login_get(self, request: web.Request) -> web.StreamResponse:
        if self.sessions.dev or self._session(request) is not None:
            raise web.HTTPFound("/")
        return await self.login_page(request)

    async def login_post(self, request: web.Request) -> web.StreamResponse:
        try:
            self._same_origin(request)
        except _Refused as exc:
            return _json({"error": {"code": exc.code, "message": exc.message}}, exc.status)
        form = await request.post()
        given = form.get("token")
        if not isinstance(given, str) or not self.sessions.token_ok(given) or self.sessions.dev:
            if self.sessions.dev:
                raise web.HTTPFound("/")
            await asyncio.sleep(0.2)  # a guesser gets five tries a second per connection
            return await self.login_page(request, failed=True)
        response = web.HTTPFound("/")
        response.set_cookie(
            COOKIE,
            self.sessions.new_cookie(),
            max_age=SESSION_SECONDS,
            path="/",
            httponly=True,
            samesite="Strict",
            secure=request.secure,
        )
        raise response

    async def logout(self, request: web.Request) -> web.StreamResponse:
        response = web.HTTPFound("/ui/login")
        response.del_cookie(COOKIE, path="/")
        raise response

    # -- reads -----------------------------------------------------------------------------------

    async def session_info(self, request: web.Request) -> Any:
        session = self._session(request)
        assert session is not None
        return {
            "csrf": session.csrf,
            "dev": self.sessions.dev,
            "statuses": list(_STATUSES),
            # Read before the page fetches anything: the live stream's first message
            # then tells whether the store changed since (see app.js startLive).
            "marker": await self.api._run(_change_marker, self.store),
        }

    async def runs(self, request: web.Request) -> Any:
        limit = _q_int(request, "limit", 50, 1, _MAX_PAGE)
        before = _q_text(request, "before")
        status = _q_text(request, "status")
        agent = _q_text(request, "agent")
        query = _q_text(request, "q")
        if status is not None and status not in _STATUSES:
            raise _Refused(422, "invalid_input", f"?status must be one of {', '.join(_STATUSES)}")
        store = self.store

        def work() -> dict[str, Any]:
            started = time.perf_counter()
            page = run_page(
                store, limit=limit, before=before, status=status, agent=agent, query=query
            )
            now = time.time()
            runs = []
            for run, steps in zip(page.runs, page.step_counts, strict=True):
                shown = run_json(run, _lease_json(run, store), now=now)
                shown["steps"] = steps
                runs.append(shown)
            return {
                "runs": runs,
                "next_before": page.next_before,
                "scanned": page.scanned,
                "exhausted": page.exhausted,
                "total": page.total,
                "agents": sorted(a.id for a in store.agents()),
                "server_ms": round((time.perf_counter() - started) * 1000, 2),
            }

        return await self.api._run(work)

    async def run(self, request: web.Request) -> Any:
        run_id = request.match_info["run_id"]
        store = self.store

        def work() -> dict[str, Any]:
            started = time.perf_counter()
            out = run_detail(store, run_id)
            out["server_ms"] = round((time.perf_counter() - started) * 1000, 2)
            return out

        return await self.api._run(work)

    async def events(self, request: web.Request) -> Any:
        limit = _q_int(request, "limit", 50, 1, _MAX_PAGE)
        before = _q_int(request, "before", 0, 0, MAX_SEQ) or None
        store = self.store

        def work() -> dict[str, Any]:
            page = event_page(store, limit=limit, before=before)
            agents = store.agents()
            out = []
            for logged in page.events:
                e = logged.event
                item: dict[str, Any] = {
                    "id": e.id,
                    "seq": e.seq,
                    "name": e.name,
                    "data": e.data,
                    "ts": iso(e.ts),
                    "stream": e.stream,
                    "version": e.version,
                    "runs": list(logged.run_ids),
                    "why_none": None,
                }
                if not logged.run_ids:
                    item["why_none"] = why_no_run(e.name, e.data, e.id, agents)
                out.append(item)
            return {"events": out, "next_before": page.next_before, "last_seq": page.last_seq}

        return await self.api._run(work)

    async def agents(self, request: web.Request) -> Any:
        store = self.store

        def work() -> dict[str, Any]:
            now = time.time()
            queued: dict[str, dict[str, int]] = {}
            for run in run_page(store, limit=10_000, status="queued").runs:
                by_key = queued.setdefault(run.agent, {})
                key = run.concurrency_key or "(no key)"
                by_key[key] = by_key.get(key, 0) + 1
            return {"agents": [_agent_json(a, now, queued) for a in store.agents()]}

        return await self.api._run(work)

    async def workers(self, request: web.Request) -> Any:
        store = self.store
        pollers = self.api.pollers()  # on the loop, where the server keeps them

        def work() -> dict[str, Any]:
            now = time.time()
            workers: dict[str, dict[str, Any]] = {}

            def entry_of(w: WorkerInfo, expires_at: float | None) -> dict[str, Any]:
                return workers.setdefault(
                    w.id,
                    {
                        "id": w.id,
                        "host": w.host,
                        "pid": w.pid,
                        "alive": process_alive(w) is not False,
                        "runs": [],
                        "projections": [],
                        "expires_at": None if expires_at is None else iso(expires_at),
                    },
                )

            for lease in run_leases(store):
                entry = entry_of(lease.worker, lease.expires_at)
                if lease.expires_at > now:
                    entry["runs"].append(lease.run_id)
            for plea in projection_leases(store):
                entry = entry_of(plea.worker, plea.expires_at)
                if plea.expires_at > now:
                    entry["projections"].append(plea.name)
            # Idle workers too, as far as this server knows them: those asking it for runs.
            for p in pollers:
                entry_of(p.worker, None)["agents"] = list(p.agents)
            for entry in workers.values():
                entry["polling_here"] = "agents" in entry
                entry.setdefault("agents", [])
            live = [
                w
                for w in workers.values()
                if w["alive"] and (w["runs"] or w["projections"] or w["polling_here"])
            ]
            return {"workers": sorted(live, key=lambda w: (w["host"], w["pid"]))}

        return await self.api._run(work)

    async def projections(self, request: web.Request) -> Any:
        store = self.store

        def work() -> dict[str, Any]:
            head = last_seq(store)
            out = []
            for status in store.list_projections():
                out.append(
                    {
                        "name": status.name,
                        "events": list(status.events),
                        "partitioned": status.partitioned,
                        "position": status.position,
                        "lag": max(0, head - status.position),
                        "updated_at": iso(status.updated_at),
                        "rebuild_pending": status.rebuild_pending,
                        "runner": status.runner.id if status.runner else None,
                        "runner_alive": runner_alive(status),
                    }
                )
            return {"projections": out, "last_seq": head}

        return await self.api._run(work)

    async def projection(self, request: web.Request) -> Any:
        name = request.match_info["name"]
        try:
            state = await self.api._run(self.store.get_projection, name)
        except ProjectionNotFoundError:
            raise _Refused(404, "projection_not_found", f"no projection named {name!r}") from None
        return projection_json(state)

    async def streams(self, request: web.Request) -> Any:
        after = _q_text(request, "after")
        heads, nxt = await self.api._run(stream_heads, self.store, limit=100, after=after)
        return {"streams": [{"id": s, "version": v} for s, v in heads], "next_after": nxt}

    async def stream(self, request: web.Request) -> Any:
        stream_id = request.match_info["stream_id"]
        from_version = _q_int(request, "from_version", 0, 0, MAX_SEQ)
        events = await self.api._run(
            self.store.read_stream, stream_id, from_version=from_version, limit=200
        )
        return {
            "stream": stream_id,
            "events": [
                {
                    "seq": e.seq,
                    "version": e.version,
                    "name": e.name,
                    "data": e.data,
                    "ts": iso(e.ts),
                }
                for e in events
            ],
        }

    async def live(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events: ``change`` whenever the store has new writes."""
        response = await open_stream(request)
        loop = asyncio.get_running_loop()
        seen = -1
        quiet_since = loop.time()
        with contextlib.suppress(ConnectionResetError, asyncio.CancelledError):
            while not self.api._closing:
                marker = await self.api._run(_change_marker, self.store)
                if marker != seen:
                    seen = marker
                    await send_event(response, "change", {"marker": marker})
                    quiet_since = loop.time()
                elif loop.time() - quiet_since > KEEPALIVE:
                    await send_comment(response)
                    quiet_since = loop.time()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.api._work_event().wait(), _LIVE_POLL)
        return response

    # -- actions, each the store call its CLI command makes ------------------------------------

    async def cancel(self, request: web.Request) -> Any:
        run = await self.api._run(self.store.request_cancel, request.match_info["run_id"])
        self.api.wake()
        return run_json(run)

    async def pause(self, request: web.Request) -> Any:
        run = await self.api._run(self.store.pause_run, request.match_info["run_id"])
        return run_json(run)

    async def resume(self, request: web.Request) -> Any:
        body = await _body(request)
        from_step = _opt_str(body, "from_step", MAX_STEP_ID_BYTES)
        run = await self.api._run(
            self.store.resume_run, request.match_info["run_id"], from_step=from_step
        )
        self.api.wake()
        return run_json(run)

    async def approve(self, request: web.Request) -> Any:
        run_id = request.match_info["run_id"]
        name = request.match_info["name"]
        body = await _body(request)
        approved = body.get("approved", True)
        if not isinstance(approved, bool):
            raise _Refused(422, "invalid_input", "'approved' must be true or false")
        approver = _opt_str(body, "approver", MAX_NAME_BYTES) or "dashboard"
        reason = _opt_str(body, "reason")
        store = self.store

        def work() -> dict[str, Any]:
            store.get_run(run_id)
            event, data = approval_event(
                run_id, name, approved=approved, approver=approver, reason=reason
            )
            result = store.emit(event, data)
            return {"event_id": result.event_id, "event": event, "data": data}

        answer = await self.api._run(work)
        self.api.wake()
        return answer

    async def emit(self, request: web.Request) -> Any:
        body = await _body(request)
        name = body.get("name")
        if not isinstance(name, str) or not name:
            raise _Refused(422, "invalid_input", "'name' must be the event name")
        event_id = _opt_str(body, "id", MAX_NAME_BYTES)
        result = await self.api._run(self.store.emit, name, body.get("data", {}), id=event_id)
        if result.created:
            self.api.wake()
        return {
            "event_id": result.event_id,
            "runs": list(result.run_ids),
            "created": result.created,
            "seq": result.seq,
        }

    async def rebuild(self, request: web.Request) -> Any:
        name = request.match_info["name"]
        try:
            ticket = await self.api._run(self.store.request_projection_rebuild, name)
        except ProjectionNotFoundError:
            raise _Refused(404, "projection_not_found", f"no projection named {name!r}") from None
        self.api.wake()
        return {"ticket": ticket}


def _change_marker(store: Any) -> int:
    """A number that grows with every committed write to the data directory."""
    return int(store.changes())


def add_dashboard(app: web.Application, api: Api, *, token: str | None) -> Dashboard:
    """Serve the dashboard on ``app``: pages at ``/`` and ``/ui``, JSON under ``/ui/api``."""
    d = Dashboard(api, token)
    r = app.router
    r.add_get("/", d.page(d.index))
    r.add_get("/ui", d.page(d.index))
    r.add_get("/ui/", d.page(d.index))
    r.add_get("/ui/static/{name}", d.asset)
    r.add_get("/ui/login", d.login_get)
    r.add_post("/ui/login", d.login_post)
    r.add_post("/ui/logout", d.logout)
    r.add_get("/ui/api/session", d.read(d.session_info))
    r.add_get("/ui/api/live", d.read(d.live))
    r.add_get("/ui/api/runs", d.read(d.runs))
    r.add_get("/ui/api/runs/{run_id}", d.read(d.run))
    r.add_post("/ui/api/runs/{run_id}/cancel", d.act(d.cancel))
    r.add_post("/ui/api/runs/{run_id}/pause", d.act(d.pause))
    r.add_post("/ui/api/runs/{run_id}/resume", d.act(d.resume))
    r.add_post("/ui/api/runs/{run_id}/approvals/{name}", d.act(d.approve))
    r.add_get("/ui/api/events", d.read(d.events))
    r.add_post("/ui/api/events", d.act(d.emit))
    r.add_get("/ui/api/agents", d.read(d.agents))
    r.add_get("/ui/api/workers", d.read(d.workers))
    r.add_get("/ui/api/projections", d.read(d.projections))
    r.add_get("/ui/api/projections/{name}", d.read(d.projection))
    r.add_post("/ui/api/projections/{name}/rebuild", d.act(d.rebuild))
    r.add_get("/ui/api/streams", d.read(d.streams))
    r.add_get("/ui/api/streams/{stream_id}", d.read(d.stream))
    return d

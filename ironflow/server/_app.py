"""The HTTP API: a thin face over an LmdbStore.

Why aiohttp: one dependency, mature and widely deployed, with a strict HTTP parser
that answers malformed requests itself. Being async, a worker waiting in a long-poll
lease costs a parked coroutine, not a thread. Every store call runs on a thread pool,
so steps written by many workers at once reach the LmdbStore together and share one
fsync through its group commit. The exception: a quick call (a step, a finish, an
emit; ``StoreRoute.quick``) that is the only store call in sight runs on the loop's
own thread, over an LmdbStore. Handing it to the pool and back costs two thread
wake-ups, about as much as the commit itself on loopback; alone, it has no one to
share a commit with, and the loop waits for at most that one local commit (see
:meth:`Api._quick`; a PostgreSQL store's call may wait out a database restart, so it
always goes to the pool).

Two kinds of endpoint share one route table:

- for people (``/runs``, ``/runs/{id}``, ``/events``, ``/runs/{id}/cancel``,
  ``/health``): the same JSON as the CLI's ``--json`` views, rendered by ``_views``;
- for :class:`~ironflow.store.RemoteStore` (``/store/...``): the Store protocol, one
  endpoint per row of the store's own route table (``ironflow/store/_routes.py``),
  which RemoteStore builds its requests from too. The row checks every argument before
  the store is called; the server adds no check of its own.

A reply is sent only after the store call returns, and the LmdbStore returns only
after its write is fsync'd: a server killed with ``kill -9`` loses nothing it
acknowledged. Client input never produces a 500: each error is JSON
``{"error": {"code", "message"}}`` with a 4xx status.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import attrs
from aiohttp import web

from ironflow._agent._primitives import approval_event
from ironflow._pure._ids import new_id
from ironflow._pure._limits import MAX_REASON_BYTES
from ironflow._pure._trace import parse_trace
from ironflow.server._live import events_stream, parse_wait, wait_finished
from ironflow.server._main import DEFAULT_MAX_BODY
from ironflow.server._metrics import add_metrics
from ironflow.server._requests import (
    API_PREFIX,
    _auth_middleware,
    _bad,
    _body,
    _error_middleware,
    _http_log,
    _json_response,
    _optional_body,
    _parse,
    _path,
)
from ironflow.server._views import event_json, projection_json, run_json, run_with_steps_json
from ironflow.store import _checks as checks
from ironflow.store._codec import converter
from ironflow.store._lmdb import LmdbStore
from ironflow.store._machine import StoreMachine
from ironflow.store._records import LeasedRun, Run, WorkerInfo
from ironflow.store._routes import ROUTES as STORE
from ironflow.store._routes import STORE_ROUTES, LeaseReply, StoreRoute, WorkReply

__all__ = [
    "DEFAULT_MAX_BODY",
    "PEOPLE_ROUTES",
    "ROUTES",
    "Api",
    "Route",
    "make_app",
]

T = TypeVar("T")

#: How often a waiting lease looks again for orphaned runs (leases lapse without a wake-up).
_RECHECK = 0.5
# A projection advanced by a runner in another process signals nothing here: look again.
_PROJECTION_RECHECK = 0.25
#: How long after its last lease request a worker that holds nothing still counts as
#: connected to this server (an idle remote worker asks again at once: see
#: RemoteStore's ``long_poll``).
POLLER_WINDOW = 10.0


@attrs.define
class Poller:
    """A worker asking this server for runs: the dashboard lists it even while idle
    (the store keeps no record of a worker that holds nothing)."""

    worker: WorkerInfo
    agents: tuple[str, ...]
    last_seen: float
    open_polls: int = 0

# -- the API ---------------------------------------------------------------------------------


@attrs.frozen
class Route:
    """One endpoint: ``method`` and ``path`` under :data:`API_PREFIX`, served by ``handler``.

    ``handler`` names the :class:`Api` method that answers it; a store route's handler
    is ``store:<Store method>`` (see :data:`~ironflow.store._routes.STORE_ROUTES`).
    """

    method: str
    path: str
    handler: str


#: Endpoints for people and scripts: the CLI's JSON views.
PEOPLE_ROUTES: tuple[Route, ...] = (
    Route("GET", "/health", "health"),
    Route("GET", "/runs", "runs"),
    Route("GET", "/runs/{run_id}", "run"),
    Route("POST", "/events", "emit"),
    Route("POST", "/runs/{run_id}/cancel", "cancel"),
    Route("POST", "/runs/{run_id}/pause", "pause"),
    Route("POST", "/runs/{run_id}/resume", "resume"),
    Route("POST", "/runs/{run_id}/fork", "fork"),
    Route("POST", "/runs/{run_id}/approvals/{name}", "approve"),
    Route("GET", "/projections/{name}", "projection"),
    Route("GET", "/streams/{stream_id}", "stream"),
)

#: Every endpoint: the people's, then the Store protocol's for RemoteStore (records as
#: the codec writes them), one per row of the store's route table.
ROUTES: tuple[Route, ...] = PEOPLE_ROUTES + tuple(
    Route(r.method, r.path, "store:" + r.name) for r in STORE_ROUTES
)


class Api:
    """The handlers behind :data:`ROUTES`. Each returns JSON data; the store does the work.

    Guarantees: a handler answers only after its store call returned, so whatever it
    acknowledged is on disk; a request whose arguments fail their checks is answered
    4xx before the store is called, so it changed nothing. A request that waits (a
    lease finding no work, a wait for work or for a projection) holds no thread: it
    parks until a write through this server that may end its wait (an event appended,
    a run released, a projection advanced) wakes it, or its time runs out.
    """

    def __init__(self, store: StoreMachine, *, threads: int = 32) -> None:
        self.store = store
        #: The tracer provider of a server that exports traces (``ironflow serve`` with
        #: the OTEL_* variables set), else None.
        self.tracer_provider: Any | None = None
        self._pool = concurrent.futures.ThreadPoolExecutor(
            threads, thread_name_prefix="ironflow-api"
        )
        self._work: asyncio.Event | None = None
        self._closing = False
        # Wake-ups are numbered; the prefix changes with every server start, so a
        # client's number from before a restart never matches.
        self._instance = new_id()
        self._wakes = 0
        # Store calls on the pool now, and quick calls deciding where to run (_quick).
        self._busy = 0
        self._deciding = 0
        # Only an LmdbStore's quick call is bounded by one local commit: a PostgreSQL
        # store's call may wait out a database that is down, which must not hold the loop.
        self._inline = isinstance(store, LmdbStore)
        #: Workers leasing through this server, by id (touched on the event loop only).
        self._pollers: dict[str, Poller] = {}

    async def _run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        self._busy += 1
        try:
            return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))
        finally:
            self._busy -= 1

    async def _quick(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Make a quick store call on the loop's thread if it is alone, else on the pool.

        Alone: no store call is on the pool, and no other request arrived with this one
        (one turn of the loop lets those that came in the same read start and count
        themselves). Then no group commit is lost, and the loop is held for one quick
        call (one commit of this server's) at most; requests that arrive meanwhile find
        it busy or each other, and go to the pool together. One wait is not bounded by
        this server: LMDB's write lock is shared with the other processes on the data
        directory, so the loop also waits for a write transaction another process has
        open (one commit, unless that process is stopped while holding it, when every
        write waits wherever it runs; reads from the pool would still be answered).
        """
        if not self._inline:
            return await self._run(fn, *args, **kwargs)
        self._deciding += 1
        try:
            await asyncio.sleep(0)
            alone = self._deciding == 1 and self._busy == 0
        finally:
            self._deciding -= 1
        if alone:
            return fn(*args, **kwargs)
        return await self._run(fn, *args, **kwargs)

    def _work_event(self) -> asyncio.Event:
        if self._work is None:
            self._work = asyncio.Event()
        return self._work

    def work_event(self) -> asyncio.Event:
        """Set by the next :meth:`wake`: a waiter takes it before it looks."""
        return self._work_event()

    @property
    def closing(self) -> bool:
        """True once the server is shutting down: waits end now."""
        return self._closing

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a store call on the thread pool."""
        return await self._run(fn, *args, **kwargs)

    async def quick_call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a quick store call (small, bounded work: see ``StoreRoute.quick``) on the
        loop's thread if it is the only store call in sight, else on the thread pool."""
        return await self._quick(fn, *args, **kwargs)

    def wake(self) -> None:
        """Wake every waiting request: new work may be there. Call on the loop."""
        self._wakes += 1
        event = self._work_event()
        self._work = asyncio.Event()
        event.set()

    def listen(self, loop: asyncio.AbstractEventLoop) -> None:
        """Wake the waiting requests also on writes by other processes on the data.

        A worker or ``ironflow emit`` on the same data directory posts a wake-up after
        its commit (``store/_wake.py``); a thread of ours waits for them and wakes the
        long polls on the loop, so they answer at once instead of at their next look.
        """
        wakeups = self.store.wakeups

        def relay() -> None:
            seen = wakeups.current()
            while not self._closing:
                now = wakeups.wait(seen, 1.0)
                if now != seen and not self._closing:
                    seen = now
                    try:
                        loop.call_soon_threadsafe(self.wake)
                    except RuntimeError:
                        return  # the loop is closed: the server is gone

        threading.Thread(target=relay, name="ironflow-wakeups", daemon=True).start()

    def _generation(self) -> str:
        return f"{self._instance}:{self._wakes}"

    def begin_shutdown(self) -> None:
        """Answer waiting lease requests now (empty) and stop long polls from waiting."""
        self._closing = True
        self.wake()

    def close(self) -> None:
        """Wait for store calls in flight, then release the thread pool."""
        self._pool.shutdown(wait=True)

    # -- the Store protocol --------------------------------------------------------------

    def store_handler(self, route: StoreRoute) -> Callable[[web.Request], Awaitable[Any]]:
        """The handler of a store route: its arguments checked by the route, then the call.

        Three calls wait at the server rather than in the store, and have their own
        handler: a lease (a long poll), a wait for work, and a wait for a projection.
        """
        special = {
            "lease_runs": self._lease_runs,
            "wait_for_work": self._wait_for_work,
            "wait_for_projection": self._wait_for_projection,
            "wait_for_run": self._wait_for_run,
        }
        if route.name in special:
            special_handler = special[route.name]

            async def waiting(request: web.Request) -> Any:
                body = await _body(request) if route.has_body else None
                return route.reply_json(
                    await special_handler(request, _parse(route, request, body))
                )

            return waiting
        method: Callable[..., Any] = getattr(self.store, route.name)
        call = self._quick if route.quick else self._run

        async def handler(request: web.Request) -> Any:
            body = await _body(request) if route.has_body else None
            result = await call(method, **_parse(route, request, body))
            if route.wakes:
                self.wake()
            return route.reply_json(result)

        return handler

    def pollers(self) -> list[Poller]:
        """The workers connected to this server now: asking it for runs, or asked within
        :data:`POLLER_WINDOW` seconds. Forgets the others."""
        now = time.time()
        gone = [
            key
            for key, p in self._pollers.items()
            if not p.open_polls and now - p.last_seen > POLLER_WINDOW
        ]
        for key in gone:
            del self._pollers[key]
        return list(self._pollers.values())

    async def _lease_runs(self, request: web.Request, args: dict[str, Any]) -> LeaseReply:
        worker: WorkerInfo = args["worker"]
        poller = self._pollers.get(worker.id)
        if poller is None:
            poller = self._pollers[worker.id] = Poller(worker, (), time.time())
        poller.agents, poller.open_polls = tuple(args["agents"]), poller.open_polls + 1
        try:
            return await self._lease_waiting(request, args)
        finally:
            poller.open_polls -= 1
            poller.last_seen = time.time()

    async def _lease_waiting(self, request: web.Request, args: dict[str, Any]) -> LeaseReply:
        worker: WorkerInfo = args["worker"]
        agents: list[str] = args["agents"]
        limit, ttl = args["limit"], args["ttl"]
        # Runs this worker already holds, for a retry whose first reply was lost.
        reclaimed = await self._run(self._held_by, worker, agents) if args["reclaim"] else []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + args["wait"]
        while True:
            # A client that hung up mid-poll must not be handed runs nobody will read.
            transport = request.transport
            if transport is None or transport.is_closing():
                return LeaseReply(runs=())
            # Taken before looking, so an emit that lands after the look still wakes us.
            event = self._work_event()
            leased = await self._run(self.store.lease_runs, worker, agents, limit=limit, ttl=ttl)
            remaining = deadline - loop.time()
            if leased or reclaimed or remaining <= 0 or self._closing:
                return LeaseReply(runs=tuple(leased), reclaimed=tuple(reclaimed))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), min(remaining, _RECHECK))

    def _held_by(self, worker: WorkerInfo, agents: list[str]) -> list[LeasedRun]:
        """Runs leased to this worker id: asked for by a lease retried after a lost reply.

        The client drops the ones it is executing; the rest were leased by the lost
        reply and would otherwise sit unseen, since a worker never takes over its own
        lease, until it lapsed and another worker took them.
        """
        out = []
        for run in self.store.list_runs(limit=2**31, status="running"):
            lease = self.store.get_lease(run.id)
            if lease is not None and lease.worker.id == worker.id and run.agent in agents:
                steps = tuple(self.store.get_steps(run.id))
                out.append(LeasedRun(run=run, steps=steps, lease=lease))
        return out

    async def _wait_for_work(self, request: web.Request, args: dict[str, Any]) -> WorkReply:
        """Answer once something was written since the client's ``after``, or on timeout.

        This is ``wait_for_work`` for a client thread that is not leasing (a worker's
        projection runner): it learns of new events without polling for them.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + args["timeout"]
        while args["after"] == self._generation() and not self._closing:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._work_event().wait(), remaining)
        return WorkReply(generation=self._generation())

    async def _wait_for_projection(self, request: web.Request, args: dict[str, Any]) -> int:
        name, position = args["name"], args["position"]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + args["timeout"]
        while True:
            event = self._work_event()
            # With no time left to wait, the store only reads where the projection is.
            reached = await self._run(self.store.wait_for_projection, name, position, timeout=0)
            remaining = deadline - loop.time()
            if reached >= position or remaining <= 0 or self._closing:
                return reached
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), min(remaining, _PROJECTION_RECHECK))

    async def _wait_for_run(self, request: web.Request, args: dict[str, Any]) -> Run:
        return await wait_finished(self, args["run_id"], args["timeout"])

    # -- for people ------------------------------------------------------------------
    # Their arguments are the store's: each is read by the store route that takes it.

    async def health(self, request: web.Request) -> Any:
        from ironflow import __version__

        return {"status": "ok", "version": __version__}

    async def runs(self, request: web.Request) -> Any:
        args = _parse(STORE["list_runs"], request, None)
        store = self.store

        def work() -> list[dict[str, Any]]:
            # The same composition as `ironflow run list --json`, so the two agree.
            runs = store.list_runs(**args)
            now = time.time()
            return [
                run_json(r, store.get_lease(r.id) if r.status == "running" else None, now=now)
                for r in runs
            ]

        return await self._run(work)

    async def run(self, request: web.Request) -> Any:
        """The run with its steps; with ``?wait=30s``, once it finished (see _live)."""
        run_id = _parse(STORE["get_run"], request, None)["run_id"]
        store = self.store
        wait = parse_wait(request)
        if wait:
            await wait_finished(self, run_id, wait)

        def work() -> dict[str, Any]:
            run = store.get_run(run_id)
            return run_with_steps_json(run, store.get_steps(run.id), store.get_lease(run.id))

        return await self._run(work)

    async def emit(self, request: web.Request) -> Any:
        """Emit an event: ``{"name": ..., "data": ..., "id": ...}`` (data ``{}`` if left out)."""
        body = await _body(request)
        args = _parse(STORE["emit"], request, {"data": {}, **body})
        if args["trace"] is None:
            # Else the request's W3C headers (ignored when invalid, as the spec says).
            headers = request.headers
            args["trace"] = parse_trace(headers.get("traceparent"), headers.get("tracestate"))
        if args["trace"] is None and self.tracer_provider is not None:
            # Emitted with no context, to a server that traces: an `emit NAME` span is the
            # root of the trace the runs join.
            from ironflow._worker._observe import emitting

            with emitting(self.tracer_provider, args["name"]) as trace:
                result = await self._run(self.store.emit, **{**args, "trace": trace})
        else:
            result = await self._run(self.store.emit, **args)
        if result.created:
            self.wake()  # new runs for leases, a new event for projections
        return converter.unstructure(result)

    async def _run_view(self, request: web.Request, action: Callable[..., Run], **kw: Any) -> Any:
        run_id = _parse(STORE["get_run"], request, None)["run_id"]
        store = self.store

        def work() -> dict[str, Any]:
            run = action(run_id, **kw)
            return run_json(run, store.get_lease(run.id) if run.status == "running" else None)

        answer = await self._run(work)
        self.wake()  # a cancelled run's waiting parent, or a resumed run, is pending again
        return answer

    async def cancel(self, request: web.Request) -> Any:
        """Cancel a run: now if it is not running, else at its next step boundary."""
        return await self._run_view(request, self.store.request_cancel)

    async def pause(self, request: web.Request) -> Any:
        """Pause a run: now if it is not running, else at its next step boundary."""
        return await self._run_view(request, self.store.pause_run)

    async def resume(self, request: web.Request) -> Any:
        """Resume a paused run; with ``{"from_step": STEP_ID}``, re-run a finished one."""
        body = await _optional_body(request)
        from_step = _parse(STORE["resume_run"], request, body)["from_step"]
        return await self._run_view(request, self.store.resume_run, from_step=from_step)

    async def fork(self, request: web.Request) -> Any:
        """Fork a run from a step: ``{"from_step": STEP_ID, "data": {...}}`` (data
        optional); answers the new run."""
        body = await _optional_body(request)
        args = _parse(STORE["fork_run"], request, body)
        del args["run_id"]
        return await self._run_view(request, self.store.fork_run, **args)

    async def approve(self, request: web.Request) -> Any:
        """Answer a run's ``ctx.approve(name)``: emit ``agent.approve.<name>`` for it.

        The body is optional: ``{"approved": true|false, "approver": ..., "reason": ...}``
        (approved by default).
        """
        run_id = _parse(STORE["get_run"], request, None)["run_id"]
        name = _path(request)["name"]
        body = await _optional_body(request)
        unknown = sorted(set(body) - {"approved", "approver", "reason"})
        if unknown:
            raise _bad(
                f"unknown fields {unknown[:5]!r:.200}; an approval takes approved, "
                "approver and reason"
            )
        approved = body.get("approved", True)
        if not isinstance(approved, bool):
            raise _bad("'approved' must be true or false")
        approver = checks.optional_name(body.get("approver"), "'approver'")
        reason = body.get("reason")
        if reason is not None:
            reason = checks.text(reason, "'reason'", max_bytes=MAX_REASON_BYTES, nul=True)
        store = self.store

        def work() -> dict[str, Any]:
            store.get_run(run_id)  # an unknown run is a 404, not an unanswerable event
            event, data = approval_event(
                run_id, name, approved=approved, approver=approver, reason=reason
            )
            result = store.emit(event, data)
            return {"event_id": result.event_id, "event": event, "data": data}

        answer = await self._run(work)
        self.wake()  # the run waiting for it is pending again
        return answer

    async def stream(self, request: web.Request) -> Any:
        args = _parse(STORE["read_stream"], request, None)
        events = await self._run(self.store.read_stream, **args)
        return {"stream": args["stream_id"], "events": [event_json(e) for e in events]}

    async def projection(self, request: web.Request) -> Any:
        """A projection's state; ``?partition=KEY`` (repeated) reads only those partitions."""
        route = STORE["get_projection"]
        partitions = request.query.getall("partition", None)
        args = _parse(route, request, {"partitions": partitions})
        state = await self._run(self.store.get_projection, **args)
        return projection_json(state)


def _endpoint(api: Api, route: Route) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    method: Callable[[web.Request], Awaitable[Any]]
    if route.handler.startswith("store:"):
        method = api.store_handler(STORE[route.handler.removeprefix("store:")])
    else:
        method = getattr(api, route.handler)

    async def endpoint(request: web.Request) -> web.StreamResponse:
        return _json_response(await method(request))

    return endpoint


def make_app(
    store: StoreMachine,
    *,
    token: str | None = None,
    max_body: int = DEFAULT_MAX_BODY,
    metrics: Any | None = None,
    tracer_provider: Any | None = None,
) -> tuple[web.Application, Api]:
    """The aiohttp application over ``store``; a ``token`` makes every request need it.

    ``metrics``: a Prometheus registry served at ``/metrics`` (None: the path says how to
    get one). ``tracer_provider``: an emit without a trace context gets an ``emit NAME``
    span, the root of its runs' trace.
    """
    api = Api(store)
    api.tracer_provider = tracer_provider
    middlewares = [_error_middleware(max_body)]
    if token:
        middlewares.append(_auth_middleware(token))
    app = web.Application(middlewares=middlewares, client_max_size=max_body)
    for route in ROUTES:
        app.router.add_route(route.method, API_PREFIX + route.path, _endpoint(api, route))
    # The event stream is a long-lived text/event-stream response, not one JSON answer.
    app.router.add_route(
        "GET", API_PREFIX + "/events/stream", functools.partial(events_stream, api)
    )
    from ironflow.server._dashboard import add_dashboard

    add_dashboard(app, api, token=token)
    add_metrics(app, metrics)

    async def listen(app: web.Application) -> None:
        api.listen(asyncio.get_running_loop())

    app.on_startup.append(listen)
    return app, api


async def start_site(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Listen on ``host:port`` (0 picks a free port); return the runner and the real port."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=5.0, logger=_http_log)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner, int(runner.addresses[0][1])


async def stop_site(runner: web.AppRunner, api: Api) -> None:
    """Answer waiting long polls, finish requests in flight, then stop listening."""
    api.begin_shutdown()
    await runner.cleanup()
    await asyncio.get_running_loop().run_in_executor(None, api.close)

"""The HTTP API: a thin face over an LmdbStore.

Why aiohttp: one dependency, mature and widely deployed, with a strict HTTP parser
that answers malformed requests itself. Being async, a worker waiting in a long-poll
lease costs a parked coroutine, not a thread. Every store call runs on a thread pool,
so steps written by many workers at once reach the LmdbStore together and share one
fsync through its group commit.

Two kinds of endpoint share one route table:

- for people (``/runs``, ``/runs/{id}``, ``/events``, ``/runs/{id}/cancel``,
  ``/health``): the same JSON as the CLI's ``--json`` views, rendered by ``_views``;
- for :class:`~ironflow.store.RemoteStore` (``/store/...``): the Store protocol, one
  endpoint per method, records as the store's codec writes them.

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
import hmac
import json
import logging
import math
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import attrs
import cattrs
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from ironflow._agent._primitives import approval_event
from ironflow._pure._ids import new_id
from ironflow._pure._trace import TraceContext, parse_trace
from ironflow.errors import (
    ConcurrencyError,
    InvalidInputError,
    LeaseLostError,
    NotSerializableError,
    ProjectionNotFoundError,
    RunNotFoundError,
    StoreError,
)
from ironflow.server._live import events_stream, parse_wait, wait_finished
from ironflow.server._main import DEFAULT_MAX_BODY
from ironflow.server._metrics import METRICS_PATH, add_metrics
from ironflow.server._views import (
    event_json,
    projection_json,
    run_json,
    run_with_steps_json,
)
from ironflow.store import (
    AgentSpec,
    ErrorInfo,
    LeasedRun,
    StepRecord,
    Suspension,
    WorkerInfo,
    converter,
)
from ironflow.store._machine import StoreMachine
from ironflow.store._records import ProjectionSpec, ProjectionWrite
from ironflow.store._triggers import validate_trigger

__all__ = [
    "API_PREFIX",
    "DEFAULT_MAX_BODY",
    "MAX_LONG_POLL",
    "ROUTES",
    "Api",
    "BackgroundServer",
    "Route",
    "make_app",
]

log = logging.getLogger("ironflow.server")

T = TypeVar("T")

API_PREFIX = "/api/v1"
#: The longest a lease request may wait for work, in seconds.
MAX_LONG_POLL = 30.0
#: How often a waiting lease looks again for orphaned runs (leases lapse without a wake-up).
_RECHECK = 0.5
#: The longest one request may wait for a projection to reach a position, in seconds.
MAX_PROJECTION_WAIT = 30.0
# A projection advanced by a runner in another process signals nothing here: look again.
_PROJECTION_RECHECK = 0.25
_MAX_KEY_BYTES = 200
_MAX_LIMIT = 10_000
_MAX_POSITION = 2**63 - 1


class ApiError(Exception):
    """An answer with a 4xx status: raised by handlers, rendered by the error middleware."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def _bad(message: str) -> ApiError:
    return ApiError(422, "invalid_input", message)


# -- reading requests ----------------------------------------------------------------------


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:40]} is out of range")
    return value


async def _body(request: web.Request) -> dict[str, Any]:
    """The request's JSON object. Raises 413 over the size limit, 400 for anything not JSON."""
    raw = await request.read()
    try:
        value = json.loads(
            raw.decode("utf-8"), parse_constant=_reject_constant, parse_float=_finite_float
        )
        # JSON may spell lone surrogates (``"\\ud800"``); they cannot be stored as UTF-8.
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except (ValueError, RecursionError) as exc:
        raise ApiError(400, "bad_json", f"the request body is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ApiError(400, "bad_json", "the request body must be a JSON object")
    return value


def _text(value: Any, what: str, *, max_bytes: int = _MAX_KEY_BYTES) -> str:
    try:
        size = len(value.encode()) if isinstance(value, str) else 0
    except UnicodeEncodeError:
        size = 0
    if not 0 < size <= max_bytes:
        raise _bad(f"{what} must be a string of 1 to {max_bytes} bytes")
    return str(value)


def _opt_text(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    return None if value is None else _text(value, repr(key))


def _str(body: dict[str, Any], key: str) -> str:
    return _text(body.get(key), repr(key))


def _int(body: dict[str, Any], key: str, lo: int, hi: int) -> int:
    value = body.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise _bad(f"{key!r} must be an integer from {lo} to {hi}")
    return value


def _float(
    body: dict[str, Any], key: str, lo: float, hi: float, default: float | None = None
) -> float:
    value = body.get(key, default)
    if not isinstance(value, int | float) or isinstance(value, bool) or not lo <= value <= hi:
        raise _bad(f"{key!r} must be a number from {lo} to {hi}")
    return float(value)


def _strings(body: dict[str, Any], key: str) -> list[str]:
    value = body.get(key)
    if not isinstance(value, list) or len(value) > _MAX_LIMIT:
        raise _bad(f"{key!r} must be a list of at most {_MAX_LIMIT} strings")
    return [_text(item, f"each of {key!r}") for item in value]


def _record(body: dict[str, Any], key: str, cls: type[T]) -> T:
    try:
        return converter.structure(body.get(key), cls)
    except Exception as exc:
        if isinstance(exc, cattrs.BaseValidationError):
            detail = "; ".join(cattrs.transform_error(exc, path=key))
        else:
            detail = f"{type(exc).__name__}: {exc}"
        raise _bad(f"{key!r} is not a valid {cls.__name__}: {detail}") from None


def _check_float(value: float, what: str) -> None:
    if not math.isfinite(value):
        raise _bad(f"{what} must be a finite number")


def _worker(body: dict[str, Any]) -> WorkerInfo:
    worker = _record(body, "worker", WorkerInfo)
    if not worker.id or len(worker.id.encode()) > _MAX_KEY_BYTES or len(worker.host) > 255:
        raise _bad("'worker' needs an id of 1 to 200 bytes and a host name of at most 255")
    # The store probes a same-host holder with kill(pid, 0): only a real pid may get there.
    if not 1 <= worker.pid < 2**31 or len(worker.pid_start) > 64:
        raise _bad("'worker.pid' must be a process id from 1 to 2**31 - 1")
    return worker


def _attempt(body: dict[str, Any]) -> int:
    """The run attempt a write is made for: the store fences it by the lease's attempt."""
    return _int(body, "attempt", 0, 2**31 - 1)


def _trace(body: dict[str, Any], request: web.Request | None = None) -> TraceContext | None:
    """The emitter's trace context: the body's ``trace`` (checked), else the request's
    W3C ``traceparent``/``tracestate`` headers (ignored when invalid, as the spec says)."""
    if body.get("trace") is not None:
        given = _record(body, "trace", TraceContext)
        trace = parse_trace(given.traceparent, given.tracestate)
        if trace is None or trace != given:
            raise _bad(
                "'trace' must be a W3C trace context: traceparent "
                "'00-<32 hex trace id>-<16 hex span id>-<2 hex flags>', and tracestate "
                "printable ASCII of at most 512 characters"
            )
        return trace
    if request is None:
        return None
    return parse_trace(request.headers.get("traceparent"), request.headers.get("tracestate"))


def _error_info(value: ErrorInfo | None) -> None:
    if value is not None and len(value.type) > 1000:
        raise _bad("an error's type name must be at most 1000 characters")


def _step(body: dict[str, Any], run_id: str) -> StepRecord:
    step = _record(body, "step", StepRecord)
    if step.run_id != run_id:
        raise _bad(f"'step.run_id' is {step.run_id!r} but the path names run {run_id!r}")
    if not 0 <= step.position < 2**32 - 1 or not 0 <= step.attempt < 2**31:
        raise _bad("'step.position' must be from 0 to 2**32 - 2 and 'step.attempt' at least 0")
    if not step.id or step.status not in ("completed", "failed"):
        raise _bad("'step.id' must be non-empty and 'step.status' completed or failed")
    _check_float(step.started_at, "'step.started_at'")
    _check_float(step.ended_at, "'step.ended_at'")
    _error_info(step.error)
    return step


def _path_run_id(request: web.Request) -> str:
    """The run id in the path; one no run can have is simply not found, as in the store."""
    run_id = request.match_info.get("run_id", "")
    try:
        size = len(run_id.encode())
    except UnicodeEncodeError:
        size = 0
    if not 0 < size <= _MAX_KEY_BYTES or "\x00" in run_id:
        raise RunNotFoundError(run_id.encode("utf-8", "replace").decode())
    return run_id


def _partition(value: Any) -> str:
    """A partition key to read: a string of at most 250 bytes ('' is the whole state)."""
    try:
        size = len(value.encode()) if isinstance(value, str) else -1
    except UnicodeEncodeError:
        size = -1
    if not 0 <= size <= 250:
        raise _bad("a partition key must be a string of at most 250 bytes")
    return str(value)


def _path_text(request: web.Request, key: str) -> str:
    """A name or id from the path, as the store will check it (a bad one is its error)."""
    value = request.match_info.get(key, "")
    try:
        value.encode()
    except UnicodeEncodeError:
        return ""
    return value


def _query_int(request: web.Request, key: str, default: int, lo: int, hi: int) -> int:
    raw = request.query.get(key)
    if raw is None:
        return default
    if not raw.isascii() or not raw.isdigit() or not lo <= int(raw) <= hi:
        raise _bad(f"?{key} must be an integer from {lo} to {hi}, not {raw[:40]!r}")
    return int(raw)


def _query(request: web.Request) -> tuple[int, str | None, str | None]:
    """``?limit``, ``?status``, ``?agent`` of a run listing."""
    q = request.query
    raw_limit = q.get("limit", "20")
    if not raw_limit.isascii() or not raw_limit.isdigit() or not 1 <= int(raw_limit) <= _MAX_LIMIT:
        raise _bad(f"?limit must be an integer from 1 to {_MAX_LIMIT}, not {raw_limit[:40]!r}")
    filters: list[str | None] = []
    for key in ("status", "agent"):
        value = q.get(key)
        if value is not None:
            _text(value, f"?{key}")
        filters.append(value)
    return int(raw_limit), filters[0], filters[1]


# -- answering -----------------------------------------------------------------------------


def _json_response(value: Any, status: int = 200) -> web.Response:
    body = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return web.Response(body=body.encode(), status=status, content_type="application/json")


def _error_response(status: int, code: str, message: str, **extra: Any) -> web.Response:
    response = _json_response({"error": {"code": code, "message": message, **extra}}, status)
    if status == 401:
        response.headers["WWW-Authenticate"] = "Bearer"
    return response


_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
}


def _error_middleware(max_body: int) -> Any:
    @web.middleware
    async def errors(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as exc:
            return _error_response(exc.status, exc.code, exc.message)
        except web.HTTPRequestEntityTooLarge:
            return _error_response(
                413,
                "too_large",
                f"the request body is over this server's limit of {max_body} bytes "
                "(ironflow serve --max-body)",
            )
        except web.HTTPException as exc:  # the router's 404 and 405
            if exc.status < 400:
                raise  # a redirect (the dashboard's login) is an answer, not an error
            code = _HTTP_CODES.get(exc.status, "bad_request")
            message = f"{request.method} {request.path}: {exc.reason}"
            if exc.status == 404:
                message += f"; the API lives under {API_PREFIX} (try GET {API_PREFIX}/health)"
            return _error_response(exc.status, code, message)
        except RunNotFoundError as exc:
            return _error_response(404, "run_not_found", str(exc))
        except ProjectionNotFoundError as exc:
            return _error_response(404, "projection_not_found", str(exc), name=exc.name)
        except LeaseLostError as exc:
            return _error_response(409, "lease_lost", str(exc))
        except ConcurrencyError as exc:
            return _error_response(
                409, "conflict", str(exc), expected=exc.expected, actual=exc.actual
            )
        except (InvalidInputError, NotSerializableError) as exc:
            return _error_response(422, "invalid_input", str(exc))
        except RecursionError:
            return _error_response(422, "invalid_input", "the request nests values too deeply")
        except StoreError as exc:
            return _error_response(503, "store_unavailable", str(exc))
        except asyncio.CancelledError:
            raise
        except Exception:
            # A bug of ours, not the client's: keep the traceback in the log, not the reply.
            log.exception("error handling %s %s", request.method, request.path)
            return _error_response(500, "internal", "internal server error; see the server log")

    return errors


class _QuietClientErrors(logging.Filter):
    """Log a malformed request (aiohttp's parser answered 4xx) as one line, no traceback.

    The client got its 400; a traceback per garbage request would only bury real errors.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        status = getattr(exc, "code", None) or getattr(exc, "status", None)
        if isinstance(exc, HttpProcessingError) and isinstance(status, int) and status < 500:
            detail = (str(exc.message).strip().splitlines() or [""])[0]
            record.args = (record.getMessage(), status, detail)
            record.msg = "%s (answered %s): %s"
            record.exc_info = None
            record.exc_text = None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


_http_log = logging.getLogger("ironflow.server.http")
_http_log.addFilter(_QuietClientErrors())


def _auth_middleware(token: str) -> Any:
    expected = token.encode("utf-8", "surrogatepass")

    @web.middleware
    async def auth(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if not request.path.startswith(API_PREFIX + "/") and request.path != METRICS_PATH:
            # The dashboard's pages: its own session cookie guards them (_dashboard.py).
            return await handler(request)
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode("utf-8", "surrogatepass"), expected
        ):
            raise ApiError(
                401,
                "unauthorized",
                "this server needs a token: send 'Authorization: Bearer <token>' "
                "(set IRONFLOW_TOKEN for the CLI and workers)",
            )
        return await handler(request)

    return auth


# -- the API ---------------------------------------------------------------------------------


@attrs.frozen
class Route:
    """One endpoint: ``method`` and ``path`` under :data:`API_PREFIX`, served by ``handler``.

    ``handler`` names the :class:`Api` method that answers it.
    """

    method: str
    path: str
    handler: str


ROUTES: tuple[Route, ...] = (
    # For people and scripts: the CLI's JSON views.
    Route("GET", "/health", "health"),
    Route("GET", "/runs", "runs"),
    Route("GET", "/runs/{run_id}", "run"),
    Route("POST", "/events", "emit"),
    Route("POST", "/runs/{run_id}/cancel", "cancel"),
    Route("POST", "/runs/{run_id}/pause", "pause"),
    Route("POST", "/runs/{run_id}/resume", "resume"),
    Route("POST", "/runs/{run_id}/approvals/{name}", "approve"),
    Route("GET", "/projections/{name}", "projection"),
    Route("GET", "/streams/{stream_id}", "stream"),
    # The Store protocol, for RemoteStore: records as the codec writes them.
    Route("GET", "/store/agents", "store_agents"),
    Route("POST", "/store/agents", "store_register_agents"),
    Route("POST", "/store/leases", "store_lease"),
    Route("POST", "/store/heartbeat", "store_heartbeat"),
    Route("GET", "/store/runs", "store_runs"),
    Route("GET", "/store/runs/{run_id}", "store_run"),
    Route("GET", "/store/runs/{run_id}/steps", "store_steps"),
    Route("GET", "/store/runs/{run_id}/lease", "store_get_lease"),
    Route("POST", "/store/runs/{run_id}/steps", "store_record_step"),
    Route("POST", "/store/runs/{run_id}/finish", "store_finish"),
    Route("POST", "/store/runs/{run_id}/release", "store_release"),
    Route("POST", "/store/runs/{run_id}/cancel", "store_cancel"),
    Route("POST", "/store/runs/{run_id}/pause", "store_pause"),
    Route("POST", "/store/runs/{run_id}/resume", "store_resume"),
    Route("POST", "/store/runs/{run_id}/suspend", "store_suspend"),
    Route("POST", "/store/runs/{run_id}/spawn", "store_spawn"),
    Route("POST", "/store/wait", "store_wait"),
    Route("GET", "/store/events", "store_events"),
    Route("GET", "/store/streams/{stream_id}/events", "store_read_stream"),
    Route("POST", "/store/streams/{stream_id}/events", "store_append"),
    Route("POST", "/store/streams/{stream_id}/delete", "store_delete_stream_events"),
    Route("GET", "/store/projections", "store_list_projections"),
    Route("POST", "/store/projections", "store_register_projections"),
    Route("GET", "/store/projections/{name}", "store_projection_status"),
    Route("POST", "/store/projections/{name}/read", "store_get_projection"),
    Route("POST", "/store/projections/{name}/lease", "store_lease_projection"),
    Route("POST", "/store/projections/{name}/release", "store_release_projection"),
    Route("POST", "/store/projections/{name}/write", "store_write_projection"),
    Route("POST", "/store/projections/{name}/rebuild", "store_rebuild_projection"),
    Route("POST", "/store/projections/{name}/wait", "store_wait_for_projection"),
    Route("POST", "/store/prune", "store_prune"),
)


class Api:
    """The handlers behind :data:`ROUTES`. Each returns JSON data; the store does the work.

    Guarantees: a handler answers only after its store call returned, so whatever it
    acknowledged is on disk. A request that waits (a lease finding no work, a wait for
    work or for a projection) holds no thread: it parks until a write through this
    server that may end its wait (an event appended, a run released, a projection
    advanced) wakes it, or its time runs out.
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

    async def _run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))

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

    def wake(self) -> None:
        """Wake every waiting request: new work may be there. Call on the loop."""
        self._wakes += 1
        event = self._work_event()
        self._work = asyncio.Event()
        event.set()

    def _generation(self) -> str:
        return f"{self._instance}:{self._wakes}"

    def begin_shutdown(self) -> None:
        """Answer waiting lease requests now (empty) and stop long polls from waiting."""
        self._closing = True
        self.wake()

    def close(self) -> None:
        """Wait for store calls in flight, then release the thread pool."""
        self._pool.shutdown(wait=True)

    # -- for people ------------------------------------------------------------------

    async def health(self, request: web.Request) -> Any:
        from ironflow import __version__

        return {"status": "ok", "version": __version__}

    async def runs(self, request: web.Request) -> Any:
        limit, status, agent = _query(request)
        store = self.store

        def work() -> list[dict[str, Any]]:
            # The same composition as `ironflow run list --json`, so the two agree.
            runs = store.list_runs(limit=limit, status=status, agent=agent)
            now = time.time()
            return [
                run_json(r, store.get_lease(r.id) if r.status == "running" else None, now=now)
                for r in runs
            ]

        return await self._run(work)

    async def run(self, request: web.Request) -> Any:
        """The run with its steps; with ``?wait=30s``, once it finished (see _live)."""
        run_id = _path_run_id(request)
        store = self.store
        wait = parse_wait(request)
        if wait:
            await wait_finished(self, run_id, wait)

        def work() -> dict[str, Any]:
            run = store.get_run(run_id)
            return run_with_steps_json(run, store.get_steps(run.id), store.get_lease(run.id))

        return await self._run(work)

    async def emit(self, request: web.Request) -> Any:
        body = await _body(request)
        if not isinstance(body.get("name"), str):
            raise _bad("'name' must be the event name, a string")
        event_id = body.get("id")
        if event_id is not None and not isinstance(event_id, str):
            raise _bad("'id' must be a string or null")
        name, data, trace = body["name"], body.get("data", {}), _trace(body, request)
        if trace is None and self.tracer_provider is not None:
            # Emitted with no context, to a server that traces: an `emit NAME` span is the
            # root of the trace the runs join.
            from ironflow._worker._observe import emitting

            with emitting(self.tracer_provider, name) as trace:
                result = await self._run(self.store.emit, name, data, id=event_id, trace=trace)
        else:
            result = await self._run(self.store.emit, name, data, id=event_id, trace=trace)
        if result.created:
            self.wake()  # new runs for leases, a new event for projections
        return converter.unstructure(result)

    async def cancel(self, request: web.Request) -> Any:
        run_id = _path_run_id(request)
        store = self.store

        def work() -> dict[str, Any]:
            run = store.request_cancel(run_id)
            return run_json(run, store.get_lease(run.id) if run.status == "running" else None)

        answer = await self._run(work)
        self.wake()  # a parent waiting for the cancelled run is pending again
        return answer

    async def pause(self, request: web.Request) -> Any:
        """Pause a run: now if it is not running, else at its next step boundary."""
        run_id = _path_run_id(request)
        store = self.store

        def work() -> dict[str, Any]:
            run = store.pause_run(run_id)
            return run_json(run, store.get_lease(run.id) if run.status == "running" else None)

        return await self._run(work)

    async def resume(self, request: web.Request) -> Any:
        """Resume a paused run; with ``{"from_step": STEP_ID}``, re-run a finished one."""
        run_id = _path_run_id(request)
        body = await _body(request) if await request.read() else {}
        from_step = _opt_text(body, "from_step")
        store = self.store

        def work() -> dict[str, Any]:
            run = store.resume_run(run_id, from_step=from_step)
            return run_json(run, store.get_lease(run.id) if run.status == "running" else None)

        answer = await self._run(work)
        self.wake()  # the run is pending again
        return answer

    # -- the Store protocol ------------------------------------------------------------

    async def store_agents(self, request: web.Request) -> Any:
        return converter.unstructure(await self._run(self.store.agents))

    async def store_register_agents(self, request: web.Request) -> Any:
        body = await _body(request)
        agents = _record(body, "agents", list[AgentSpec])
        for spec in agents:
            _text(spec.id, "an agent id")
            for trigger in spec.triggers:
                why = validate_trigger(trigger)
                if why is not None or len(trigger) > _MAX_KEY_BYTES:
                    raise _bad(f"agent {spec.id!r}: {why or 'a trigger is at most 200 bytes'}")
        await self._run(self.store.register_agents, agents)
        return {}

    async def store_lease(self, request: web.Request) -> Any:
        body = await _body(request)
        worker = _worker(body)
        agents = _strings(body, "agents")
        limit = _int(body, "limit", 1, 1000)
        ttl = _float(body, "ttl", 0.001, 86400.0)
        wait = _float(body, "wait", 0.0, MAX_LONG_POLL, default=0.0)
        # Runs this worker already holds, for a retry whose first reply was lost.
        reclaimed = await self._run(self._held_by, worker, agents) if body.get("reclaim") else []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while True:
            # A client that hung up mid-poll must not be handed runs nobody will read.
            transport = request.transport
            if transport is None or transport.is_closing():
                return {"runs": [], "reclaimed": []}
            # Taken before looking, so an emit that lands after the look still wakes us.
            event = self._work_event()
            leased = await self._run(self.store.lease_runs, worker, agents, limit=limit, ttl=ttl)
            remaining = deadline - loop.time()
            if leased or reclaimed or remaining <= 0 or self._closing:
                return {
                    "runs": converter.unstructure(leased),
                    "reclaimed": converter.unstructure(reclaimed),
                }
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

    async def store_heartbeat(self, request: web.Request) -> Any:
        body = await _body(request)
        worker = _worker(body)
        run_ids = _strings(body, "run_ids")
        ttl = _float(body, "ttl", 0.001, 86400.0)
        held = await self._run(self.store.heartbeat, worker, run_ids, ttl=ttl)
        return {"held": sorted(held)}

    async def store_runs(self, request: web.Request) -> Any:
        limit, status, agent = _query(request)
        runs = await self._run(self.store.list_runs, limit=limit, status=status, agent=agent)
        return converter.unstructure(runs)

    async def store_run(self, request: web.Request) -> Any:
        run_id = _path_run_id(request)
        wait = parse_wait(request)
        if wait:
            return converter.unstructure(await wait_finished(self, run_id, wait))
        return converter.unstructure(await self._run(self.store.get_run, run_id))

    async def store_steps(self, request: web.Request) -> Any:
        return converter.unstructure(await self._run(self.store.get_steps, _path_run_id(request)))

    async def store_get_lease(self, request: web.Request) -> Any:
        return converter.unstructure(await self._run(self.store.get_lease, _path_run_id(request)))

    async def store_record_step(self, request: web.Request) -> Any:
        run_id = _path_run_id(request)
        body = await _body(request)
        worker = _worker(body)
        ack = await self._run(self.store.record_step, worker, _step(body, run_id))
        return converter.unstructure(ack)

    async def store_finish(self, request: web.Request) -> Any:
        run_id = _path_run_id(request)
        body = await _body(request)
        worker = _worker(body)
        attempt = _attempt(body)
        status = _str(body, "status")
        error = None if body.get("error") is None else _record(body, "error", ErrorInfo)
        _error_info(error)
        run = await self._run(
            self.store.finish_run,
            worker,
            run_id,
            status=status,
            output=body.get("output"),
            error=error,
            attempt=attempt,
        )
        self.wake()  # a wait for this run ends; its parent, if waiting for it, is pending
        return converter.unstructure(run)

    async def store_release(self, request: web.Request) -> Any:
        run_id = _path_run_id(request)
        body = await _body(request)
        worker = _worker(body)
        await self._run(self.store.release_run, worker, run_id, attempt=_attempt(body))
        self.wake()
        return {}

    async def store_cancel(self, request: web.Request) -> Any:
        run = await self._run(self.store.request_cancel, _path_run_id(request))
        self.wake()  # a parent waiting for the cancelled run is pending again
        return converter.unstructure(run)

    async def store_pause(self, request: web.Request) -> Any:
        run = await self._run(self.store.pause_run, _path_run_id(request))
        return converter.unstructure(run)

    async def store_resume(self, request: web.Request) -> Any:
        run_id = _path_run_id(request)
        from_step = _opt_text(await _body(request), "from_step")
        run = await self._run(self.store.resume_run, run_id, from_step=from_step)
        self.wake()
        return converter.unstructure(run)

    async def store_suspend(self, request: web.Request) -> Any:
        run_id = _path_run_id(request)
        body = await _body(request)
        worker = _worker(body)
        suspension = _record(body, "suspension", Suspension)
        result = await self._run(
            self.store.suspend_run, worker, run_id, suspension, attempt=_attempt(body)
        )
        return converter.unstructure(result)

    async def store_spawn(self, request: web.Request) -> Any:
        run_id = _path_run_id(request)
        body = await _body(request)
        worker = _worker(body)
        child = await self._run(
            self.store.spawn_run,
            worker,
            run_id,
            _str(body, "step_id"),
            _str(body, "agent"),
            body.get("data"),
            attempt=_attempt(body),
            trace=_trace(body),
        )
        self.wake()  # the child is a new pending run
        return converter.unstructure(child)

    async def approve(self, request: web.Request) -> Any:
        """Answer a run's ``ctx.approve(name)``: emit ``agent.approve.<name>`` for it.

        The body is optional: ``{"approved": true|false, "approver": ..., "reason": ...}``
        (approved by default).
        """
        run_id = _path_run_id(request)
        name = _path_text(request, "name")
        body = await _body(request) if await request.read() else {}
        approved = body.get("approved", True)
        if not isinstance(approved, bool):
            raise _bad("'approved' must be true or false")
        approver = _opt_text(body, "approver")
        reason = body.get("reason")
        if reason is not None:
            reason = _text(reason, "'reason'", max_bytes=4000)
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

    async def store_wait(self, request: web.Request) -> Any:
        """Answer once something was written since the client's ``after``, or on timeout.

        This is ``wait_for_work`` for a client thread that is not leasing (a worker's
        projection runner): it learns of new events without polling for them.
        """
        body = await _body(request)
        after = body.get("after")
        deadline = asyncio.get_running_loop().time() + _float(body, "timeout", 0.0, MAX_LONG_POLL)
        while after == self._generation() and not self._closing:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._work_event().wait(), remaining)
        return {"generation": self._generation()}

    # -- the event log and entity streams -----------------------------------------------

    async def store_events(self, request: web.Request) -> Any:
        after_seq = _query_int(request, "after_seq", 0, 0, _MAX_POSITION - 1)
        limit = _query_int(request, "limit", 1000, 1, _MAX_LIMIT)
        events = await self._run(self.store.events, after_seq=after_seq, limit=limit)
        return converter.unstructure(events)

    async def store_read_stream(self, request: web.Request) -> Any:
        from_version = _query_int(request, "from_version", 0, 0, _MAX_POSITION)
        limit = _query_int(request, "limit", 1000, 1, _MAX_LIMIT)
        events = await self._run(
            self.store.read_stream,
            _path_text(request, "stream_id"),
            from_version=from_version,
            limit=limit,
        )
        return converter.unstructure(events)

    async def store_append(self, request: web.Request) -> Any:
        body = await _body(request)
        expected = body.get("expected_version")
        if expected is not None:
            expected = _int(body, "expected_version", 0, _MAX_POSITION)
        if not isinstance(body.get("name"), str):
            raise _bad("'name' must be the event name, a string")
        event = await self._run(
            self.store.append_to_stream,
            _path_text(request, "stream_id"),
            body["name"],
            body.get("data"),
            expected_version=expected,
            idempotency_key=_opt_text(body, "idempotency_key"),
        )
        self.wake()
        return converter.unstructure(event)

    async def store_delete_stream_events(self, request: web.Request) -> Any:
        body = await _body(request)
        versions = body.get("versions")
        if versions is not None and (
            not isinstance(versions, list)
            or len(versions) > _MAX_LIMIT
            or not all(type(v) is int and 1 <= v <= _MAX_POSITION for v in versions)
        ):
            raise _bad(f"'versions' must be null or a list of at most {_MAX_LIMIT} versions")
        deleted = await self._run(
            self.store.delete_stream_events, _path_text(request, "stream_id"), versions
        )
        return {"deleted": deleted}

    async def stream(self, request: web.Request) -> Any:
        stream_id = _path_text(request, "stream_id")
        from_version = _query_int(request, "from_version", 0, 0, _MAX_POSITION)
        limit = _query_int(request, "limit", 1000, 1, _MAX_LIMIT)
        events = await self._run(
            self.store.read_stream, stream_id, from_version=from_version, limit=limit
        )
        return {"stream": stream_id, "events": [event_json(e) for e in events]}

    # -- projections -----------------------------------------------------------------------

    async def projection(self, request: web.Request) -> Any:
        partitions = request.query.getall("partition", None)
        if partitions is not None:
            partitions = [_partition(p) for p in partitions]
        state = await self._run(
            self.store.get_projection, _path_text(request, "name"), partitions=partitions
        )
        return projection_json(state)

    async def store_register_projections(self, request: web.Request) -> Any:
        body = await _body(request)
        specs = _record(body, "specs", list[ProjectionSpec])
        for spec in specs:
            for name in spec.events:
                _text(name, f"projection {spec.name!r}: an event name")
        await self._run(self.store.register_projections, specs)
        self.wake()
        return {}

    async def store_list_projections(self, request: web.Request) -> Any:
        return converter.unstructure(await self._run(self.store.list_projections))

    async def store_projection_status(self, request: web.Request) -> Any:
        status = await self._run(self.store.projection_status, _path_text(request, "name"))
        return converter.unstructure(status)

    async def store_get_projection(self, request: web.Request) -> Any:
        body = await _body(request)
        partitions = body.get("partitions")
        if partitions is not None:
            if not isinstance(partitions, list) or len(partitions) > _MAX_LIMIT:
                raise _bad(f"'partitions' must be null or a list of at most {_MAX_LIMIT} strings")
            partitions = [_partition(p) for p in partitions]
        state = await self._run(
            self.store.get_projection, _path_text(request, "name"), partitions=partitions
        )
        return converter.unstructure(state)

    async def store_lease_projection(self, request: web.Request) -> Any:
        body = await _body(request)
        worker = _worker(body)
        ttl = _float(body, "ttl", 0.001, 86400.0)
        held = await self._run(
            self.store.lease_projection, worker, _path_text(request, "name"), ttl=ttl
        )
        return {"held": held}

    async def store_release_projection(self, request: web.Request) -> Any:
        worker = _worker(await _body(request))
        await self._run(self.store.release_projection, worker, _path_text(request, "name"))
        self.wake()
        return {}

    async def store_write_projection(self, request: web.Request) -> Any:
        name = _path_text(request, "name")
        body = await _body(request)
        worker = _worker(body)
        write = _record(body, "write", ProjectionWrite)
        if write.name != name:
            raise _bad(f"'write.name' is {write.name!r} but the path names {name!r}")
        ticket = write.rebuild_ticket
        if not (
            0 <= write.from_position <= _MAX_POSITION
            and 0 <= write.to_position <= _MAX_POSITION
            and (ticket is None or 0 <= ticket <= _MAX_POSITION)
        ):
            raise _bad("'write' positions and rebuild_ticket must be from 0 to 2**63 - 1")
        status = await self._run(self.store.write_projection, worker, write)
        self.wake()
        return converter.unstructure(status)

    async def store_rebuild_projection(self, request: web.Request) -> Any:
        ticket = await self._run(self.store.request_projection_rebuild, _path_text(request, "name"))
        self.wake()
        return {"ticket": ticket}

    async def store_wait_for_projection(self, request: web.Request) -> Any:
        name = _path_text(request, "name")
        body = await _body(request)
        position = _int(body, "position", 0, _MAX_POSITION)
        timeout = _float(body, "timeout", 0.0, MAX_PROJECTION_WAIT)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            event = self._work_event()
            # With no time left to wait, the store only reads where the projection is.
            reached = await self._run(self.store.wait_for_projection, name, position, timeout=0)
            remaining = deadline - loop.time()
            if reached >= position or remaining <= 0 or self._closing:
                return {"position": reached}
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), min(remaining, _PROJECTION_RECHECK))

    # -- retention ---------------------------------------------------------------------------

    async def store_prune(self, request: web.Request) -> Any:
        body = await _body(request)
        older_than = _float(body, "older_than", 0.0, 1e12)
        statuses = None if body.get("statuses") is None else _strings(body, "statuses")
        dry_run = body.get("dry_run", False)
        if not isinstance(dry_run, bool):
            raise _bad("'dry_run' must be true or false")
        result = await self._run(
            self.store.prune_runs, older_than=older_than, statuses=statuses, dry_run=dry_run
        )
        return converter.unstructure(result)


def _endpoint(api: Api, name: str) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    method: Callable[[web.Request], Awaitable[Any]] = getattr(api, name)

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
        app.router.add_route(route.method, API_PREFIX + route.path, _endpoint(api, route.handler))
    # The event stream is a long-lived text/event-stream response, not one JSON answer.
    app.router.add_route(
        "GET", API_PREFIX + "/events/stream", functools.partial(events_stream, api)
    )
    from ironflow.server._dashboard import add_dashboard

    add_dashboard(app, api, token=token)
    add_metrics(app, metrics)
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


class BackgroundServer:
    """The server on a thread of this process: for tests and for embedding.

    ``with BackgroundServer(store) as url: ...`` serves ``store`` at ``url`` (a free
    port on 127.0.0.1 unless told otherwise) until the block ends.
    """

    def __init__(
        self,
        store: StoreMachine,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        max_body: int = DEFAULT_MAX_BODY,
        metrics: Any | None = None,
    ) -> None:
        self.store = store
        self.host = host
        self.port = port
        self.token = token
        self.max_body = max_body
        self.metrics = metrics
        self.url = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def start(self) -> str:
        self._thread = threading.Thread(target=self._main, name="ironflow-server", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error
        return self.url

    def _main(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        app, api = make_app(
            self.store, token=self.token, max_body=self.max_body, metrics=self.metrics
        )
        try:
            runner, port = await start_site(app, self.host, self.port)
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self.port = port
        self.url = f"http://{self.host}:{port}"
        self._ready.set()
        await self._stop.wait()
        await stop_site(runner, api)

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(timeout=30)

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

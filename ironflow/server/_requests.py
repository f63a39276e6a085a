"""Requests in, answers out: what every endpoint of the server shares.

A request's body is read as strict JSON (an object; no NaN, no lone surrogates) and
its path arguments as text; an error a handler or the store raises is answered as JSON
``{"error": {"code", "message"}}`` with its status, a 4xx for anything the client sent;
with a token, the bearer token is checked before any API handler runs; a malformed
request that aiohttp's parser refused is logged as one line. Separate from ``_app.py``
because none of it depends on which endpoint is called: ``_app.py`` is the endpoints
and the handlers behind them.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import math
import re
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from ironflow.errors import (
    ConcurrencyError,
    InvalidInputError,
    LeaseLostError,
    NotSerializableError,
    ProjectionNotFoundError,
    RunNotFoundError,
    StoreError,
)
from ironflow.server._metrics import METRICS_PATH
from ironflow.store._routes import StoreRoute

__all__ = ["API_PREFIX", "ApiError"]

log = logging.getLogger("ironflow.server")

API_PREFIX = "/api/v1"


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


class _ClientGone(Exception):
    """The client hung up before its request was read whole: there is no one to answer."""


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


#: A JSON escape of a UTF-16 surrogate (or a text that merely looks like one: then the
#: full check runs, which is only slower).
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:40]} is out of range")
    return value


async def _read(request: web.Request) -> bytes:
    """The request's body; :class:`_ClientGone` if the client hung up halfway."""
    try:
        return await request.read()
    except ConnectionResetError:
        raise _ClientGone from None


async def _body(request: web.Request) -> dict[str, Any]:
    """The request's JSON object. Raises 413 over the size limit, 400 for anything not JSON."""
    raw = await _read(request)
    try:
        value = json.loads(
            raw.decode("utf-8"), parse_constant=_reject_constant, parse_float=_finite_float
        )
        # JSON may spell lone surrogates (``"\\ud800"``); they cannot be stored as UTF-8.
        # Valid UTF-8 holds none, so only a body with such an escape needs the check.
        if _SURROGATE_ESCAPE.search(raw):
            json.dumps(value, ensure_ascii=False).encode("utf-8")
    except (ValueError, RecursionError) as exc:
        raise ApiError(400, "bad_json", f"the request body is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ApiError(400, "bad_json", "the request body must be a JSON object")
    return value


async def _optional_body(request: web.Request) -> dict[str, Any]:
    """The JSON object of a request whose body may be left out (then ``{}``)."""
    return await _body(request) if await _read(request) else {}


def _path(request: web.Request) -> dict[str, str]:
    """The path's arguments; one that is not UTF-8 text reads as '' (no record has it)."""
    out = {}
    for key, value in request.match_info.items():
        try:
            value.encode()
        except UnicodeEncodeError:
            value = ""
        out[key] = value
    return out


def _parse(route: StoreRoute, request: web.Request, body: dict[str, Any] | None) -> dict[str, Any]:
    """``route``'s checked arguments from ``request`` (a bad one raises its 4xx error)."""
    return route.parse(_path(request), request.query, body)


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
        except (_ClientGone, ConnectionResetError):
            # Nobody to answer and nothing done: one line, not a traceback at ERROR. (A
            # handler of its own, the dashboard's, reading a body meets the same.)
            log.info(
                "%s %s: the client hung up before sending the whole body",
                request.method,
                request.path,
            )
            return _error_response(400, "bad_request", "the request body was cut short")
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

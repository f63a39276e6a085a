"""How RemoteStore's calls reach the server: one store route sent until it answers.

The request is built from the route's row (``_routes.py``), sent on this thread's
keep-alive connection, and repeated with backoff while the server cannot be reached
(one warning per outage); the reply is read back, or turned into the error the store
itself would raise. Separate from ``_remote.py`` because this is the same for every
Store method: what each method sends, and why repeating it is safe, is ``_remote.py``'s.

Why a transport of its own (``_http.Connection``): one keep-alive connection per
thread is all a worker needs (each of its threads makes one request at a time), and a
recorded step costs one request of a few hundred bytes, so sending it in one write and
reading only the status, length and body of the reply is most of what the client can
save (``_http``'s docstring has the numbers' reason).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import urllib.parse
from typing import Any

import attrs

from ironflow.errors import (
    AuthError,
    ConcurrencyError,
    ConfigError,
    InvalidInputError,
    LeaseLostError,
    ProjectionNotFoundError,
    RunNotFoundError,
    ServerUnavailableError,
    StoreError,
)
from ironflow.store._http import Connection, request_head
from ironflow.store._routes import ROUTES, StoreRoute

__all__ = ["RemoteCalls"]

log = logging.getLogger("ironflow.remote")

_API = "/api/v1"
_BACKOFF_START = 0.05
_BACKOFF_MAX = 2.0
# A reused keep-alive connection the server has since closed fails at once; that is
# not an outage, and the request never reached a handler. (``_http.BadResponse``, a
# reply that is not HTTP or is cut short, is a ConnectionError: an OSError.)
_CONNECTION_ERRORS: tuple[type[Exception], ...] = (OSError,)


@attrs.frozen
class _Reply:
    status: int
    data: Any
    #: True if the request was sent more than once: its first reply may have been lost.
    retried: bool


class RemoteCalls:
    """The connection settings a RemoteStore is made with, and its calls to the server.

    Safe to share between threads: each thread has its own connection.
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        timeout: float = 30.0,
        long_poll: float = 2.0,
        give_up_after: float | None = None,
    ) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(
                f"IRONFLOW_URL must be an http:// or https:// URL of an Ironflow server "
                f"(like http://127.0.0.1:9123), not {url!r}"
            )
        try:
            port = parts.port
        except ValueError:
            raise ConfigError(f"IRONFLOW_URL has an invalid port: {url!r}") from None
        self.url = url.rstrip("/")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = port or (443 if self._https else 80)
        self._prefix = parts.path.rstrip("/") + _API
        if token is None:
            token = os.environ.get("IRONFLOW_TOKEN") or None
        if token and not all(" " < c <= "~" for c in token):
            raise ConfigError(
                "IRONFLOW_TOKEN may hold only visible ASCII characters (no spaces or line "
                "breaks); copy the token the server was started with exactly"
            )
        if not all(" " < c <= "~" for c in self._prefix):
            raise ConfigError(
                f"IRONFLOW_URL's path may hold only visible ASCII characters (percent-encode "
                f"the rest): {url!r}"
            )
        self._headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "Accept-Encoding": "identity",
        }
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        host = self._host if ":" not in self._host else f"[{self._host}]"
        default_port = 443 if self._https else 80
        host_header = host if self._port == default_port else f"{host}:{self._port}"
        # Written once: every store request carries the same headers but its length.
        self._head_fields = "".join(
            f"{k}: {v}\r\n" for k, v in {"Host": host_header, **self._headers}.items()
        ).encode("ascii")
        self.timeout = timeout
        self.long_poll = long_poll
        self.give_up_after = give_up_after
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[Connection] = []
        self._down = False
        self._closed = False
        # Set while a worker drains: an unreachable server must not hold its exit.
        self._give_up = False
        # (worker id, run id) of runs this store handed to a worker and that it has
        # not finished or released: a retried lease must not hand them out again.
        self._held: set[tuple[str, str]] = set()

    # -- plumbing -------------------------------------------------------------------

    def _connection(self) -> Connection:
        conn: Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = Connection(self._host, self._port, https=self._https, timeout=self.timeout)
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    def _drop_connection(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()

    def _send(
        self, method: str, path: str, payload: bytes | None, timeout: float
    ) -> tuple[int, bytes]:
        if payload is None and method == "POST":
            payload = b""  # a POST says its (empty) length, as http.client did
        length = None if payload is None else len(payload)
        head = request_head(method, self._prefix + path, self._head_fields, length)
        return self._connection().exchange(head + payload if payload else head, timeout)

    def _request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        timeout: float | None = None,
        retry_body: Any = None,
    ) -> _Reply:
        """Send one request, retrying while the server cannot be reached.

        Returns 2xx, 404 and 409 replies to the caller; raises for the rest.
        """
        if self._closed:
            raise StoreError(f"the RemoteStore for {self.url} is closed")
        payload = None if body is None else _encode(body)
        started = time.monotonic()
        delay = _BACKOFF_START
        sent = 0
        while True:
            fresh = not self._connection().is_open
            try:
                status, raw = self._send(method, path, payload, timeout or self.timeout)
            except _CONNECTION_ERRORS as exc:
                self._drop_connection()
                sent += 1
                if retry_body is not None:
                    payload = _encode(retry_body)
                if not fresh and sent == 1:
                    continue  # a stale keep-alive connection: try a new one at once
                self._outage(exc)
                status, raw = 0, b""
            else:
                sent += 1
                if status != 503:
                    self._back()
                    return self._reply(status, raw, sent > 1)
                self._outage(StoreError(_message(raw, "the server's store is unavailable")))
            if self._closed:
                raise StoreError(f"the RemoteStore for {self.url} was closed while retrying")
            if self._give_up:
                raise ServerUnavailableError(
                    f"the Ironflow server at {self.url} could not be reached, and this process "
                    "is stopping, so the request was not retried"
                )
            waited = time.monotonic() - started
            if self.give_up_after is not None and waited >= self.give_up_after:
                raise ServerUnavailableError(
                    f"the Ironflow server at {self.url} did not answer within "
                    f"{self.give_up_after:g}s: start `ironflow serve` there, or unset "
                    "IRONFLOW_URL to use the local data directory"
                )
            left = float("inf") if self.give_up_after is None else self.give_up_after - waited
            self._pause(min(delay, left))
            delay = min(delay * 2, _BACKOFF_MAX)

    def _pause(self, seconds: float) -> None:
        """Sleep between retries, in short slices so :meth:`stop_retrying` takes at once."""
        end = time.monotonic() + seconds
        while not self._give_up and not self._closed:
            left = end - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, 0.05))

    def stop_retrying(self, stop: bool = True) -> None:
        """While stopped, a request the server does not answer raises at once.

        It raises :class:`~ironflow.errors.ServerUnavailableError` instead of retrying
        until the server is back. A draining worker sets it so that an unreachable
        server cannot hold its exit (an unrecorded step runs again after a takeover,
        as after a crash), and clears it when the drain is over. Only a flag is set,
        so a signal handler may call it.
        """
        self._give_up = stop

    def _outage(self, exc: BaseException) -> None:
        with self._lock:
            first, self._down = not self._down, True
        if self._give_up:
            return  # the caller is stopping and says so itself
        if first and self.give_up_after is not None:
            log.warning(
                "server at %s unreachable (%s); retrying for up to %gs",
                self.url,
                _reason(exc),
                self.give_up_after,
            )
        elif first:
            # Most often met by a worker started before its server: say what to do.
            log.warning(
                "server at %s unreachable, retrying until it answers (%s): start "
                "`ironflow serve` there, or unset IRONFLOW_URL to open the store directly",
                self.url,
                _reason(exc),
            )

    def _back(self) -> None:
        if self._down:
            with self._lock:
                was, self._down = self._down, False
            if was:
                log.warning("server at %s is reachable again; carrying on", self.url)

    def _reply(self, status: int, raw: bytes, retried: bool) -> _Reply:
        if 200 <= status < 300:
            try:
                return _Reply(status, json.loads(raw), retried)
            except ValueError:
                raise StoreError(
                    f"the server at {self.url} sent a reply that is not JSON; is IRONFLOW_URL "
                    "an Ironflow server?"
                ) from None
        message = _message(raw, f"HTTP {status}")
        if status in (404, 409):
            return _Reply(status, _error(raw, message), retried)
        if status == 401:
            raise AuthError(
                f"the server at {self.url} refused the request: {message} Set IRONFLOW_TOKEN "
                "to the token the server was started with."
            )
        if status in (413, 422):
            raise InvalidInputError(message)
        raise StoreError(f"the server at {self.url} answered {status}: {message}")

    def _exchange(
        self, name: str, values: dict[str, Any], *, timeout: float = 0, retry: Any = None
    ) -> tuple[StoreRoute, _Reply]:
        """Send the store route ``name`` with ``values`` (checked by the route first).

        ``retry`` holds the values to send instead if the request must be repeated.
        """
        route = ROUTES[name]
        method, path, body = route.request(**values)
        retry_body = None if retry is None else route.request(**retry)[2]
        reply = self._request(method, path, body, timeout=timeout or None, retry_body=retry_body)
        return route, reply

    def _call(self, name: str, timeout: float = 0, /, **values: Any) -> Any:
        """One store call; a 404 or 409 raises the store's own error for it."""
        route, reply = self._exchange(name, values, timeout=timeout)
        _raise_for(reply, values.get("run_id") or values.get("parent_id") or "")
        return route.read_reply(reply.data)


def _encode(body: Any) -> bytes:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def _message(raw: bytes, default: str) -> str:
    try:
        error = json.loads(raw)["error"]
        return str(error["message"])
    except (ValueError, KeyError, TypeError):
        return default


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _error(raw: bytes, message: str) -> dict[str, Any]:
    """The ``error`` object of a reply, always with a code and a message."""
    try:
        error = json.loads(raw)["error"]
    except (ValueError, KeyError, TypeError):
        error = None
    if not isinstance(error, dict):
        error = {}
    return {**error, "code": str(error.get("code", "")), "message": message}


def _raise_for(reply: _Reply, run_id: str = "") -> None:
    """Raise what the store itself would have raised for a 404 or 409 reply."""
    if reply.status not in (404, 409):
        return
    error: dict[str, Any] = reply.data
    code, message = error["code"], error["message"]
    if code == "run_not_found":
        raise RunNotFoundError(run_id or str(error.get("run_id", "")))
    if code == "projection_not_found":
        exc = ProjectionNotFoundError(str(error.get("name", "")))
        exc.args = (message,)  # the server's message names the projections it knows
        raise exc
    if code == "lease_lost":
        raise LeaseLostError(message)
    if code == "conflict":
        raise ConcurrencyError(
            message, expected=int(error.get("expected", -1)), actual=int(error.get("actual", -1))
        )
    raise StoreError(f"the server answered {reply.status}: {message}; is it an older version?")

"""RemoteStore: the Store protocol over the server's HTTP API.

A worker or CLI command given ``IRONFLOW_URL`` uses this instead of opening the data
directory, and behaves the same: the replay engine cannot tell the two apart.

Why a transport of its own (``_http.Connection``): one keep-alive connection per
thread is all a worker needs (each of its threads makes one request at a time), and a
recorded step costs one request of a few hundred bytes, so sending it in one write and
reading only the status, length and body of the reply is most of what the client can
save (``_http``'s docstring has the numbers' reason).

Why every request may be retried: when the server is unreachable (down, restarting,
a dropped connection) the request is repeated with backoff until it answers. A reply
lost after the server acted must not turn a retry into a second action, so each
method is made safe to repeat: recording a step twice is a no-op in the store; an
emit carries an event id chosen here, so a repeat creates nothing; a repeated lease
asks the server for runs this worker already holds, in case the lost reply had
leased some; a repeated finish or release that finds the job done accepts it.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import urllib.parse
from collections.abc import Collection, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import attrs

from ironflow._pure._ids import new_id
from ironflow._pure._limits import (
    MAX_LEASE_BATCH,
    MAX_LONG_POLL,
    MAX_PAGE,
    MAX_PROJECTION_WAIT,
    MAX_RUN_WAIT,
)
from ironflow._pure._trace import TraceContext
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
from ironflow.store._checks import partition_ok, stream_versions
from ironflow.store._history import History
from ironflow.store._http import Connection, request_head
from ironflow.store._records import (
    FINISHED,
    SUSPENDED,
    AgentSpec,
    EmitResult,
    ErrorInfo,
    Event,
    Lease,
    LeasedRun,
    ProjectionSpec,
    ProjectionState,
    ProjectionStatus,
    ProjectionWrite,
    PruneResult,
    Run,
    StepAck,
    StepRecord,
    SuspendResult,
    Suspension,
    WorkerInfo,
)
from ironflow.store._routes import ROUTES, LeaseReply, StoreRoute, WorkReply

if TYPE_CHECKING:
    import http.client

__all__ = ["RemoteStore"]

log = logging.getLogger("ironflow.remote")

T = TypeVar("T")

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


class RemoteStore:
    """The Store protocol over HTTP, against ``ironflow serve`` at ``url``.

    Guarantees: a write method returns only after the server acknowledged it, and the
    server acknowledges only what its store has made durable. While the server cannot
    be reached every call retries with exponential backoff (logging one warning per
    outage) and carries on when it is back; with ``give_up_after`` set, a call raises
    :class:`~ironflow.errors.ServerUnavailableError` after that many seconds instead.
    Safe to share between threads.

    ``long_poll`` is how long a lease request waits at the server for work before
    answering with none: an idle worker makes one request per ``long_poll`` seconds
    and still takes a new run within milliseconds of its emit.
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

    def __repr__(self) -> str:
        return f"RemoteStore({self.url!r})"

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
            log.warning("server at %s unreachable, retrying (%s)", self.url, _reason(exc))

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

    # -- agents and events ----------------------------------------------------------

    def register_agents(self, agents: Sequence[AgentSpec]) -> None:
        self._call("register_agents", agents=list(agents))

    def agents(self) -> list[AgentSpec]:
        return self._call("agents")  # type: ignore[no-any-return]

    def emit(
        self, name: str, data: Any, *, id: str | None = None, trace: TraceContext | None = None
    ) -> EmitResult:
        # An id chosen here makes a retried emit (reply lost) create nothing new.
        chosen = id is None
        result: EmitResult = self._call(
            "emit", name=name, data=data, id=new_id("evt_") if id is None else id, trace=trace
        )
        # No one else can have used an id made here: an earlier try of ours created it.
        return attrs.evolve(result, created=True) if chosen else result

    # -- leasing ----------------------------------------------------------------------

    def lease_runs(
        self, worker: WorkerInfo, agents: Collection[str], *, limit: int, ttl: float
    ) -> list[LeasedRun]:
        self._local.polled = False
        if limit <= 0 or not agents:
            return []
        leased = self._lease(worker, agents, limit, ttl, wait=self.long_poll, reclaim=False)
        self._local.polled = not leased and self.long_poll > 0
        return leased

    def _lease(
        self,
        worker: WorkerInfo,
        agents: Collection[str],
        limit: int,
        ttl: float,
        *,
        wait: float,
        reclaim: bool,
    ) -> list[LeasedRun]:
        values = {
            "worker": worker,
            "agents": list(agents),
            "limit": min(limit, MAX_LEASE_BATCH),
            "ttl": ttl,
            "wait": wait,
            "reclaim": reclaim,
        }
        # Runs this store handed out before asking: a retried lease reclaims only runs
        # it has never seen (leased by the lost reply). One that finished while this
        # request was retried is still "running" in an older reclaim list; handing it
        # out again would run its last step twice.
        with self._lock:
            known = set(self._held)
        route, reply = self._exchange(
            "lease_runs",
            values,
            timeout=self.long_poll + self.timeout,
            retry=dict(values, reclaim=True),
        )
        _raise_for(reply)
        answer: LeaseReply = route.read_reply(reply.data)
        leased = list(answer.runs)
        with self._lock:
            leased += [
                r
                for r in answer.reclaimed
                if (worker.id, r.run.id) not in self._held and (worker.id, r.run.id) not in known
            ]
            self._held.update((worker.id, r.run.id) for r in leased)
        return leased

    def wait_for_work(self, timeout: float) -> None:
        """Block until the server saw a write that may be new work, or ``long_poll`` passes.

        Right after a lease that already waited at the server, return at once. Other
        threads (a worker's projection runner) wait at the server for any write since
        their last wait, so they learn of new events without polling; the wait may be
        longer than ``timeout``, up to ``long_poll`` seconds.
        """
        if getattr(self._local, "polled", False):
            self._local.polled = False
            return
        if self.long_poll <= 0:
            time.sleep(timeout)
            return
        wait = min(self.long_poll, MAX_LONG_POLL)
        reply: WorkReply = self._call(
            "wait_for_work",
            wait + self.timeout,
            after=getattr(self._local, "generation", None),
            timeout=wait,
        )
        self._local.generation = reply.generation

    def heartbeat(self, worker: WorkerInfo, run_ids: Collection[str], *, ttl: float) -> set[str]:
        if not run_ids:
            return set()
        held: set[str] = self._call("heartbeat", worker=worker, run_ids=list(run_ids), ttl=ttl)
        for lost in set(run_ids) - held:
            self._forget(worker, lost)
        return held

    # -- steps and run completion -----------------------------------------------------

    def record_step(self, worker: WorkerInfo, step: StepRecord) -> StepAck:
        route, reply = self._exchange("record_step", {"worker": worker, "step": step})
        if reply.status == 409:
            self._forget(worker, step.run_id)  # the engine abandons the run
        _raise_for(reply, step.run_id)
        return route.read_reply(reply.data)  # type: ignore[no-any-return]

    def finish_run(
        self,
        worker: WorkerInfo,
        run_id: str,
        *,
        status: str,
        output: Any = None,
        error: ErrorInfo | None = None,
        attempt: int,
    ) -> Run:
        values = _finish_values(worker, run_id, status, output, error, attempt)
        route, reply = self._exchange("finish_run", values)
        if reply.status == 409 and reply.retried:
            # The lost reply may have been our own finish: then the run shows it.
            run = self.get_run(run_id)
            if run.status == status:
                self._forget(worker, run_id)
                return run
        _raise_for(reply, run_id)
        self._forget(worker, run_id)
        return route.read_reply(reply.data)  # type: ignore[no-any-return]

    def finish_and_lease(
        self,
        worker: WorkerInfo,
        run_id: str,
        *,
        status: str,
        output: Any = None,
        error: ErrorInfo | None = None,
        attempt: int,
        agents: Collection[str],
        limit: int,
        ttl: float,
    ) -> list[LeasedRun]:
        if limit <= 0 or not agents:
            self.finish_run(
                worker, run_id, status=status, output=output, error=error, attempt=attempt
            )
            return []
        values = {
            **_finish_values(worker, run_id, status, output, error, attempt),
            "agents": list(agents),
            "limit": min(limit, MAX_LEASE_BATCH),
            "ttl": ttl,
        }
        route, reply = self._exchange("finish_and_lease", values)
        if reply.status == 409 and reply.retried:
            # The lost reply may have been our own finish: then the run shows it, and the
            # runs that transaction leased are this worker's, unseen: a reclaiming lease
            # hands them over (runs this store handed out already stay out).
            run = self.get_run(run_id)
            if run.status == status:
                self._forget(worker, run_id)
                return self._lease(worker, agents, limit, ttl, wait=0.0, reclaim=True)
        _raise_for(reply, run_id)
        self._forget(worker, run_id)
        leased: list[LeasedRun] = route.read_reply(reply.data)
        with self._lock:
            self._held.update((worker.id, r.run.id) for r in leased)
        return leased

    def release_run(self, worker: WorkerInfo, run_id: str, *, attempt: int) -> None:
        values = {"worker": worker, "run_id": run_id, "attempt": attempt}
        _, reply = self._exchange("release_run", values)
        # After a lost reply, "not yours" means our release went through (and maybe
        # another worker has the run already).
        if not (reply.status == 409 and reply.retried):
            _raise_for(reply, run_id)
        self._forget(worker, run_id)

    def _forget(self, worker: WorkerInfo, run_id: str) -> None:
        with self._lock:
            self._held.discard((worker.id, run_id))

    def request_cancel(self, run_id: str) -> Run:
        return self._call("request_cancel", run_id=run_id)  # type: ignore[no-any-return]

    def pause_run(self, run_id: str) -> Run:
        return self._call("pause_run", run_id=run_id)  # type: ignore[no-any-return]

    def resume_run(self, run_id: str, *, from_step: str | None = None) -> Run:
        return self._call(  # type: ignore[no-any-return]
            "resume_run", run_id=run_id, from_step=from_step
        )

    def fork_run(
        self, run_id: str, *, from_step: str, data: Any = None, id: str | None = None
    ) -> Run:
        # An id chosen here makes a retried fork (reply lost) fork once.
        return self._call(  # type: ignore[no-any-return]
            "fork_run",
            run_id=run_id,
            from_step=from_step,
            data=data,
            id=new_id("run_") if id is None else id,
        )

    def import_history(self, history: History, *, new_ids: bool = False) -> Run:
        return self._call("import_history", history=history, new_ids=new_ids)  # type: ignore[no-any-return]

    # -- suspended runs and child runs ----------------------------------------------------

    def suspend_run(
        self, worker: WorkerInfo, run_id: str, suspension: Suspension, *, attempt: int
    ) -> SuspendResult:
        values = {
            "worker": worker,
            "run_id": run_id,
            "suspension": suspension,
            "attempt": attempt,
        }
        route, reply = self._exchange("suspend_run", values)
        if reply.status == 409 and reply.retried:
            # The lost reply may have been our own suspension: then the run shows it.
            run = self.get_run(run_id)
            s = run.suspension
            if (
                run.status in SUSPENDED
                and s is not None
                and (s.position, s.step_id) == (suspension.position, suspension.step_id)
            ):
                self._forget(worker, run_id)
                return SuspendResult(suspended=True)
        _raise_for(reply, run_id)
        result: SuspendResult = route.read_reply(reply.data)
        if result.suspended:
            self._forget(worker, run_id)
        return result

    def spawn_run(
        self,
        worker: WorkerInfo,
        parent_id: str,
        step_id: str,
        agent: str,
        data: Any,
        *,
        attempt: int,
        trace: TraceContext | None = None,
    ) -> Run:
        # A retry after a lost reply is safe: the store spawns once per (parent, step id).
        return self._call(  # type: ignore[no-any-return]
            "spawn_run",
            worker=worker,
            parent_id=parent_id,
            step_id=step_id,
            agent=agent,
            data=data,
            attempt=attempt,
            trace=trace,
        )

    # -- reading ------------------------------------------------------------------------

    def get_run(self, run_id: str) -> Run:
        return self._call("get_run", run_id=run_id)  # type: ignore[no-any-return]

    def wait_for_run(self, run_id: str, *, timeout: float) -> Run:
        """Wait at the server, which answers the moment the run finishes there."""
        deadline = time.monotonic() + timeout
        while True:
            chunk = max(0.0, min(deadline - time.monotonic(), MAX_RUN_WAIT))
            run: Run = self._call(
                "wait_for_run", chunk + self.timeout, run_id=run_id, timeout=chunk
            )
            if run.status in FINISHED or time.monotonic() >= deadline:
                return run

    def get_steps(self, run_id: str) -> list[StepRecord]:
        return self._call("get_steps", run_id=run_id)  # type: ignore[no-any-return]

    def get_lease(self, run_id: str) -> Lease | None:
        return self._call("get_lease", run_id=run_id)  # type: ignore[no-any-return]

    def list_runs(
        self, *, limit: int = 20, status: str | None = None, agent: str | None = None
    ) -> list[Run]:
        if limit < 1:
            return []
        return self._call(  # type: ignore[no-any-return]
            "list_runs", limit=min(limit, MAX_PAGE), status=status, agent=agent
        )

    # -- the event log and entity streams ---------------------------------------------------

    def events(self, *, after_seq: int = 0, limit: int = 1000) -> list[Event]:
        if limit < 1:
            return []
        return self._call(  # type: ignore[no-any-return]
            "events", after_seq=max(after_seq, 0), limit=min(limit, MAX_PAGE)
        )

    def append_to_stream(
        self,
        stream_id: str,
        name: str,
        data: Any,
        *,
        expected_version: int | None = None,
        idempotency_key: str | None = None,
        trace: TraceContext | None = None,
    ) -> Event:
        return self._call(  # type: ignore[no-any-return]
            "append_to_stream",
            stream_id=stream_id,
            name=name,
            data=data,
            expected_version=expected_version,
            # A key chosen here makes a retry after a lost reply append once, not twice.
            idempotency_key=idempotency_key or new_id("append_"),
            trace=trace,
        )

    def read_stream(
        self, stream_id: str, *, from_version: int = 0, limit: int = 1000
    ) -> list[Event]:
        if limit < 1:
            return []
        return self._call(  # type: ignore[no-any-return]
            "read_stream",
            stream_id=stream_id,
            from_version=max(from_version, 0),
            limit=min(limit, MAX_PAGE),
        )

    def delete_stream_events(self, stream_id: str, versions: Collection[int] | None = None) -> int:
        if versions is None:
            return int(self._call("delete_stream_events", stream_id=stream_id, versions=None))
        wanted = sorted(stream_versions(versions))
        deleted = 0
        for start in range(0, len(wanted), MAX_PAGE):  # the server takes a page per request
            chunk = wanted[start : start + MAX_PAGE]
            deleted += int(self._call("delete_stream_events", stream_id=stream_id, versions=chunk))
        return deleted

    def tail_events(
        self,
        pattern: str | None = None,
        *,
        after_seq: int | None = None,
        timeout: float | None = None,
    ) -> Iterator[Event]:
        """Events as the server appends them, from its event stream (server-sent events).

        Starts after ``after_seq`` (default: the end of the log now); a dropped
        connection is resumed with ``Last-Event-ID``, so no event is missed or repeated.
        Stops after ``timeout`` seconds (None: never).
        """
        # A long-lived stream read line by line: http.client's buffered reader fits it,
        # and its cost per request does not matter here.
        import http.client

        deadline = None if timeout is None else time.monotonic() + timeout
        last = after_seq
        delay = _BACKOFF_START
        while deadline is None or time.monotonic() < deadline:
            query = {} if pattern is None else {"pattern": pattern}
            headers = {k: v for k, v in self._headers.items() if k != "Content-Type"}
            headers["Accept"] = "text/event-stream"
            if last is not None:
                headers["Last-Event-ID"] = str(last)
            path = self._prefix + "/events/stream"
            if query:
                path += "?" + urllib.parse.urlencode(query)
            cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            conn = cls(self._host, self._port, timeout=self.timeout)
            try:
                conn.request("GET", path, headers=headers)
                response = conn.getresponse()
                if response.status != 200:
                    _raise_for(self._reply(response.status, response.read(), False))
                    raise StoreError(f"the server at {self.url} has no event stream")
                self._back()
                delay = _BACKOFF_START
                for seq, event in _sse_events(response, conn, deadline):
                    last = seq
                    yield event
                return  # the deadline passed
            except (OSError, http.client.HTTPException) as exc:
                self._outage(exc)
                time.sleep(delay)
                delay = min(delay * 2, _BACKOFF_MAX)
            finally:
                conn.close()

    # -- projections --------------------------------------------------------------------

    def register_projections(self, specs: Sequence[ProjectionSpec]) -> None:
        self._call("register_projections", specs=list(specs))

    def list_projections(self) -> list[ProjectionStatus]:
        return self._call("list_projections")  # type: ignore[no-any-return]

    def projection_status(self, name: str) -> ProjectionStatus:
        return self._call("projection_status", name=name)  # type: ignore[no-any-return]

    def get_projection(
        self, name: str, *, partitions: Collection[str] | None = None
    ) -> ProjectionState:
        # Keys no partition can have are skipped, as the store itself skips them.
        parts = None if partitions is None else [p for p in partitions if partition_ok(p)]
        return self._call(  # type: ignore[no-any-return]
            "get_projection", name=name, partitions=parts
        )

    def lease_projection(self, worker: WorkerInfo, name: str, *, ttl: float) -> bool:
        return bool(self._call("lease_projection", worker=worker, name=name, ttl=ttl))

    def release_projection(self, worker: WorkerInfo, name: str) -> None:
        self._call("release_projection", worker=worker, name=name)

    def write_projection(self, worker: WorkerInfo, write: ProjectionWrite) -> ProjectionStatus:
        return self._call(  # type: ignore[no-any-return]
            "write_projection", worker=worker, write=write
        )

    def request_projection_rebuild(self, name: str) -> int:
        return int(self._call("request_projection_rebuild", name=name))

    def wait_for_projection(self, name: str, position: int, *, timeout: float) -> int:
        """Wait at the server, which answers as soon as a write there advances it."""
        deadline = time.monotonic() + timeout
        while True:
            chunk = max(0.0, min(deadline - time.monotonic(), MAX_PROJECTION_WAIT))
            reached = int(
                self._call(
                    "wait_for_projection",
                    chunk + self.timeout,
                    name=name,
                    position=position,
                    timeout=chunk,
                )
            )
            if reached >= position or time.monotonic() >= deadline:
                return reached

    # -- retention ---------------------------------------------------------------------------

    def prune_runs(
        self,
        *,
        older_than: float,
        statuses: Collection[str] | None = None,
        dry_run: bool = False,
    ) -> PruneResult:
        """Prune at the server (its clock decides what is older than ``older_than``)."""
        return self._call(  # type: ignore[no-any-return]
            "prune_runs",
            older_than=older_than,
            statuses=None if statuses is None else sorted(statuses),
            dry_run=dry_run,
        )

    def close(self) -> None:
        self._closed = True
        with self._lock:
            connections, self._connections = self._connections, []
        for conn in connections:
            conn.close()

    def __enter__(self) -> RemoteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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


def _finish_values(
    worker: WorkerInfo,
    run_id: str,
    status: str,
    output: Any,
    error: ErrorInfo | None,
    attempt: int,
) -> dict[str, Any]:
    """A finish's arguments, as finish_run and finish_and_lease send them."""
    return {
        "worker": worker,
        "run_id": run_id,
        "status": status,
        "output": output,
        "error": error,
        "attempt": attempt,
    }

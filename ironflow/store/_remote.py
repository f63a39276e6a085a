"""RemoteStore: the Store protocol over the server's HTTP API.

A worker or CLI command given ``IRONFLOW_URL`` uses this instead of opening the data
directory, and behaves the same: the replay engine cannot tell the two apart.

How a call reaches the server (this thread's keep-alive connection, retries with
backoff, a reply turned into the store's own error) is ``_remotecalls.py``; this module
is what each Store method sends, and what makes it safe to repeat.

Why every request may be retried: when the server is unreachable (down, restarting,
a dropped connection) the request is repeated with backoff until it answers. A reply
lost after the server acted must not turn a retry into a second action, so each
method is made safe to repeat: recording a step twice is a no-op in the store; an
emit carries an event id chosen here, so a repeat creates nothing; a repeated lease
asks the server for runs this worker already holds, in case the lost reply had
leased some; a repeated finish or release that finds the job done accepts it.
"""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Collection, Iterator, Sequence
from typing import Any, TypeVar

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
from ironflow.errors import StoreError
from ironflow.store._checks import partition_ok, stream_versions
from ironflow.store._eventstream import _sse_events
from ironflow.store._history import History
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
from ironflow.store._remotecalls import _BACKOFF_MAX, _BACKOFF_START, RemoteCalls, _raise_for
from ironflow.store._routes import LeaseReply, WorkReply

__all__ = ["RemoteStore"]

T = TypeVar("T")


class RemoteStore(RemoteCalls):
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

    def __repr__(self) -> str:
        return f"RemoteStore({self.url!r})"

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

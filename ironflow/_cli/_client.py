"""``ironflow.Client``: read and drive an Ironflow store from Python.

The client uses nothing but the :class:`~ironflow.store.Store` protocol, so the same
calls work on a data directory opened in this process (``Client(data_dir=...)``) and on
a server (``Client(url=...)``, through the HTTP store).
"""

from __future__ import annotations

import builtins
import os
import time
from collections.abc import Iterator
from typing import Any

from ironflow._pure._trace import TraceContext, ambient_trace
from ironflow.errors import ConfigError, ProjectionTimeoutError, WaitTimeoutError
from ironflow.store import FINISHED, EmitResult, Event, Run, StepRecord, Store
from ironflow.store._open import open_remote, open_store
from ironflow.store._records import ProjectionState, ProjectionStatus
from ironflow.store._tail import check_pattern, follow

__all__ = ["DEFAULT_TIMEOUT", "Client", "wait_for_rebuild"]

#: Seconds a Client call or CLI command waits for an unreachable server before giving up.
DEFAULT_TIMEOUT = 10.0


class Client:
    """A handle on an Ironflow store: ``projections``, ``runs``, ``events``, ``streams``.

    Give at most one of ``url`` (an ``ironflow serve`` server), ``data_dir`` (a local
    data directory) or ``store`` (any Store). With none, the client goes where the CLI
    would: ``IRONFLOW_URL`` if set, else ``IRONFLOW_DATA_DIR``, else ``./.ironflow``.

    ::

        with ironflow.Client(data_dir=".ironflow") as client:
            memory = client.projections.get("doc-processor-memory")
            client.events.emit("doc.received", {"docId": "doc-3", "imageUrl": "..."})

    A client that opened its store closes it on :meth:`close`; one handed a ``store``
    leaves closing it to the caller.

    ``timeout``: through a server, a call that cannot reach it retries for this many
    seconds (default 10), then raises :class:`~ironflow.errors.ServerUnavailableError`
    naming the URL; ``None`` retries until the server is back, as a worker does.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        data_dir: str | os.PathLike[str] | None = None,
        store: Store | None = None,
        token: str | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
    ) -> None:
        chosen = (("url", url), ("data_dir", data_dir), ("store", store))
        given = [name for name, value in chosen if value is not None]
        if len(given) > 1:
            raise ConfigError(
                f"Client() takes one of url=, data_dir= or store=, not {' and '.join(given)}"
            )
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0
        ):
            raise ConfigError(
                f"Client(timeout=...) must be positive seconds, or None to wait for the "
                f"server however long it is down; not {timeout!r}"
            )
        self._owns_store = store is None
        if store is None:
            if url is not None:
                store = open_remote(url, token=token, give_up_after=timeout)
            else:
                store = open_store(data_dir, give_up_after=timeout)
        self.store: Store = store
        self.projections = Projections(store)
        self.runs = Runs(store)
        self.events = Events(store)
        self.streams = Streams(store)

    def close(self) -> None:
        """Close the store if this client opened it. Idempotent."""
        if self._owns_store:
            self.store.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Client store={self.store!r}>"


class Projections:
    """``client.projections``: read projections, ask for rebuilds."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def get(self, name: str) -> Any:
        """The projection's state, unwrapped (``{key: state}`` for a partitioned one)."""
        return self._store.get_projection(name).state

    def state(self, name: str) -> ProjectionState:
        """The projection's state together with its position and update time."""
        return self._store.get_projection(name)

    def status(self, name: str) -> ProjectionStatus:
        """Where the projection stands: position, runner, pending rebuild."""
        return self._store.projection_status(name)

    def list(self) -> list[ProjectionStatus]:
        """Every registered projection."""
        return self._store.list_projections()

    def rebuild(self, name: str, *, wait: bool = True, timeout: float = 60.0) -> ProjectionStatus:
        """Ask the worker serving the projection to rebuild it from the log.

        With ``wait``, return once it is rebuilt, or raise
        :class:`~ironflow.errors.ProjectionTimeoutError` after ``timeout`` seconds (no
        worker serves it). Without, return at once; the rebuild happens when a worker
        serving the projection next looks.
        """
        ticket = self._store.request_projection_rebuild(name)
        if not wait:
            return self._store.projection_status(name)
        return wait_for_rebuild(self._store, name, ticket, timeout=timeout)


class Runs:
    """``client.runs``: list, read and cancel runs."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def list(
        self, *, limit: int = 20, status: str | None = None, agent: str | None = None
    ) -> list[Run]:
        """Runs newest first, optionally only those with this status or agent."""
        return self._store.list_runs(limit=limit, status=status, agent=agent)

    def get(self, run_id: str) -> Run:
        """The run with this id; raises :class:`~ironflow.errors.RunNotFoundError`."""
        return self._store.get_run(run_id)

    def steps(self, run_id: str) -> builtins.list[StepRecord]:
        """The run's recorded steps in position order."""
        return self._store.get_steps(run_id)

    def fork(self, run_id: str, *, from_step: str, data: Any = None) -> Run:
        """Start a new run from the step ``from_step`` of ``run_id``, which is untouched.

        The new run holds copies of the records before that step and runs on from
        there, with ``data`` as its event's data if given; ``run.forked_from`` and the
        original's ``forks`` link the two. See :meth:`ironflow.store.Store.fork_run`.
        """
        return self._store.fork_run(run_id, from_step=from_step, data=data)

    def cancel(self, run_id: str) -> Run:
        """Cancel a pending run now, or a running one at its next step boundary."""
        return self._store.request_cancel(run_id)

    def wait(self, run_id: str, *, timeout: float | None = 30.0) -> Run:
        """The run once it finished (completed, failed or cancelled).

        Returns the moment the run finishes (at once for a run finished already); raises
        :class:`~ironflow.errors.WaitTimeoutError` (holding the run as last seen) if it
        has not after ``timeout`` seconds (None: wait as long as it takes), and
        :class:`~ironflow.errors.RunNotFoundError` for an unknown id. The run's own
        outcome is in the returned run: ``status``, ``output``, ``error``.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = 3600.0 if deadline is None else max(0.0, deadline - time.monotonic())
            run = self._store.wait_for_run(run_id, timeout=remaining)
            if run.status in FINISHED:
                return run
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeoutError(
                    f"run {run_id} did not finish within {timeout:g}s (it is {run.status}); "
                    f"it goes on: wait again, or look at it with `ironflow inspect {run_id}`",
                    run=run,
                )


class Events:
    """``client.events``: emit events and read the log."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def emit(
        self,
        name: str,
        data: Any = None,
        *,
        id: str | None = None,
        trace: TraceContext | None = None,
    ) -> EmitResult:
        """Append an event, starting the runs it triggers; an ``id`` seen before starts none.

        The runs join ``trace``, by default the caller's current OpenTelemetry span (if
        this process uses OpenTelemetry) or the ``TRACEPARENT`` variable.
        """
        if trace is None:
            trace = ambient_trace()
        return self._store.emit(name, {} if data is None else data, id=id, trace=trace)

    def list(self, *, after_seq: int = 0, limit: int = 100) -> list[Event]:
        """Events of the log after position ``after_seq``, oldest first."""
        return self._store.events(after_seq=after_seq, limit=limit)

    def tail(
        self,
        pattern: str | None = None,
        *,
        after_seq: int | None = None,
        timeout: float | None = None,
    ) -> Iterator[Event]:
        """Events as they are appended, whose name matches ``pattern`` (``order.*``).

        Starts after log position ``after_seq`` (default: the end of the log now, so
        only new events), yields each as soon as it is seen, and stops after ``timeout``
        seconds (None: never; break out of the loop to stop). Through a server it reads
        the server's event stream (``GET /api/v1/events/stream``) and resumes it after
        a dropped connection without missing an event.
        """
        check_pattern(pattern)
        tail_events = getattr(self._store, "tail_events", None)
        if tail_events is not None:
            found: Iterator[Event] = tail_events(pattern, after_seq=after_seq, timeout=timeout)
            return found
        return follow(self._store, pattern, after_seq=after_seq, timeout=timeout)


class Streams:
    """``client.streams``: entity streams, ordered events with versions."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def append(
        self,
        stream_id: str,
        name: str,
        data: Any = None,
        *,
        expected_version: int | None = None,
        idempotency_key: str | None = None,
    ) -> Event:
        """Append to a stream; see :meth:`ironflow.store.Store.append_to_stream`."""
        return self._store.append_to_stream(
            stream_id,
            name,
            data,
            expected_version=expected_version,
            idempotency_key=idempotency_key,
        )

    def read(self, stream_id: str, *, from_version: int = 0, limit: int = 1000) -> list[Event]:
        """The stream's events with version ``>= from_version``, in order."""
        return self._store.read_stream(stream_id, from_version=from_version, limit=limit)


def wait_for_rebuild(store: Store, name: str, ticket: int, *, timeout: float) -> ProjectionStatus:
    """Wait until the rebuild with this ticket is done; raise ProjectionTimeoutError if not."""
    deadline = time.monotonic() + timeout
    delay = 0.02
    while True:
        status = store.projection_status(name)
        if status.rebuilt >= ticket:
            return status
        if time.monotonic() >= deadline:
            raise ProjectionTimeoutError(
                f"projection {name!r} was not rebuilt within {timeout:g}s: no worker serving "
                "it picked the request up. Start a worker whose module defines it, or rebuild "
                "here with --module MODULE"
            )
        time.sleep(delay)
        delay = min(delay * 2, 0.25)

"""The Store protocol: everything the replay engine, worker and CLI need from storage.

Calls are coarse on purpose (lease a run together with all its step records; record
one step), so a store across HTTP costs one round trip per step.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any, Protocol, runtime_checkable

from ironflow._pure._trace import TraceContext
from ironflow.store._records import (
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

__all__ = ["Store"]

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ironflow.store._history import History


@runtime_checkable
class Store(Protocol):
    """Durable storage for events, runs, step records and leases.

    Every method that writes returns only after the write is durable (on disk for a
    local store, acknowledged by the server for a remote one).
    """

    def register_agents(self, agents: Sequence[AgentSpec]) -> None:
        """Make these agents' triggers known, so events emitted from now on start runs."""

    def agents(self) -> list[AgentSpec]:
        """The agents registered so far."""

    def emit(
        self, name: str, data: Any, *, id: str | None = None, trace: TraceContext | None = None
    ) -> EmitResult:
        """Append an event and create one pending run per matching trigger, atomically.

        An ``id`` already in the log creates nothing and returns the first emission's
        result with ``created=False``. ``trace`` is the emitter's W3C trace context, kept
        with the event: the runs it starts join that trace.
        """

    def lease_runs(
        self, worker: WorkerInfo, agents: Collection[str], *, limit: int, ttl: float
    ) -> list[LeasedRun]:
        """Lease up to ``limit`` runs of these agents: pending ones, then orphaned ones.

        A run is orphaned when its lease expired, or when its holder is a dead process
        on this host (found at once, without waiting for the TTL). An orphaned run comes
        with ``taken_from``, the worker that held it.
        """

    def wait_for_work(self, timeout: float) -> None:
        """Block until new work may be available, or ``timeout`` seconds pass."""

    def heartbeat(self, worker: WorkerInfo, run_ids: Collection[str], *, ttl: float) -> set[str]:
        """Extend this worker's leases; return the run ids it still holds."""

    def record_step(self, worker: WorkerInfo, step: StepRecord) -> StepAck:
        """Durably record a step of a run this worker holds.

        Raises :class:`~ironflow.errors.LeaseLostError` if another worker holds the run
        now; then nothing is written. Recording a position that is already recorded is
        a no-op that returns normally (a retried request after a lost reply).
        """

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
        """Mark a held run completed, failed or cancelled and drop its lease.

        Like every write on behalf of a run, fenced by its lease: raises
        :class:`~ironflow.errors.LeaseLostError`, writing nothing, unless ``worker``
        holds the run in this ``attempt`` (``Run.attempt`` of the leased run).
        """

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
        """:meth:`finish_run`, then :meth:`lease_runs`, in one transaction: both or neither.

        A worker with a backlog ends a run and takes its next one for the price of one
        durable commit. The finish is fenced as :meth:`finish_run` is (nothing written
        on :class:`~ironflow.errors.LeaseLostError`); the lease is an ordinary lease
        and sees the finish (a concurrency slot it freed, a parent it made pending).
        """

    def release_run(self, worker: WorkerInfo, run_id: str, *, attempt: int) -> None:
        """Give a held run back (status pending) so another worker can take it at once.

        Fenced by the lease (worker and ``attempt``) like :meth:`finish_run`.
        """

    def get_run(self, run_id: str) -> Run:
        """The run with this id; raises :class:`~ironflow.errors.RunNotFoundError`."""

    def wait_for_run(self, run_id: str, *, timeout: float) -> Run:
        """The run once it is finished (completed, failed or cancelled), or as it is after
        ``timeout`` seconds; raises :class:`~ironflow.errors.RunNotFoundError`.

        Returns the moment the finish lands: one written through this store (or its
        server) and, through the store's wake-ups, one written by another process into
        the same data directory (within a tenth of a second if a wake-up is lost).
        """

    def get_steps(self, run_id: str) -> list[StepRecord]:
        """The run's step records in position order."""

    def get_lease(self, run_id: str) -> Lease | None:
        """The current lease on the run, if any."""

    def list_runs(
        self, *, limit: int = 20, status: str | None = None, agent: str | None = None
    ) -> list[Run]:
        """Runs newest first, optionally only those with this status or agent."""

    def request_cancel(self, run_id: str) -> Run:
        """Cancel a run: a pending, sleeping or waiting one now, a running one at its
        next step boundary. Its unfinished child runs are cancelled with it."""

    def pause_run(self, run_id: str) -> Run:
        """Pause a run: a pending or queued one now (status ``paused``), a running one at
        its next step boundary (the worker hands it back, and it stays ``paused``), a
        suspended one when it wakes. A finished run is returned as it is."""

    def resume_run(self, run_id: str, *, from_step: str | None = None) -> Run:
        """Let a paused run go on (a run not yet stopped just keeps running); a finished
        run raises :class:`~ironflow.errors.InvalidInputError` naming ``from_step``.

        With ``from_step``, re-run a finished run from the step with that id: the records
        before it are kept, it and those after are dropped, and the run is pending again
        with the re-run listed in ``Run.reruns``. Raises
        :class:`~ironflow.errors.InvalidInputError` for an unfinished run or an unknown
        step id.
        """

    def fork_run(
        self, run_id: str, *, from_step: str, data: Any = None, id: str | None = None
    ) -> Run:
        """Start a new run of the same agent from a step of ``run_id``, which is untouched.

        The new run (pending, or queued by a concurrency limit) holds copies of the
        records before the step ``from_step`` and runs on from there, the handler
        replaying the copies; its triggering event is the original's with ``data`` as
        its data, unless ``data`` is None. ``Run.forked_from`` names the original and the
        step, and the original's ``Run.forks`` gains the new run's id: linked both ways.
        Raises :class:`~ironflow.errors.RunNotFoundError` for an unknown run and
        :class:`~ironflow.errors.InvalidInputError` for a step it does not have or data
        that is not a JSON object. ``id`` names the new run (default: a new id); the
        same ``id`` given again returns that fork, so a retried request forks once.
        """

    def import_history(self, history: History, *, new_ids: bool = False) -> Run:
        """Load a run's history (``ironflow run export``) into this store; return the run.

        Its runs keep their ids, or get new ones with ``new_ids``; an id this store has
        already refuses the whole import (:class:`~ironflow.errors.InvalidInputError`),
        and nothing is written. Finished runs keep their status, unfinished ones are
        ``paused`` (``resume_run`` lets a worker take them on). Step records come as
        they were; each memory event is appended to its stream once more.
        """

    # -- suspended runs and child runs ----------------------------------------------------

    def suspend_run(
        self, worker: WorkerInfo, run_id: str, suspension: Suspension, *, attempt: int
    ) -> SuspendResult:
        """Suspend a held run until what ``suspension`` waits for happens, atomically.

        If it already happened (the wake-up time passed, a matching event is in the log
        after the run started, the child run finished, or the step is already recorded)
        the step's record is written and returned, and the worker keeps the run. If a
        cancellation was requested, nothing is written. Otherwise the run becomes
        ``sleeping`` (for a sleep or a retry) or ``waiting``, the lease is dropped, and
        the store itself records the step and makes the run pending again when its time,
        event or child comes: a suspended run costs no worker anything. Raises
        :class:`~ironflow.errors.LeaseLostError` if the worker no longer holds the run
        in this ``attempt``.
        """

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
        """Create a pending child run of ``agent`` for the held run ``parent_id``.

        Idempotent by ``(parent_id, step_id)``: a repeated call returns the child the
        first call created, so a replayed or retried spawn never starts two children.
        The child's event is not in the log; its ``seq`` is the log position at the spawn,
        its ``trace`` the context given (the parent's spawn step), so the child joins the
        parent's trace. Fenced by the parent's lease (worker and ``attempt``) like
        :meth:`finish_run`.
        """

    # -- the event log and entity streams ----------------------------------------------

    def events(self, *, after_seq: int = 0, limit: int = 1000) -> list[Event]:
        """Events of the global log after position ``after_seq``, oldest first.

        The log has no holes: a reader sees every event up to the last one it sees.
        """

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
        """Append an event to an entity stream; return it with its ``version`` and ``seq``.

        The event gets the stream's next version (1, 2, 3, ...) and, in the same write
        transaction, enters the global log and creates a pending run per matching
        trigger, exactly as :meth:`emit` would. ``expected_version`` is the version the
        caller believes the stream is at (0 for a new stream); any other version raises
        :class:`~ironflow.errors.ConcurrencyError` and writes nothing. An
        ``idempotency_key`` already used on this stream appends nothing and returns the
        event first appended with it, whatever ``expected_version`` says. ``trace`` is
        the appender's W3C trace context, kept with the event as :meth:`emit` keeps it: the
        runs it starts join that trace (a run's ``ctx.memory.append`` gives its step's).
        """

    def read_stream(
        self, stream_id: str, *, from_version: int = 0, limit: int = 1000
    ) -> list[Event]:
        """The stream's events with version ``>= from_version``, in version order.

        A stream never appended to reads as empty.
        """

    def delete_stream_events(self, stream_id: str, versions: Collection[int] | None = None) -> int:
        """Delete these versions of an entity stream (all of them for ``None``); return how
        many were deleted.

        The events leave the stream and the global log in one transaction, and their
        idempotency keys go with them (appending with one again appends anew). Versions
        the stream does not have are ignored. Versions are never reused while the stream
        keeps an event; a stream whose every event was deleted is as new, and its next
        append is version 1. Runs the events started are kept. The newest event of the
        whole log leaves a tombstone named ``ironflow.deleted`` (no data) at its position,
        which numbers the next event.
        """

    # -- projections ---------------------------------------------------------------------

    def register_projections(self, specs: Sequence[ProjectionSpec]) -> None:
        """Make these projections known, keeping the position and state of existing ones.

        A projection whose subscribed events or partitioning changed gets a rebuild
        requested, since its stored state no longer matches its definition.
        """

    def list_projections(self) -> list[ProjectionStatus]:
        """Every registered projection's status, by name."""

    def projection_status(self, name: str) -> ProjectionStatus:
        """The projection's position, runner and rebuild tickets, without its state.

        Raises :class:`~ironflow.errors.ProjectionNotFoundError` for an unknown name.
        """

    def get_projection(
        self, name: str, *, partitions: Collection[str] | None = None
    ) -> ProjectionState:
        """The projection's state and the position it reflects, read in one snapshot.

        For a partitioned projection the state maps every partition key to its state,
        or only the keys in ``partitions`` that have one. Raises
        :class:`~ironflow.errors.ProjectionNotFoundError` for an unknown name.
        """

    def lease_projection(self, worker: WorkerInfo, name: str, *, ttl: float) -> bool:
        """Take or extend this worker's lease on a projection; return whether it holds it.

        The lease is free when nobody holds it, when it expired, or when its holder is
        a dead process on this host (found at once, without waiting for the TTL).
        """

    def release_projection(self, worker: WorkerInfo, name: str) -> None:
        """Drop this worker's lease on a projection, if it holds it."""

    def write_projection(self, worker: WorkerInfo, write: ProjectionWrite) -> ProjectionStatus:
        """Durably write a projection's new partition states and position, atomically.

        Applies only while ``worker`` holds the projection's lease (else
        :class:`~ironflow.errors.LeaseLostError`) and the stored position is the one the
        write starts from (else :class:`~ironflow.errors.ConcurrencyError`); otherwise
        nothing is written. So two runners never both advance a projection, and no
        event is applied twice or skipped.
        """

    def request_projection_rebuild(self, name: str) -> int:
        """Ask the projection's runner to rebuild it from the log; return the ticket.

        The rebuild is done when the status's ``rebuilt`` reaches the ticket.
        """

    def wait_for_projection(self, name: str, position: int, *, timeout: float) -> int:
        """Block until the projection's position is at least ``position``, or timeout.

        Returns the position reached (below ``position`` after a timeout; 0 for a
        projection not registered yet).
        """

    # -- retention ---------------------------------------------------------------------------

    def prune_runs(
        self,
        *,
        older_than: float,
        statuses: Collection[str] | None = None,
        dry_run: bool = False,
    ) -> PruneResult:
        """Delete finished runs last updated more than ``older_than`` seconds ago.

        ``statuses`` narrows which finished runs go (default: completed, failed and
        cancelled); asking for any other status raises
        :class:`~ironflow.errors.InvalidInputError`. Their step records go with them, and
        so do log events nothing can need again: never one on an entity stream, one a
        projection subscribes to or has not passed, or one an unfinished run may wait
        for. A run that is not finished, or whose parent or child is not, is never
        deleted. With ``dry_run`` nothing is deleted and the counts say what would be.
        """

    def close(self) -> None:
        """Release the store's resources. Idempotent."""

"""The Store protocol: everything the replay engine, worker and CLI need from storage.

Calls are coarse on purpose (lease a run together with all its step records; record
one step), so a store across HTTP costs one round trip per step.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any, Protocol, runtime_checkable

from ironflow.store._records import (
    AgentSpec,
    EmitResult,
    ErrorInfo,
    Lease,
    LeasedRun,
    Run,
    StepAck,
    StepRecord,
    WorkerInfo,
)

__all__ = ["Store"]


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

    def emit(self, name: str, data: Any, *, id: str | None = None) -> EmitResult:
        """Append an event and create one pending run per matching trigger, atomically.

        An ``id`` already in the log creates nothing and returns the first emission's
        result with ``created=False``.
        """

    def lease_runs(
        self, worker: WorkerInfo, agents: Collection[str], *, limit: int, ttl: float
    ) -> list[LeasedRun]:
        """Lease up to ``limit`` runs of these agents: pending ones, then orphaned ones.

        A run is orphaned when its lease expired, or when its holder is a dead process
        on this host (found at once, without waiting for the TTL).
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
    ) -> Run:
        """Mark a held run completed, failed or cancelled and drop its lease."""

    def release_run(self, worker: WorkerInfo, run_id: str) -> None:
        """Give a held run back (status pending) so another worker can take it at once."""

    def get_run(self, run_id: str) -> Run:
        """The run with this id; raises :class:`~ironflow.errors.RunNotFoundError`."""

    def get_steps(self, run_id: str) -> list[StepRecord]:
        """The run's step records in position order."""

    def get_lease(self, run_id: str) -> Lease | None:
        """The current lease on the run, if any."""

    def list_runs(
        self, *, limit: int = 20, status: str | None = None, agent: str | None = None
    ) -> list[Run]:
        """Runs newest first, optionally only those with this status or agent."""

    def request_cancel(self, run_id: str) -> Run:
        """Cancel a pending run now, or a running one at its next step boundary."""

    def close(self) -> None:
        """Release the store's resources. Idempotent."""

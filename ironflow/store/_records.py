"""The frozen records a store keeps: events, runs, step records, leases.

Times are Unix seconds as floats (what ``time.time()`` gives); the JSON shown to
people (``ironflow inspect --json``, the HTTP API) renders them as ISO 8601 in UTC.
"""

from __future__ import annotations

from typing import Any, Literal

import attrs

RunStatus = Literal["pending", "running", "completed", "failed", "cancelled"]
#: Statuses a run never leaves.
FINISHED: frozenset[str] = frozenset({"completed", "failed", "cancelled"})
StepStatus = Literal["completed", "failed"]


@attrs.frozen
class ErrorInfo:
    """An exception as the store keeps it: its type name, message and traceback text."""

    type: str
    message: str
    traceback: str | None = None
    step_id: str | None = None


@attrs.frozen
class Event:
    """One entry of the event log. ``seq`` is its position in the log, from 1."""

    id: str
    name: str
    data: Any
    ts: float
    seq: int = 0


@attrs.frozen
class Run:
    """One execution of an agent for one triggering event."""

    id: str
    agent: str
    status: RunStatus
    event: Event
    created_at: float
    updated_at: float
    output: Any = None
    error: ErrorInfo | None = None
    #: How many times a worker has leased this run; 1 for a run that never crashed.
    attempt: int = 0
    cancel_requested: bool = False


@attrs.frozen
class StepRecord:
    """A completed or failed step, keyed in the store by ``(run_id, position)``.

    ``position`` is the order in which the handler *called* its steps (0, 1, 2, ...),
    which is deterministic even when steps finish out of order under ``asyncio.gather``.
    """

    run_id: str
    position: int
    id: str
    status: StepStatus
    input: Any
    output: Any
    started_at: float
    ended_at: float
    error: ErrorInfo | None = None
    attempt: int = 1


@attrs.frozen
class WorkerInfo:
    """Who holds a lease: enough to tell, on the same host, whether it is still alive."""

    id: str
    host: str
    pid: int
    #: The process start time from /proc, so a recycled pid is not mistaken for the holder.
    pid_start: str = ""


@attrs.frozen
class Lease:
    """A worker's claim on a run until ``expires_at`` unless renewed by a heartbeat."""

    run_id: str
    worker: WorkerInfo
    expires_at: float


@attrs.frozen
class AgentSpec:
    """What the store needs to know of an agent to create its runs: id and triggers."""

    id: str
    triggers: tuple[str, ...]
    description: str = ""


@attrs.frozen
class EmitResult:
    """The outcome of emitting an event. ``created`` is False for a repeated event id."""

    event_id: str
    run_ids: tuple[str, ...]
    created: bool = True
    seq: int = 0


@attrs.frozen
class LeasedRun:
    """A run handed to a worker together with every step it has recorded so far."""

    run: Run
    steps: tuple[StepRecord, ...]
    lease: Lease


@attrs.frozen
class StepAck:
    """What recording a step tells the engine about the run's next boundary."""

    cancel_requested: bool = False

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
    #: The entity stream the event was appended to, if any, and its version there (from 1).
    stream: str | None = None
    version: int = 0


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
class ProjectionSpec:
    """What the store keeps of a projection's definition: name, events, initial state.

    The fold function stays in the worker's code; the store needs only enough to show
    the state of a projection that has not applied an event yet.
    """

    name: str
    events: tuple[str, ...]
    partitioned: bool = False
    #: The state before any event (per partition, for a partitioned projection), as JSON.
    initial_state: Any = None


@attrs.frozen
class ProjectionStatus:
    """Where a projection stands, without its state.

    ``position`` is the seq of the last event of the global log the projection has
    consumed (0 for none). ``generation`` grows with every write, so a runner can tell
    that its cached state is still the stored one. A rebuild is pending while
    ``rebuild_requested > rebuilt`` (each request takes the next ticket number).
    """

    name: str
    events: tuple[str, ...]
    partitioned: bool = False
    initial_state: Any = None
    position: int = 0
    updated_at: float | None = None
    generation: int = 0
    rebuild_requested: int = 0
    rebuilt: int = 0
    #: The worker holding the projection's lease, if any, and when that lease expires.
    runner: WorkerInfo | None = None
    runner_expires_at: float = 0.0

    @property
    def rebuild_pending(self) -> bool:
        return self.rebuild_requested > self.rebuilt


@attrs.frozen
class ProjectionState:
    """A projection's state as a reader sees it, with the position it reflects.

    For a partitioned projection ``state`` maps each partition key to its state.
    """

    name: str
    state: Any
    position: int
    updated_at: float | None = None
    partitioned: bool = False


@attrs.frozen
class ProjectionWrite:
    """One atomic advance (or, with ``rebuild_ticket``, replacement) of a projection.

    ``partitions`` holds the new state of every partition the write touched; an
    unpartitioned projection has the single partition ``""``. An advance applies only
    if the stored position is still ``from_position``; a replacement drops every stored
    partition first and applies only if the stored position is at most ``to_position``.
    """

    name: str
    from_position: int
    to_position: int
    partitions: dict[str, Any] = attrs.field(factory=dict)
    rebuild_ticket: int | None = None


@attrs.frozen
class ProjectionLease:
    """A worker's claim to advance a projection until ``expires_at`` unless renewed."""

    name: str
    worker: WorkerInfo
    expires_at: float


@attrs.frozen
class StepAck:
    """What recording a step tells the engine about the run's next boundary."""

    cancel_requested: bool = False

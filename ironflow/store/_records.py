"""The frozen records a store keeps: events, runs, step records, leases.

Times are Unix seconds as floats (what ``time.time()`` gives), which is how they are
stored; each record also offers its times as aware UTC ``datetime`` objects, under the
same name without ``_at`` (``run.created``, ``step.started``, ``event.time``). The JSON
shown to people (``ironflow inspect --json``, the HTTP API) renders every time as
ISO 8601 in UTC.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence
from typing import Any, Literal

import attrs

from ironflow._pure._trace import TraceContext
from ironflow.store._flowspec import FlowSpec, Rerun
from ironflow.store._steplog import step_log_of

RunStatus = Literal[
    "pending",
    "running",
    "sleeping",
    "waiting",
    "completed",
    "failed",
    "cancelled",
    # Flow control: waiting for a concurrency slot or a debounce, and paused by hand.
    "queued",
    "paused",
]
#: Statuses a run never leaves.
FINISHED: frozenset[str] = frozenset({"completed", "failed", "cancelled"})
#: Statuses of a run suspended in the store: it holds no lease and no worker slot.
SUSPENDED: frozenset[str] = frozenset({"sleeping", "waiting"})
#: The name an event deleted from a stream leaves in its place when it was the newest of
#: the log (the newest event numbers the next one, so its position is never reused).
DELETED_EVENT = "ironflow.deleted"
StepStatus = Literal["completed", "failed"]


def utc(ts: float) -> _dt.datetime:
    """Unix seconds as an aware datetime in UTC.

    A time a datetime cannot hold (past the year 9999, before the year 1: a wake-up
    stored before durations had a bound) is shown as the nearest one it can, so one
    such record never breaks a listing.
    """
    try:
        return _dt.datetime.fromtimestamp(ts, _dt.UTC)
    except (OverflowError, OSError, ValueError):
        edge = _dt.datetime.max if ts > 0 else _dt.datetime.min
        return edge.replace(tzinfo=_dt.UTC)


#: What a suspended run waits for: its wake-up time, an event, a child run, or the
#: time to try a failed step again.
SuspensionKind = Literal["sleep", "event", "child", "retry"]


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

    @property
    def time(self) -> _dt.datetime:
        """When the event was appended (``ts``), as an aware UTC datetime."""
        return utc(self.ts)

    #: The W3C trace context of the code that emitted it (a spawned run's: the parent's
    #: spawn step), if it had one: every attempt of the runs it starts joins that trace.
    trace: TraceContext | None = None


@attrs.frozen
class StepTry:
    """One failed try of a step that was tried again (a ``@tool(retries=...)``)."""

    error: ErrorInfo
    started_at: float
    ended_at: float


@attrs.frozen
class Suspension:
    """Why a run is suspended, and what ends it: kept on the run while it sleeps or waits.

    The step at ``position`` (id ``step_id``, recorded input ``input``) is not recorded
    yet; whatever ends the suspension records it, in the same transaction that makes
    the run pending again, so on resume that step is simply a recorded step:

    - ``sleep``: at ``wake_at`` the step is recorded completed (output None);
    - ``event``: the first event named ``event`` whose data matches ``match``, with a log
      position after ``after_seq`` and not in ``skip`` (events other waits of the run
      took), is the step's output; at ``wake_at``, if set, the output is None (timed out);
    - ``child``: when the run ``child_id`` finishes, its output is the step's output, or
      its error the step's failure; ``wake_at`` as for events;
    - ``retry``: nothing is recorded; at ``wake_at`` the run is pending again and tries
      the step once more, knowing the failed ``tries`` so far.

    At ``deadline`` (the run's own timeout) the run is made pending without a record,
    so the engine fails it at that step boundary.
    """

    kind: SuspensionKind
    position: int
    step_id: str
    input: Any = None
    #: When the step began waiting (the store's clock).
    since: float = 0.0
    wake_at: float | None = None
    #: Seconds from now: the store sets ``wake_at`` from its own clock when given this.
    wake_in: float | None = None
    deadline: float | None = None
    event: str | None = None
    match: dict[str, Any] | None = None
    after_seq: int = 0
    skip: tuple[int, ...] = ()
    child_id: str | None = None
    tries: tuple[StepTry, ...] = ()

    @property
    def wakes_at(self) -> float | None:
        """When a timer wakes the run: its own ``wake_at`` or its deadline, the earlier."""
        times = [t for t in (self.wake_at, self.deadline) if t is not None]
        return min(times) if times else None


@attrs.frozen
class Fork:
    """Where a forked run came from: ``ironflow run fork RUN_ID --from-step STEP_ID``.

    The fork holds copies of ``run_id``'s records before ``from_step`` (at ``position``)
    and runs on from there; the original is untouched but for the fork's id in its
    ``Run.forks``.
    """

    run_id: str
    from_step: str
    position: int
    at: float


@attrs.frozen
class Run:
    """One execution of an agent for one triggering event (or one ``ctx.spawn``)."""

    id: str
    agent: str
    status: RunStatus
    event: Event
    created_at: float
    updated_at: float
    output: Any = None
    error: ErrorInfo | None = None
    #: How many times a worker has leased this run; 1 for a run that never crashed,
    #: was handed over or was suspended (each resume from a sleep or wait leases it again).
    attempt: int = 0
    cancel_requested: bool = False
    #: The run that spawned this one with ``ctx.spawn``, if any.
    parent_id: str | None = None
    #: The latest suspension: what it waits for while the run is sleeping or waiting.
    suspension: Suspension | None = None
    #: The agent's code version when the run was created (``@agent(version=...)``).
    version: str | None = None
    #: For an agent with a concurrency limit: the run's key value, as JSON text.
    concurrency_key: str | None = None
    #: Each ``run resume --from-step``, oldest first.
    reruns: tuple[Rerun, ...] = ()
    #: The run this one was forked from, if it is a fork (``ironflow run fork``).
    forked_from: Fork | None = None
    #: The runs forked from this one, oldest first.
    forks: tuple[str, ...] = ()

    @property
    def created(self) -> _dt.datetime:
        """When the run was created (``created_at``), as an aware UTC datetime."""
        return utc(self.created_at)

    @property
    def updated(self) -> _dt.datetime:
        """When the run last changed (``updated_at``), as an aware UTC datetime."""
        return utc(self.updated_at)


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
    #: The failed tries before this outcome, for a retried tool (None: tried once).
    tries: tuple[StepTry, ...] | None = None
    #: The id of the worker that executed the step (None: recorded by the store itself,
    #: as when a sleep, a wait or a child run ends, or by a version that did not say).
    worker: str | None = None

    @property
    def started(self) -> _dt.datetime:
        """When the step began (``started_at``), as an aware UTC datetime."""
        return utc(self.started_at)

    @property
    def ended(self) -> _dt.datetime:
        """When the step's outcome was reached (``ended_at``), as an aware UTC datetime."""
        return utc(self.ended_at)


@attrs.frozen
class SuspendResult:
    """What :meth:`~ironflow.store.Store.suspend_run` did.

    ``suspended``: the run now sleeps or waits in the store, and the worker no longer
    holds it. Otherwise the lease is kept and either ``step`` holds the step's record,
    written just now because what the step waits for had already happened, or
    ``cancel_requested`` says the run must stop as cancelled instead.
    """

    suspended: bool
    step: StepRecord | None = None
    cancel_requested: bool = False


@attrs.frozen
class WorkerInfo:
    """Who holds a lease: enough to tell, on the same host, whether it is still alive."""

    id: str
    host: str
    pid: int
    #: The process start time from /proc, so a recycled pid is not mistaken for the holder.
    pid_start: str = ""
    #: The boot id and pid namespace: pids are comparable only when both match (a
    #: container sharing the host's name is another machine as far as pids go).
    machine: str = ""


@attrs.frozen
class Lease:
    """A worker's claim on a run until ``expires_at`` unless renewed by a heartbeat."""

    run_id: str
    worker: WorkerInfo
    expires_at: float
    #: The run's attempt this lease was granted for (0 in leases written before it existed).
    attempt: int = 0
    #: Whether a cancel or a pause of the run is requested: the store keeps the lease
    #: telling its run's requests (``_runs.py``), so a step reads the lease alone. None
    #: in a lease written before leases told them: the store reads its tables instead.
    cancel_requested: bool | None = None
    pause_requested: bool | None = None


@attrs.frozen
class AgentSpec:
    """What the store needs to know of an agent to create its runs: id and triggers."""

    id: str
    triggers: tuple[str, ...]
    description: str = ""
    #: Filter, concurrency, debounce, cancel-on, cron and version (None: none of them).
    flow: FlowSpec | None = None


@attrs.frozen
class EmitResult:
    """The outcome of emitting an event. ``created`` is False for a repeated event id."""

    event_id: str
    run_ids: tuple[str, ...]
    created: bool = True
    seq: int = 0


@attrs.frozen
class LeasedRun:
    """A run handed to a worker together with every step it has recorded so far.

    ``steps`` is a sequence of the records in position order (a ``StepLog``, which
    decodes each record when it is first read; given any sequence of records, it
    becomes one).
    """

    run: Run
    steps: Sequence[StepRecord] = attrs.field(converter=step_log_of)
    lease: Lease
    #: The worker this run was taken from because it died or its lease lapsed; None
    #: when the run was free (new, woken from a sleep or wait, or handed back).
    taken_from: WorkerInfo | None = None


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
    #: ``ironflow run pause``: stop at the next step boundary and hand the run back.
    pause_requested: bool = False


@attrs.frozen
class PruneResult:
    """What a prune deleted: runs, their step records, and log events nothing needs.

    With ``dry_run`` nothing was deleted; the counts say what would have been.
    """

    runs: int
    steps: int
    events: int
    dry_run: bool = False

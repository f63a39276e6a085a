"""The Store protocol's argument checks, written once.

Each function takes one argument of a store method as a caller gave it and returns it
checked (user values as plain JSON), or raises the error the store raises for it:
:class:`~ironflow.errors.InvalidInputError` for a value no store can take,
:class:`~ironflow.errors.RunNotFoundError` or
:class:`~ironflow.errors.ProjectionNotFoundError` for an id no run or projection can
have (an impossible id is simply not found, as it would be in any store).

Three layers use them, and none checks anything on its own: the store backends (so a
direct caller gets the same answer), the server's store routes (the route table in
``_routes`` names one check per argument, so a request with a bad value answers 4xx and
changes nothing), and :class:`~ironflow.store.RemoteStore` (which checks before sending,
so a bad value fails in the caller with the same error and path as with a local store).
The limits come from :mod:`ironflow._pure._limits`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection
from typing import Any

import attrs

from ironflow._pure._limits import (
    MAX_ATTEMPT,
    MAX_DURATION,
    MAX_ERROR_TYPE_CHARS,
    MAX_HOST_BYTES,
    MAX_NAME_BYTES,
    MAX_PAGE,
    MAX_PARTITION_BYTES,
    MAX_PID,
    MAX_PID_START_CHARS,
    MAX_POSITION,
    MAX_SEQ,
    MAX_STEP_ID_BYTES,
    MAX_TIMESTAMP,
    MAX_TTL,
    MIN_TTL,
    utf8_size,
)
from ironflow._pure._trace import TraceContext, check_trace
from ironflow.errors import InvalidInputError, ProjectionNotFoundError, RunNotFoundError
from ironflow.store._codec import to_json_value
from ironflow.store._flowspec import agent_problem
from ironflow.store._records import (
    FINISHED,
    AgentSpec,
    ErrorInfo,
    ProjectionSpec,
    ProjectionWrite,
    StepRecord,
    StepTry,
    Suspension,
    WorkerInfo,
)
from ironflow.store._triggers import validate_trigger

__all__ = [
    "agent_specs",
    "any_text",
    "duration",
    "error_info",
    "event_name",
    "finish_status",
    "integer",
    "key",
    "name",
    "names",
    "number",
    "optional_name",
    "partition",
    "partition_ok",
    "projection_name",
    "projection_specs",
    "projection_write",
    "run_id",
    "step",
    "step_id",
    "stream_id",
    "stream_version",
    "stream_versions",
    "suspension",
    "text",
    "timestamp",
    "trace",
    "ttl",
    "worker",
]


# -- text ------------------------------------------------------------------------------------


def text(value: Any, what: str, *, max_bytes: int, min_bytes: int = 1, nul: bool = False) -> str:
    """A string of ``min_bytes`` to ``max_bytes`` UTF-8 bytes (NUL refused unless ``nul``)."""
    size = utf8_size(value)
    if size is None or not min_bytes <= size <= max_bytes or (not nul and "\x00" in value):
        shown = repr(value) if size is None or size <= 80 else repr(value[:60]) + "..."
        nuls = "" if nul else " without NUL"
        raise InvalidInputError(
            f"{what} must be a string of {min_bytes} to {max_bytes} bytes{nuls}, not {shown}"
        )
    return str(value)


def any_text(value: Any, what: str) -> str:
    """Any string UTF-8 can hold: a filter, or a partition to read (one that no record
    has simply matches nothing)."""
    if utf8_size(value) is None:
        raise InvalidInputError(f"{what} must be a string, not {value!r:.60}")
    return str(value)


def name(value: Any, what: str) -> str:
    """An id or name a store keys by: 1 to ``MAX_NAME_BYTES`` bytes, no NUL."""
    return text(value, what, max_bytes=MAX_NAME_BYTES)


def optional_name(value: Any, what: str) -> str | None:
    return None if value is None else name(value, what)


def names(value: Any, what: str) -> list[str]:
    """A list of at most ``MAX_PAGE`` names."""
    if isinstance(value, str) or not isinstance(value, Collection) or len(value) > MAX_PAGE:
        raise InvalidInputError(f"{what} must be a list of at most {MAX_PAGE} names")
    return [name(item, f"each of {what}") for item in value]


def key(value: Any, what: str) -> str:
    """A key chosen by a caller (an event id, an idempotency key): like a name."""
    return name(value, what)


def event_name(value: Any, what: str = "an event name") -> str:
    """An event's name: 1 to ``MAX_NAME_BYTES`` bytes (any text: it is never split)."""
    return text(value, what, max_bytes=MAX_NAME_BYTES, nul=True)


def run_id(value: Any, what: str = "a run id") -> str:
    """A run id; one that no run can have is not found."""
    size = utf8_size(value)
    if size is None or not 0 < size <= MAX_NAME_BYTES or "\x00" in value:
        raise RunNotFoundError(str(value).encode("utf-8", "replace").decode())
    return str(value)


#: A run id as ``new_id("run_")`` makes them: what a caller may name a new run with.
_NEW_RUN_ID = re.compile(r"run_[0-9A-HJKMNP-TV-Z]{26}")


def new_run_id(value: Any, what: str = "a new run's id") -> str:
    """An id for a run to be created (a fork's): the shape ``new_id("run_")`` gives."""
    if not isinstance(value, str) or not _NEW_RUN_ID.fullmatch(value):
        raise InvalidInputError(
            f"{what} must be a run id made like new_id('run_'), not {value!r:.60}"
        )
    return value


def projection_name(value: Any, what: str = "a projection name") -> str:
    """A projection's name given to look one up; an impossible one is not found."""
    size = utf8_size(value)
    if size is None or not 0 < size <= MAX_NAME_BYTES or "\x00" in value:
        raise ProjectionNotFoundError(str(value).encode("utf-8", "replace").decode())
    return str(value)


def stream_id(value: Any, what: str = "a stream id") -> str:
    return name(value, what)


def step_id(value: Any, what: str = "a step id") -> str:
    return text(value, what, max_bytes=MAX_STEP_ID_BYTES)


def partition_ok(value: Any) -> bool:
    """Whether a partition can have this key (a read skips keys none can have)."""
    size = utf8_size(value)
    return size is not None and size <= MAX_PARTITION_BYTES and "\x00" not in value


def partition(value: Any, projection: str) -> str:
    """A partition key to write state under."""
    if not partition_ok(value):
        raise InvalidInputError(
            f"projection {projection!r}: a partition key must be a string of at most "
            f"{MAX_PARTITION_BYTES} bytes without NUL, not {value!r}; make partition_by "
            "return such a string"
        )
    return str(value)


# -- numbers ---------------------------------------------------------------------------------


def integer(value: Any, what: str, lo: int, hi: int) -> int:
    """An integer from ``lo`` to ``hi`` (a bool is not one)."""
    if type(value) is not int or not lo <= value <= hi:
        raise InvalidInputError(f"{what} must be a whole number from {lo} to {hi}, not {value!r}")
    return value


def number(value: Any, what: str, lo: float, hi: float) -> float:
    """A finite number from ``lo`` to ``hi`` (a bool is not one)."""
    if (
        not isinstance(value, int | float)
        or isinstance(value, bool)
        or not math.isfinite(value)
        or not lo <= value <= hi
    ):
        raise InvalidInputError(f"{what} must be a number from {lo:g} to {hi:g}, not {value!r}")
    return float(value)


def stream_version(value: Any, what: str = "a stream version") -> int:
    return integer(value, what, 1, MAX_SEQ)


def stream_versions(value: Any) -> frozenset[int]:
    """Versions of a stream to delete (any number of them)."""
    if isinstance(value, str | bytes) or not isinstance(value, Collection):
        raise InvalidInputError(f"versions must be a list of stream versions, not {value!r:.60}")
    return frozenset(stream_version(v, "each of versions") for v in value)


def trace(value: TraceContext) -> TraceContext:
    """The W3C trace context an event or a child run is created in."""
    checked = check_trace(value, "trace")
    assert checked is not None
    return checked


def ttl(value: Any) -> float:
    return number(value, "a lease's ttl (seconds)", MIN_TTL, MAX_TTL)


def timestamp(value: Any, what: str) -> float:
    """A time a record holds, in seconds from the epoch, up to the end of year 9999 (and as
    far before the epoch: a ``sleep_until`` a date in the past is over at once)."""
    if _finite(value) and not -MAX_TIMESTAMP <= value <= MAX_TIMESTAMP:
        raise InvalidInputError(
            f"{what} {value!r} is past the year 9999, the last time a store can keep"
        )
    return number(value, what, -MAX_TIMESTAMP, MAX_TIMESTAMP)


def duration(value: Any, what: str) -> float:
    """A number of seconds from 0 to ``MAX_DURATION`` (100 years)."""
    if _finite(value) and value > MAX_DURATION:
        raise InvalidInputError(
            f"{what} of {value:g}s is longer than 100 years ({MAX_DURATION:g}s): surely a "
            "mistake, and a wake-up past the year 9999 cannot be kept; wait for a shorter time"
        )
    return number(value, what, 0.0, MAX_DURATION)


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


# -- records ------------------------------------------------------------------------------------


def worker(value: WorkerInfo) -> WorkerInfo:
    """Who holds a lease. Its pid must be a real one: a store probes it with kill(pid, 0)."""
    name(value.id, "a worker's id")
    text(value.host, "a worker's host name", max_bytes=MAX_HOST_BYTES, min_bytes=0, nul=True)
    integer(value.pid, "a worker's pid", 1, MAX_PID)
    text(value.pid_start, "a worker's pid_start", max_bytes=MAX_PID_START_CHARS, min_bytes=0)
    text(value.machine, "a worker's machine id", max_bytes=MAX_NAME_BYTES, min_bytes=0)
    return value


def error_info(value: ErrorInfo, what: str = "an error") -> ErrorInfo:
    if len(value.type) > MAX_ERROR_TYPE_CHARS:
        raise InvalidInputError(
            f"{what}: its type name must be at most {MAX_ERROR_TYPE_CHARS} characters"
        )
    if value.step_id is not None:
        step_id(value.step_id, f"{what}: its step id")
    return value


def _tries(tries: tuple[StepTry, ...] | None, what: str) -> None:
    for i, attempt in enumerate(tries or ()):
        error_info(attempt.error, f"{what} try {i}")
        timestamp(attempt.started_at, f"{what} try {i}: started_at")
        timestamp(attempt.ended_at, f"{what} try {i}: ended_at")


def step(value: StepRecord) -> StepRecord:
    """A step record to write: its fields in range and its input and output as JSON."""
    run_id(value.run_id)
    what = f"step {value.id!r} of run {value.run_id}"
    integer(value.position, f"{what}: position", 0, MAX_POSITION)
    step_id(value.id, f"{what}: id")
    integer(value.attempt, f"{what}: attempt", 0, MAX_ATTEMPT)
    if value.status not in ("completed", "failed"):
        raise InvalidInputError(f"{what}: status must be completed or failed, not {value.status!r}")
    timestamp(value.started_at, f"{what}: started_at")
    timestamp(value.ended_at, f"{what}: ended_at")
    if value.error is not None:
        error_info(value.error, what)
    _tries(value.tries, what)
    return attrs.evolve(
        value,
        input=to_json_value(value.input, f"{what} input", "input"),
        output=to_json_value(value.output, f"{what} output", "output"),
    )


def finish_status(value: Any, what: str = "finish_run: status") -> str:
    if not isinstance(value, str) or value not in FINISHED:
        raise InvalidInputError(f"{what} must be one of {sorted(FINISHED)}, not {value!r}")
    return str(value)


_SUSPENSION_KINDS = ("sleep", "event", "child", "retry")


def suspension(s: Suspension) -> Suspension:
    """What a run suspends for, with its user values as JSON and its times in range.

    A wake-up more than ``MAX_DURATION`` away, or past the year 9999, is refused: it is
    a mistake, and no date could show it.
    """
    what = "suspend_run"
    if s.kind not in _SUSPENSION_KINDS:
        raise InvalidInputError(f"{what}: kind must be one of {_SUSPENSION_KINDS}, not {s.kind!r}")
    integer(s.position, f"{what}: the step's position", 0, MAX_POSITION)
    step_id(s.step_id, f"{what}: the step's id")
    for field in ("wake_at", "deadline"):
        value = getattr(s, field)
        if value is not None:
            timestamp(value, f"{what}: {field}")
    timestamp(s.since, f"{what}: since")
    if s.wake_in is not None:
        duration(s.wake_in, f"{what}: wake_in")
    if s.kind == "event":
        event_name(s.event, f"{what}: the name of the event it waits for")
    if s.kind == "child":
        name(s.child_id, f"{what}: the id of the child run it waits for")
    if s.match is not None and not isinstance(s.match, dict):
        raise InvalidInputError(f"{what}: match must be an object, not {s.match!r}")
    integer(s.after_seq, f"{what}: after_seq", 0, MAX_SEQ)
    if len(s.skip) > MAX_PAGE:
        raise InvalidInputError(f"{what}: skip holds at most {MAX_PAGE} event positions")
    for seq in s.skip:
        integer(seq, f"{what}: each of skip", 0, MAX_SEQ)
    _tries(s.tries, f"{what}: step {s.step_id!r}")
    return attrs.evolve(
        s,
        input=to_json_value(s.input, f"step {s.step_id!r} input", "input"),
        match=to_json_value(s.match, f"step {s.step_id!r} match", "match"),
    )


def agent_specs(value: Collection[AgentSpec]) -> list[AgentSpec]:
    """Agents to register, each checked whole by the rules ``@agent`` applies (its id,
    triggers and flow control): one bad spec and none of them is registered."""
    out = []
    for spec in value:
        if not isinstance(spec, AgentSpec):
            raise InvalidInputError(f"register_agents takes AgentSpec records, not {spec!r}")
        problem = agent_problem(spec)
        if problem is not None:
            raise InvalidInputError(
                f"agent {spec.id!r}: {problem}; no agent of this call was registered"
            )
        out.append(spec)
    return out


def projection_specs(value: Collection[ProjectionSpec]) -> list[ProjectionSpec]:
    """Projections to register, their initial state as JSON."""
    out = []
    for spec in value:
        name(spec.name, "a projection name")
        for event in spec.events:
            why = validate_trigger(event)
            if why is not None:
                raise InvalidInputError(f"projection {spec.name!r}: {why}")
        initial = to_json_value(
            spec.initial_state, f"projection {spec.name!r} initial_state", "initial_state"
        )
        out.append(attrs.evolve(spec, initial_state=initial))
    return out


def projection_write(value: ProjectionWrite) -> ProjectionWrite:
    """One advance of a projection: positions in range, partitions keyed, states as JSON."""
    projection_name(value.name)
    what = f"projection {value.name!r}"
    integer(value.from_position, f"{what}: from_position", 0, MAX_SEQ)
    integer(value.to_position, f"{what}: to_position", 0, MAX_SEQ)
    if value.to_position < value.from_position:
        raise InvalidInputError(
            f"{what}: a write cannot move from position {value.from_position} back to "
            f"{value.to_position}"
        )
    if value.rebuild_ticket is not None:
        integer(value.rebuild_ticket, f"{what}: rebuild_ticket", 0, MAX_SEQ)
    partitions = {
        partition(part, value.name): to_json_value(state, f"{what} state")
        for part, state in value.partitions.items()
    }
    return attrs.evolve(value, partitions=partitions)

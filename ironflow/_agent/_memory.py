"""Agent memory: ``@projection``, the projection runner, and ``ctx.memory``.

An agent's memory is an *entity stream* (ordered events with versions, kept by the
store) read through a *projection*: a pure fold ``(state, event) -> state`` over the
events of the global log it subscribes to. The fold function lives in the worker's
code, so the worker runs it:

- One runner at a time advances a projection. It holds a lease in the store, taken
  over at once when its holder is a dead process on this host, else after the TTL.
- Each batch is folded in memory and written with its new position in **one** write
  transaction that checks the lease and the starting position (a fencing check), so
  no event is applied twice or skipped, and a runner that lost its lease writes
  nothing.
- A rebuild folds the whole log into fresh state and replaces the stored state in one
  transaction; for a pure fold the result equals the incremental state.

``ctx.memory.append(name, data)`` is two recorded steps: ``memory.append`` (the stream
append, idempotent by ``run_id/step_id`` so a replay never appends twice) and
``memory.append.wait`` (returns once the agent's projection has applied that event).
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import attrs

from ironflow._agent._dsl import Memory, _check_name
from ironflow.errors import (
    DefinitionError,
    ProjectionTimeoutError,
)
from ironflow.replay._engine import Execution, current_step
from ironflow.store import Event
from ironflow.store import _checks as checks
from ironflow.store._codec import dumps, to_json_value
from ironflow.store._records import (
    ProjectionSpec,
)
from ironflow.store._triggers import trigger_matches, validate_trigger

__all__ = [
    "WHOLE",
    "AgentMemory",
    "AppendResult",
    "ProjectionDefinition",
    "fold_events",
    "projection",
    "projections_in",
]

F = TypeVar("F", bound=Callable[..., Any])

log = logging.getLogger("ironflow.projection")

_PROJECTION_ATTR = "__ironflow_projection__"
#: The partition an unpartitioned projection keeps its one state in.
WHOLE = ""
_DEFAULT: Any = object()


# -- the definition --------------------------------------------------------------------


@attrs.frozen
class ProjectionDefinition:
    """What ``@projection`` learned about a fold function. Found again with :meth:`from_fn`."""

    name: str
    fn: Callable[[Any, Event], Any]
    events: tuple[str, ...]
    #: The initial state as JSON text, so every fold starts from a fresh copy.
    initial_json: str
    partition_by: Callable[[Event], str] | None = None

    @property
    def partitioned(self) -> bool:
        return self.partition_by is not None

    def initial(self) -> Any:
        """A fresh copy of the initial state (a fold may mutate it freely)."""
        return json.loads(self.initial_json)

    def matches(self, event_name: str) -> bool:
        """Whether the projection subscribes to events called ``event_name``."""
        return any(trigger_matches(p, event_name) for p in self.events)

    def partition_of(self, event: Event) -> str:
        """The partition key of an event (``""`` for an unpartitioned projection)."""
        if self.partition_by is None:
            return WHOLE
        key = self.partition_by(event)
        if not isinstance(key, str):
            raise DefinitionError(
                f"projection {self.name!r}: partition_by returned {type(key).__name__} "
                f"{key!r} for event {event.name} #{event.seq}; it must return a str"
            )
        return key

    def spec(self) -> ProjectionSpec:
        """What the store keeps of this projection."""
        return ProjectionSpec(
            name=self.name,
            events=self.events,
            partitioned=self.partitioned,
            initial_state=self.initial(),
        )

    @staticmethod
    def from_fn(fn: Any) -> ProjectionDefinition | None:
        """The definition attached to a ``@projection`` function, or None."""
        return getattr(fn, _PROJECTION_ATTR, None)

    @staticmethod
    def must_from_fn(fn: Any) -> ProjectionDefinition:
        """Like :meth:`from_fn`, raising a clear error for an undecorated function."""
        if isinstance(fn, ProjectionDefinition):
            return fn
        defn = ProjectionDefinition.from_fn(fn)
        if defn is None:
            raise DefinitionError(
                f"{getattr(fn, '__qualname__', fn)!r} is not a projection; was it decorated "
                "with @projection(name=..., events=[...])?"
            )
        return defn


def projection(
    *,
    name: str,
    events: Sequence[str],
    initial_state: Any = _DEFAULT,
    partition_by: Callable[[Event], str] | None = None,
) -> Callable[[F], F]:
    """Make a pure function ``(state, event) -> state`` a projection of the event log.

    A worker serving the projection folds, in log order, every event whose name matches
    one of ``events`` (exact names, or trigger patterns such as ``doc.*``), starting from
    ``initial_state`` (a JSON value, or a zero-argument function returning one; default
    ``{}``). The state must be JSON data: it is stored as JSON, and each batch's result
    is converted to JSON before the next batch folds on it.

    With ``partition_by`` (a function of the event returning a str), the projection keeps
    one state per key, each starting from ``initial_state``, and a batch writes only the
    keys its events touch. Its state, read whole, is ``{key: state}``.

    Guarantees: each matching event is applied exactly once to the stored state; the
    state and the position it reflects are written in one transaction; a rebuild from
    the log gives the same state as incremental folding, if the function is pure (no
    clock, randomness or I/O; no dependence on anything but ``state`` and ``event``).
    The decorated function stays callable as it is, for unit tests.
    """

    def decorate(fn: F) -> F:
        if not callable(fn) or inspect.isclass(fn):
            raise DefinitionError(f"@projection(name={name!r}) needs a function, not {fn!r}")
        proj_name = _check_name("projection", name, fn)
        if inspect.iscoroutinefunction(fn):
            raise DefinitionError(
                f"@projection(name={proj_name!r}): {fn.__qualname__!r} is async; a projection "
                "is a pure fold (state, event) -> state, so make it a plain def"
            )
        params = [
            p
            for p in inspect.signature(fn).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        if len(params) < 2:
            raise DefinitionError(
                f"@projection(name={proj_name!r}): {fn.__qualname__!r} must take two "
                "arguments, (state, event), and return the new state"
            )
        names = [events] if isinstance(events, str) else list(events)
        if not names:
            raise DefinitionError(
                f"@projection(name={proj_name!r}): events must name at least one event"
            )
        for pattern in names:
            problem = validate_trigger(pattern)
            if problem is not None:
                raise DefinitionError(f"@projection(name={proj_name!r}): {problem}")
        if partition_by is not None and not callable(partition_by):
            raise DefinitionError(
                f"@projection(name={proj_name!r}): partition_by must be a function of the "
                f"event returning its key (lambda e: e.data['docId']), not {partition_by!r}"
            )
        initial = {} if initial_state is _DEFAULT else initial_state
        if callable(initial):
            initial = initial()
        try:
            initial_json = dumps(initial, f"projection {proj_name!r} initial_state").decode()
        except TypeError as exc:
            raise DefinitionError(str(exc)) from None
        target: Any = fn
        if ProjectionDefinition.from_fn(fn) is not None:
            # One fold serving two projections: each gets its own callable, so the
            # second definition does not silently replace the first.
            @functools.wraps(fn)
            def target(state: Any, event: Event) -> Any:
                return fn(state, event)

        defn = ProjectionDefinition(
            name=proj_name,
            fn=fn,
            events=tuple(names),
            initial_json=initial_json,
            partition_by=partition_by,
        )
        setattr(target, _PROJECTION_ATTR, defn)
        return typing.cast(F, target)

    return decorate


def projections_in(namespace: Mapping[str, Any]) -> list[ProjectionDefinition]:
    """The projections defined in a module's namespace, in definition order, without repeats."""
    found: dict[str, ProjectionDefinition] = {}
    for value in namespace.values():
        defn = ProjectionDefinition.from_fn(value)
        if defn is None:
            continue
        other = found.get(defn.name)
        if other is not None and other.fn is not defn.fn:
            raise DefinitionError(
                f"two projections share the name {defn.name!r} ({other.fn.__qualname__} and "
                f"{defn.fn.__qualname__}); give each a unique name"
            )
        found[defn.name] = defn
    return list(found.values())


def fold_events(
    defn: ProjectionDefinition, events: Iterable[Event], parts: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Fold ``events`` into ``parts`` (partition key -> state) and return the touched keys.

    Events the projection does not subscribe to are skipped. The returned states are
    JSON, as they will be stored.
    """
    parts = {} if parts is None else parts
    touched: set[str] = set()
    for event in events:
        if not defn.matches(event.name):
            continue
        key = defn.partition_of(event)
        state = parts[key] if key in parts else defn.initial()
        parts[key] = defn.fn(state, event)
        touched.add(key)
    return {
        key: to_json_value(parts[key], f"projection {defn.name!r} state", "state")
        for key in touched
    }


# -- ctx.memory ------------------------------------------------------------------------------


@attrs.frozen
class AppendResult:
    """Where ``ctx.memory.append`` put its event: the stream, its version there, its log seq."""

    stream: str
    version: int
    seq: int


class AgentMemory:
    """``ctx.memory``: the agent's entity stream and projection, used through steps.

    Every method is a recorded step, so a replay sees exactly what the first execution
    saw. In an ``async def`` agent each returns an awaitable.
    """

    def __init__(self, execution: Execution, memory: Memory, agent_id: str) -> None:
        self._execution = execution
        self._agent_id = agent_id
        #: The entity stream this agent appends to.
        self.stream: str = memory.stream
        #: The projection ``append`` waits for and ``state`` reads, if any.
        self.projection: str | None = memory.projection

    def _require_projection(self, what: str) -> str:
        if self.projection is None:
            raise DefinitionError(
                f"agent {self._agent_id!r}: ctx.memory.{what} needs a projection; declare it "
                "with @agent(..., memory=Memory(stream=..., projection=NAME))"
            )
        return self.projection

    def append(
        self, name: str, data: Any = None, *, wait: bool = True, timeout: float = 30.0
    ) -> Any:
        """Append ``name``/``data`` to the agent's stream; wait for its projection to apply it.

        Two steps: ``memory.append`` appends the event (idempotently, keyed by
        ``run_id/step_id``: if the worker dies after the append but before the step is
        recorded, the re-executed step finds the first append instead of adding a
        second) and records ``{stream, version, seq}``; ``memory.append.wait`` returns
        once the projection's position reaches that seq, so a following
        ``ctx.memory.state()`` sees the event. The wait fails the step with
        :class:`~ironflow.errors.ProjectionTimeoutError` after ``timeout`` seconds
        (no worker serves the projection, or its fold keeps failing). Without a
        projection, or with ``wait=False``, only the first step is taken.

        Returns an :class:`AppendResult` (awaitable in an async agent).
        """
        checks.event_name(name, "memory.append: the event name")
        data = to_json_value(data, f"memory event {name!r} data", "data")
        execution = self._execution
        store = execution.store
        stream = self.stream
        projection_name = self.projection if wait else None
        # Both positions are taken now, at call time, so concurrent appends under
        # asyncio.gather get the same positions on every replay.
        append_slot = execution.begin(
            "memory.append", {"stream": stream, "name": name, "data": data}
        )
        wait_slot = (
            execution.begin("memory.append.wait", {"projection": projection_name})
            if projection_name is not None
            else None
        )

        def do_append() -> dict[str, Any]:
            step = current_step()
            assert step is not None, "memory.append runs as a step"
            event = store.append_to_stream(
                stream,
                name,
                data,
                idempotency_key=step.idempotency_key,
                trace=execution.trace_context(),  # the runs it starts join this run's trace
            )
            return {"stream": stream, "version": event.version, "seq": event.seq}

        def do_wait(seq: int) -> dict[str, Any]:
            assert projection_name is not None
            reached = store.wait_for_projection(projection_name, seq, timeout=timeout)
            if reached < seq:
                raise ProjectionTimeoutError(
                    f"projection {projection_name!r} has not applied event #{seq} of stream "
                    f"{stream!r} within {timeout:g}s (it is at position {reached}). Is a worker "
                    f"serving it running? A worker serves every @projection its module "
                    "defines; its log shows a fold that keeps failing"
                )
            return {"position": reached}

        if execution.is_async:

            async def both() -> AppendResult:
                result: AppendResult = await execution.run_async(
                    append_slot, do_append, (), {}, AppendResult
                )
                if wait_slot is not None:
                    await execution.run_async(wait_slot, do_wait, (result.seq,), {}, Any)
                return result

            return both()
        result: AppendResult = execution.run_blocking(append_slot, do_append, (), {}, AppendResult)
        if wait_slot is not None:
            execution.run_blocking(wait_slot, do_wait, (result.seq,), {}, Any)
        return result

    def state(self, partition: str | None = None) -> Any:
        """The projection's current state, as the recorded step ``memory.state``.

        A step, not a plain read, because a handler branches on what it reads: a replay
        must see the state the first execution saw, not whatever the projection holds
        by then. For a partitioned projection, pass ``partition`` to read one key's
        state (its initial state if it has none yet) instead of recording every key.
        """
        projection_name = self._require_projection("state()")
        store = self._execution.store

        def read() -> Any:
            if partition is None:
                return store.get_projection(projection_name).state
            found = store.get_projection(projection_name, partitions=[partition])
            if not found.partitioned:
                raise DefinitionError(
                    f"projection {projection_name!r} is not partitioned; call "
                    "ctx.memory.state() without a partition"
                )
            if partition in found.state:
                return found.state[partition]
            return store.projection_status(projection_name).initial_state

        step_input = {"projection": projection_name, "partition": partition}
        return self._execution.step("memory.state", step_input, read, (), {}, Any)

    def read(self, from_version: int = 0) -> Any:
        """The stream's events with version ``>= from_version``, as the step ``memory.read``."""
        store = self._execution.store
        stream = self.stream

        def read_all() -> list[Event]:
            out: list[Event] = []
            version = from_version
            while True:
                batch = store.read_stream(stream, from_version=version, limit=1000)
                out.extend(batch)
                if len(batch) < 1000:
                    return out
                version = batch[-1].version + 1

        step_input = {"stream": stream, "from_version": from_version}
        return self._execution.step("memory.read", step_input, read_all, (), {}, list[Event])

    def __repr__(self) -> str:
        return f"<AgentMemory stream={self.stream!r} projection={self.projection!r}>"

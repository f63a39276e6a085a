"""The steps that wait: sleeps, waits for events, approvals, child runs.

Each is a recorded step like a tool call. What makes them different is that the
engine hands the wait to the store (``suspend_run``) instead of blocking: the run is
``sleeping`` or ``waiting`` in the store, holding no worker thread or slot, and the
store itself records the step's result when the time, the event or the child's end
comes, in the same transaction that makes the run pending again. On resume the step
is simply a recorded step.
"""

from __future__ import annotations

import datetime as _dt
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import attrs

from ironflow._agent._dsl import AgentDefinition
from ironflow._pure._durations import Duration, check_ahead, parse_duration
from ironflow._pure._limits import MAX_STEP_NAME_CHARS, is_code_name
from ironflow.errors import InvalidInputError
from ironflow.replay._engine import Execution, current_step
from ironflow.store import Event, Suspension
from ironflow.store import _checks as checks
from ironflow.store._codec import event_data, to_json_value

__all__ = [
    "APPROVAL_PREFIX",
    "EVENT_WAIT_STEPS",
    "ApproveResult",
    "ChildRun",
    "approval_event",
    "approve",
    "sleep",
    "sleep_until",
    "spawn",
    "wait_for_event",
]

T = TypeVar("T")
R = TypeVar("R")

#: An approval named ``merge`` is the event ``agent.approve.merge``.
APPROVAL_PREFIX = "agent.approve."
#: Step ids of the waits for events (``wait.<event>``, ``approve.<name>``): each
#: recorded output is the event the wait took. For readers of records (the views); the
#: engine is told which steps are such waits by the suspension's kind instead.
EVENT_WAIT_STEPS = ("wait.", "approve.")
_DEFAULT_TTL = "7d"


@attrs.frozen
class ApproveResult:
    """The answer to ``ctx.approve``: approved or not, by whom, why; or no answer in time.

    ``payload`` is what the run asked about. ``timed_out`` is True (and ``approved``
    False) when nobody answered within the ttl.
    """

    approved: bool
    approver: str | None = None
    reason: str | None = None
    payload: Any = None
    timed_out: bool = False


def approval_event(
    run_id: str,
    name: str,
    *,
    approved: bool = True,
    approver: str | None = None,
    reason: str | None = None,
) -> tuple[str, dict[str, Any]]:
    """The event (name, data) that answers the approval ``name`` of run ``run_id``.

    Emitting it from anywhere answers the approval: ``ironflow approve`` and the HTTP
    API's ``POST /api/v1/runs/{id}/approvals/{name}`` are shorthands for this.
    """
    _check_name("an approval", name)
    data: dict[str, Any] = {"run_id": run_id, "approved": bool(approved)}
    if approver is not None:
        data["approver"] = approver
    if reason is not None:
        data["reason"] = reason
    return APPROVAL_PREFIX + name, data


def _check_name(what: str, name: Any) -> str:
    if not is_code_name(name, MAX_STEP_NAME_CHARS):
        raise InvalidInputError(
            f"{what} name must be letters, digits, '.', '_' or '-' (at most "
            f"{MAX_STEP_NAME_CHARS}), starting with a letter or digit, not {name!r}"
        )
    return name


def _then(execution: Execution, value: Any, fn: Callable[[Any], R]) -> Any:
    """``fn(value)``, or in an async run an awaitable of ``fn(await value)``."""
    if not execution.is_async:
        return fn(value)

    async def later() -> R:
        return fn(await value)

    return later()


# -- durable time ---------------------------------------------------------------------------


def sleep(execution: Execution, duration: Duration) -> Any:
    """The step ``sleep``: suspend the run for ``duration`` (see ``AgentContext.sleep``)."""
    seconds = parse_duration(duration, "ctx.sleep")
    wait = Suspension(kind="sleep", position=0, step_id="", wake_in=seconds)
    return execution.suspend("sleep", {"seconds": seconds}, wait)


def sleep_until(execution: Execution, when: _dt.datetime) -> Any:
    """The step ``sleep``: suspend the run until ``when`` (see ``AgentContext.sleep_until``)."""
    if not isinstance(when, _dt.datetime) or when.tzinfo is None:
        raise InvalidInputError(
            f"ctx.sleep_until needs a timezone-aware datetime, not {when!r}; "
            "e.g. datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)"
        )
    utc = when.astimezone(_dt.UTC)
    check_ahead(utc.timestamp() - time.time(), "ctx.sleep_until", when)
    wait = Suspension(kind="sleep", position=0, step_id="", wake_at=utc.timestamp())
    return execution.suspend("sleep", {"until": utc.isoformat()}, wait)


# -- events and approvals ----------------------------------------------------------------------


def _event_or_none(value: Any) -> Event | None:
    if value is None:
        return None
    if isinstance(value, Event):
        return value
    from ironflow.store._codec import structure

    return structure(value, Event)  # type: ignore[no-any-return]


def wait_for_event(
    execution: Execution,
    name: str,
    *,
    match: Mapping[str, Any] | None = None,
    timeout: Duration | None = None,
    step_name: str | None = None,
) -> Any:
    """The step ``wait.<name>``: the first matching event, or None after ``timeout``."""
    checks.event_name(name, "ctx.wait_for_event: the event name")
    if match is not None and not isinstance(match, Mapping):
        raise InvalidInputError(
            f"ctx.wait_for_event(match=...) must be a dict of data fields to values, not {match!r}"
        )
    fields = to_json_value(dict(match or {}), f"wait for {name!r} match", "match")
    seconds = None if timeout is None else parse_duration(timeout, "ctx.wait_for_event timeout")
    wait = Suspension(
        kind="event", position=0, step_id="", event=name, match=fields or None, wake_in=seconds
    )
    step_input = {"event": name, "match": fields or None, "timeout": seconds}
    value = execution.suspend(step_name or f"wait.{name}", step_input, wait)
    return _then(execution, value, _event_or_none)


def approve(
    execution: Execution, name: str, payload: Any = None, ttl: Duration = _DEFAULT_TTL
) -> Any:
    """The step ``approve.<name>``: wait for the approval event (see ``AgentContext.approve``)."""
    _check_name("ctx.approve: an approval", name)
    seconds = parse_duration(ttl, "ctx.approve ttl")
    stored_payload = to_json_value(payload, f"approval {name!r} payload", "payload")
    event_name = APPROVAL_PREFIX + name
    match = {"run_id": execution.run_id}
    wait = Suspension(
        kind="event", position=0, step_id="", event=event_name, match=match, wake_in=seconds
    )
    step_input = {"event": event_name, "match": match, "payload": stored_payload, "ttl": seconds}
    value = execution.suspend(f"approve.{name}", step_input, wait)

    def result(answer: Any) -> ApproveResult:
        if answer is None:
            return ApproveResult(approved=False, payload=payload, timed_out=True)
        data = answer.get("data") if isinstance(answer, Mapping) else None
        data = data if isinstance(data, Mapping) else {}
        approver, reason = data.get("approver"), data.get("reason")
        return ApproveResult(
            approved=data.get("approved") is True,
            approver=None if approver is None else str(approver),
            reason=None if reason is None else str(reason),
            payload=payload,
        )

    return _then(execution, value, result)


# -- child runs ------------------------------------------------------------------------------


class ChildRun:
    """A run started by ``ctx.spawn``: its id, and its result as a step that waits.

    ``result()`` suspends the parent (status ``waiting``, no worker held) until the
    child finishes, then returns the child's output; a child that failed or was
    cancelled makes it raise :class:`~ironflow.errors.StepFailedError` naming the
    child's error. In an async run, ``await handle.result()``.
    """

    def __init__(self, execution: Execution, run_id: str, agent: str) -> None:
        self._execution = execution
        self.run_id = run_id
        self.agent = agent

    def result(self, *, timeout: Duration | None = None) -> Any:
        """The child's output, as the step ``spawn.<agent>.result`` (see the class)."""
        seconds = None if timeout is None else parse_duration(timeout, "ChildRun.result timeout")
        wait = Suspension(
            kind="child", position=0, step_id="", child_id=self.run_id, wake_in=seconds
        )
        step_input = {"run_id": self.run_id, "timeout": seconds}
        return self._execution.suspend(f"spawn.{self.agent}.result", step_input, wait)

    def __repr__(self) -> str:
        return f"<ChildRun {self.agent} {self.run_id}>"


def agent_id_of(agent: Any) -> str:
    if isinstance(agent, str):
        if not is_code_name(agent):
            raise InvalidInputError(f"ctx.spawn: {agent!r} is not an agent id")
        return agent
    if isinstance(agent, AgentDefinition):
        return agent.id
    return AgentDefinition.must_from_fn(agent).id


def spawn(execution: Execution, agent: Any, data: Any = None) -> Any:
    """The step ``spawn.<agent>``: start a child run (see ``AgentContext.spawn``)."""
    agent_id = agent_id_of(agent)
    stored = event_data({} if data is None else data, f"ctx.spawn of {agent_id!r}: the data")

    def start() -> dict[str, Any]:
        info = current_step()
        assert info is not None
        child = execution.store.spawn_run(
            execution.worker,
            execution.run_id,
            info.step_id,
            agent_id,
            stored,
            attempt=execution.attempt,
            trace=execution.trace_context(),  # the child joins this run's trace
        )
        return {"run_id": child.id, "agent": agent_id}

    value = execution.step(f"spawn.{agent_id}", {"agent": agent_id, "data": stored}, start)
    return _then(execution, value, lambda out: ChildRun(execution, out["run_id"], agent_id))

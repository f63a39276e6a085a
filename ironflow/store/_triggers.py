"""Matching event names against agents' trigger patterns."""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ironflow._pure._filters import compile_filter
from ironflow._pure._limits import MAX_NAME_BYTES, utf8_size
from ironflow.errors import IronflowError

if TYPE_CHECKING:
    from ironflow.store._records import AgentSpec

__all__ = [
    "INVOKE_PREFIX",
    "invoke_event",
    "starts",
    "trigger_matches",
    "validate_trigger",
    "why_no_run",
]

#: ``agent.invoke.<agent id>`` starts a run of that agent alone, whatever its triggers
#: (``ironflow invoke``): one reserved name per agent, like ``agent.approve.<name>``.
INVOKE_PREFIX = "agent.invoke."


def invoke_event(agent_id: str) -> str:
    """The event that starts a run of ``agent_id`` and of no other agent."""
    return INVOKE_PREFIX + agent_id


def starts(agent_id: str, triggers: tuple[str, ...] | list[str], name: str) -> bool:
    """Whether an event ``name`` starts a run of this agent: a trigger, or its invoke event."""
    if name.startswith(INVOKE_PREFIX):
        return name == INVOKE_PREFIX + agent_id
    return any(trigger_matches(t, name) for t in triggers)


def why_no_run(name: str, data: Any, event_id: str, agents: Iterable[AgentSpec]) -> str:
    """Why the event ``name`` (with ``data``) started no run, judged by ``agents``, the
    agents registered now: none is triggered by it, or whose filter turned it down.

    The explanation the CLI prints after an emit and the dashboard shows beside an
    event: "no agent is triggered" would be wrong when an agent's filter said no.
    """
    agents = list(agents)
    triggered = [a for a in agents if starts(a.id, a.triggers, name)]
    if not triggered:
        return f"no agent is triggered by {name!r}" + _known_triggers(name, agents)
    reasons = []
    for spec in triggered:
        flow = spec.flow
        if flow is not None and flow.filter is not None:
            try:
                admitted = compile_filter(flow.filter).matches_data(name, data, event_id)
            except IronflowError:
                admitted = True  # a filter that does not parse cannot have said no
            if not admitted:
                reasons.append(f"the filter of agent {spec.id!r} ({flow.filter}) did not match")
                continue
        reasons.append(f"agent {spec.id!r} was registered after this event, or its runs pruned")
    return "; ".join(reasons)


def _known_triggers(name: str, agents: list[AgentSpec]) -> str:
    """What the registered agents do listen for, the likeliest typo first."""
    import difflib

    if not agents:
        return "; no agent is registered in this store yet"
    by_trigger: dict[str, list[str]] = {}
    for a in agents:
        for t in a.triggers:
            by_trigger.setdefault(t, []).append(a.id)
    close = difflib.get_close_matches(name, list(by_trigger), n=1, cutoff=0.75)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    listed = [f"{t} ({', '.join(ids)})" for t, ids in sorted(by_trigger.items())]
    more = f", and {len(listed) - 10} more" if len(listed) > 10 else ""
    if not listed:
        return hint
    return f"{hint}; the registered agents listen for: {', '.join(listed[:10])}{more}"


def validate_trigger(pattern: str) -> str | None:
    """Return why ``pattern`` is not a valid trigger, or None if it is.

    A trigger is an event name of dot-separated tokens; ``*`` stands for exactly one
    token and a final ``>`` for one or more (``order.*``, ``order.>``), of at most
    ``MAX_NAME_BYTES`` bytes.
    """
    size = utf8_size(pattern)
    if size is None or not 0 < size <= MAX_NAME_BYTES:
        return f"a trigger must be an event name of 1 to {MAX_NAME_BYTES} bytes"
    tokens = pattern.split(".")
    for i, token in enumerate(tokens):
        if not token:
            return f"trigger {pattern!r} has an empty part between dots"
        if token == ">" and i != len(tokens) - 1:
            return f"trigger {pattern!r}: '>' may only be the last part"
        if ("*" in token or ">" in token) and token not in ("*", ">"):
            return f"trigger {pattern!r}: '*' and '>' must stand alone between dots"
    return None


@functools.lru_cache(maxsize=4096)
def trigger_matches(pattern: str, name: str) -> bool:
    """Whether the event ``name`` fires a trigger ``pattern``."""
    if "*" not in pattern and ">" not in pattern:
        return pattern == name
    want = pattern.split(".")
    got = name.split(".")
    for i, token in enumerate(want):
        if token == ">":
            return len(got) > i
        if i >= len(got) or (token != "*" and token != got[i]):
            return False
    return len(got) == len(want)

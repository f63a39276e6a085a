"""Matching event names against agents' trigger patterns."""

from __future__ import annotations

import functools

__all__ = ["INVOKE_PREFIX", "invoke_event", "starts", "trigger_matches", "validate_trigger"]

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


def validate_trigger(pattern: str) -> str | None:
    """Return why ``pattern`` is not a valid trigger, or None if it is.

    A trigger is an event name of dot-separated tokens; ``*`` stands for exactly one
    token and a final ``>`` for one or more (``order.*``, ``order.>``).
    """
    if not isinstance(pattern, str) or not pattern:
        return "a trigger must be a non-empty event name"
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

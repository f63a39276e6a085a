"""What the store keeps of an agent's flow control, and the key paths it reads.

Defined in the store layer because the store enforces them: it evaluates filters and
cancel-on matches at emit, holds concurrency slots at lease, debounces bursts and
fires cron ticks. ``@agent`` validates the user's options into these records.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs
import orjson

__all__ = [
    "CancelOn",
    "ConcurrencyLimit",
    "CronTrigger",
    "Debounce",
    "FlowSpec",
    "Rerun",
    "key_of",
    "key_text",
]


@attrs.frozen
class ConcurrencyLimit:
    """At most ``limit`` runs at once per value of ``key`` (all runs share one slot
    set when ``key`` is None)."""

    limit: int
    key: str | None = None


@attrs.frozen
class Debounce:
    """A burst of events (per ``key`` value) starts one run, with the last event,
    ``period`` seconds after the burst goes quiet, or ``max_wait`` after it began."""

    period: float
    key: str | None = None
    max_wait: float | None = None


@attrs.frozen
class CancelOn:
    """An event named ``event`` cancels the agent's unfinished runs whose trigger event
    has the same value at ``match`` as it has (every run, when ``match`` is None)."""

    event: str
    match: str | None = None


@attrs.frozen
class CronTrigger:
    """Fire on a schedule: one run per tick, even with several workers; after
    downtime one run for the missed ticks, or one per tick with ``catch_up``."""

    cron: str
    timezone: str = "UTC"
    catch_up: bool = False


@attrs.frozen
class FlowSpec:
    """An agent's flow control as registered with the store (all optional)."""

    filter: str | None = None
    concurrency: ConcurrencyLimit | None = None
    debounce: Debounce | None = None
    cancel_on: tuple[CancelOn, ...] = ()
    crons: tuple[CronTrigger, ...] = ()
    version: str | None = None


@attrs.frozen
class Rerun:
    """One ``run resume --from-step``: which step it restarted from, and what the run
    had been until then."""

    from_step: str
    position: int
    at: float
    previous_status: str
    previous_attempt: int


def key_of(path: str | None, data: Any) -> Any:
    """The value at ``path`` (``data.customer.id``) in an event's data, or None."""
    if path is None:
        return None
    parts = path.split(".")
    if parts[:1] == ["event"]:
        parts = parts[1:]
    if parts[:1] == ["data"]:
        parts = parts[1:]
    value = data
    for part in parts:
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def key_text(path: str | None, data: Any) -> str:
    """The key value as canonical JSON text, so ``1`` and ``"1"`` stay two keys."""
    try:
        return orjson.dumps(key_of(path, data), option=orjson.OPT_SORT_KEYS).decode()
    except TypeError:
        return "null"

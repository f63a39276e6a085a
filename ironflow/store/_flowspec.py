"""What the store keeps of an agent's flow control, the rules it must obey, and the
key paths it reads.

Defined in the store layer because the store enforces them: it evaluates filters and
cancel-on matches at emit, holds concurrency slots at lease, debounces bursts and
fires cron ticks. ``@agent`` parses the user's options into these records and checks
them with the same ``*_problem`` functions the store runs when an agent is
registered, so a spec the decorator would refuse is refused by the store too, however
it arrives (a worker, the HTTP API, another SDK).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import attrs
import orjson

from ironflow._pure._cron import parse_cron
from ironflow._pure._filters import compile_filter
from ironflow._pure._limits import MAX_NAME_BYTES, is_code_name
from ironflow.errors import DefinitionError, FilterError
from ironflow.store._triggers import validate_trigger

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ironflow.store._records import AgentSpec

__all__ = [
    "CancelOn",
    "ConcurrencyLimit",
    "CronTrigger",
    "Debounce",
    "FlowSpec",
    "Rerun",
    "agent_problem",
    "cancel_on_problem",
    "concurrency_problem",
    "cron_problem",
    "debounce_problem",
    "filter_problem",
    "flow_problem",
    "key_of",
    "key_path_problem",
    "key_text",
]

#: A key path into the event: ``data.customerId``, ``data.order.id`` (the ``data.``
#: prefix may be left out).
_KEY = re.compile(r"^(?:event\.)?(?:data\.)?[A-Za-z_][A-Za-z0-9_\-]*(?:\.[A-Za-z0-9_\-]+)*$")


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
    has the same value at ``match`` as it has (every run, when ``match`` is None). A
    missing or null value matches nothing, on either side."""

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


# -- the rules a spec must obey: each returns what is wrong, or None ----------------------


def key_path_problem(option: str, path: Any) -> str | None:
    if path is None:
        return None
    if not isinstance(path, str) or not _KEY.match(path):
        return (
            f"{option} key {path!r} is not a path into the event; write it like 'data.customerId'"
        )
    return None


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def concurrency_problem(limit: ConcurrencyLimit) -> str | None:
    n = limit.limit
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        return f"concurrency limit must be a whole number from 1, not {n!r}"
    return key_path_problem("concurrency", limit.key)


def debounce_problem(debounce: Debounce) -> str | None:
    period, max_wait = debounce.period, debounce.max_wait
    if not _number(period) or period <= 0:
        return f"debounce period must be more than 0 seconds, not {period!r}"
    if max_wait is not None and not _number(max_wait):
        return f"debounce max_wait must be a number of seconds, not {max_wait!r}"
    if max_wait is not None and max_wait < period:
        return (
            f"debounce max_wait ({max_wait:g}s) is shorter than its period ({period:g}s); "
            "make it at least the period"
        )
    return key_path_problem("debounce", debounce.key)


def cancel_on_problem(cancel: CancelOn) -> str | None:
    problem = validate_trigger(cancel.event)
    if problem is not None:
        return f"cancel_on: {problem}"
    return key_path_problem("cancel_on", cancel.match)


def cron_problem(cron: CronTrigger) -> str | None:
    catch_up: Any = cron.catch_up
    timezone: Any = cron.timezone
    if not isinstance(catch_up, bool):
        return "catch_up must be True or False"
    if not isinstance(timezone, str):
        return f"cron timezone must be an IANA name such as 'UTC', not {timezone!r}"
    try:
        parse_cron(cron.cron, cron.timezone)
    except DefinitionError as exc:
        return str(exc)
    return None


def filter_problem(text: Any) -> str | None:
    if text is None:
        return None
    if not isinstance(text, str):
        return f"filter: a filter is a string, not {text!r}"
    try:
        compile_filter(text)
    except FilterError as exc:
        return f"filter: {exc}"
    return None


def flow_problem(flow: FlowSpec) -> str | None:
    """What is wrong with an agent's flow control (the first thing found), or None."""
    problems = [
        filter_problem(flow.filter),
        None if flow.concurrency is None else concurrency_problem(flow.concurrency),
        None if flow.debounce is None else debounce_problem(flow.debounce),
        *(cancel_on_problem(c) for c in flow.cancel_on),
        *(cron_problem(c) for c in flow.crons),
    ]
    version: Any = flow.version  # as stored or sent: not necessarily the declared type
    if version is not None and (not isinstance(version, str) or not version.strip()):
        problems.append(
            f"version must be a non-empty string like '2024-06-01' or 'v2', not {version!r}"
        )
    return next((p for p in problems if p is not None), None)


def agent_problem(spec: AgentSpec) -> str | None:
    """What is wrong with an agent spec as a store would keep it, or None.

    The same rules ``@agent`` applies at decoration, so a spec registered any other way
    (the HTTP API, another SDK, an old worker) cannot store what would break emits.
    """
    # As sent over HTTP or built by other code: not necessarily the declared types.
    given: Any = spec
    if not is_code_name(given.id, MAX_NAME_BYTES):
        return (
            f"the id {given.id!r} is not usable; use letters, digits, '.', '_' or '-', "
            f"starting with a letter or digit, at most {MAX_NAME_BYTES} bytes"
        )
    if not isinstance(given.triggers, tuple | list):
        return f"triggers must be a list of event names, not {given.triggers!r}"
    for trigger in given.triggers:
        problem = validate_trigger(trigger)
        if problem is not None:
            return f"triggers: {problem}"
    if not isinstance(given.description, str):
        return f"description must be a string, not {given.description!r}"
    if given.flow is None:
        return None
    if not isinstance(given.flow, FlowSpec):
        return f"flow must be a FlowSpec, not {given.flow!r}"
    return flow_problem(given.flow)

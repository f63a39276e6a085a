"""The flow-control options of ``@agent``, validated at decoration into frozen records.

``concurrency={"limit": N, "key": "data.customerId"}``, ``debounce={"period": "5s",
"key": ..., "max_wait": "1m"}``, ``cancel_on=[{"event": ..., "match": ...}]``,
``filter="..."`` and cron triggers ``{"cron": "0 9 * * *", "timezone": "UTC"}``. Each
is checked here, so a mistake surfaces as a :class:`~ironflow.errors.DefinitionError`
when the module is imported, not when the first event arrives.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from ironflow._pure._cron import parse_cron
from ironflow._pure._durations import parse_duration
from ironflow._pure._filters import compile_filter
from ironflow.errors import DefinitionError, FilterError, InvalidInputError
from ironflow.store._flowspec import (
    CancelOn,
    ConcurrencyLimit,
    CronTrigger,
    Debounce,
    key_of,
)
from ironflow.store._triggers import validate_trigger

__all__ = [
    "CancelOn",
    "ConcurrencyLimit",
    "CronTrigger",
    "Debounce",
    "cancel_on_option",
    "check_filter",
    "concurrency_option",
    "cron_trigger",
    "debounce_option",
    "key_of",
]

#: A key path into the event: ``data.customerId``, ``data.order.id`` (the ``data.``
#: prefix may be left out).
_KEY = re.compile(r"^(?:event\.)?(?:data\.)?[A-Za-z_][A-Za-z0-9_\-]*(?:\.[A-Za-z0-9_\-]+)*$")


def _where(agent_id: str) -> str:
    return f"@agent(id={agent_id!r})"


def _unknown(agent_id: str, option: str, given: Mapping[str, Any], known: set[str]) -> None:
    extra = sorted(set(given) - known)
    if extra:
        raise DefinitionError(
            f"{_where(agent_id)}: {option} has unknown key(s) {extra}; it takes {sorted(known)}"
        )


def _key(agent_id: str, option: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not _KEY.match(value):
        raise DefinitionError(
            f"{_where(agent_id)}: {option} key {value!r} is not a path into the event; "
            "write it like 'data.customerId'"
        )
    return value


def _seconds(agent_id: str, option: str, value: Any) -> float:
    try:
        return parse_duration(value, f"{_where(agent_id)}: {option}")
    except InvalidInputError as exc:
        raise DefinitionError(str(exc)) from None


def concurrency_option(agent_id: str, value: Any) -> ConcurrencyLimit | None:
    """``concurrency=N`` or ``{"limit": N, "key": "data.x"}``."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = {"limit": value}
    if not isinstance(value, Mapping):
        raise DefinitionError(
            f"{_where(agent_id)}: concurrency must be a number or "
            f'{{"limit": N, "key": "data.field"}}, not {value!r}'
        )
    _unknown(agent_id, "concurrency", value, {"limit", "key"})
    limit = value.get("limit")
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise DefinitionError(
            f"{_where(agent_id)}: concurrency limit must be a whole number from 1, not {limit!r}"
        )
    return ConcurrencyLimit(limit=limit, key=_key(agent_id, "concurrency", value.get("key")))


def debounce_option(agent_id: str, value: Any) -> Debounce | None:
    """``debounce={"period": "5s", "key": "data.x", "max_wait": "1m"}``."""
    if value is None:
        return None
    if not isinstance(value, Mapping) or "period" not in value:
        raise DefinitionError(
            f"{_where(agent_id)}: debounce must be "
            f'{{"period": "5s", "key": "data.field", "max_wait": "1m"}}, not {value!r}'
        )
    _unknown(agent_id, "debounce", value, {"period", "key", "max_wait"})
    period = _seconds(agent_id, "debounce period", value["period"])
    if period <= 0:
        raise DefinitionError(f"{_where(agent_id)}: debounce period must be more than 0")
    max_wait = value.get("max_wait")
    limit = None if max_wait is None else _seconds(agent_id, "debounce max_wait", max_wait)
    if limit is not None and limit < period:
        raise DefinitionError(
            f"{_where(agent_id)}: debounce max_wait ({limit:g}s) is shorter than its "
            f"period ({period:g}s); make it at least the period"
        )
    return Debounce(period=period, key=_key(agent_id, "debounce", value.get("key")), max_wait=limit)


def cancel_on_option(agent_id: str, value: Any) -> tuple[CancelOn, ...]:
    """``cancel_on=[{"event": "order.cancelled", "match": "data.orderId"}]``."""
    if value is None:
        return ()
    if isinstance(value, Mapping | str):
        value = [value]
    if not isinstance(value, Sequence):
        raise DefinitionError(
            f"{_where(agent_id)}: cancel_on must be a list of "
            f'{{"event": "name", "match": "data.field"}}, not {value!r}'
        )
    out: list[CancelOn] = []
    for item in value:
        if isinstance(item, str):
            item = {"event": item}
        if not isinstance(item, Mapping):
            raise DefinitionError(
                f"{_where(agent_id)}: each cancel_on entry is "
                f'{{"event": "name", "match": "data.field"}}, not {item!r}'
            )
        _unknown(agent_id, "cancel_on", item, {"event", "match"})
        event = item.get("event")
        problem = validate_trigger(event)  # type: ignore[arg-type]
        if problem is not None:
            raise DefinitionError(f"{_where(agent_id)}: cancel_on: {problem}")
        out.append(CancelOn(event=event, match=_key(agent_id, "cancel_on", item.get("match"))))  # type: ignore[arg-type]
    return tuple(out)


def cron_trigger(agent_id: str, value: Mapping[str, Any]) -> CronTrigger:
    """A trigger ``{"cron": "0 9 * * *", "timezone": "UTC", "catch_up": False}``."""
    _unknown(agent_id, "a cron trigger", value, {"cron", "timezone", "catch_up"})
    timezone = value.get("timezone", "UTC")
    catch_up = value.get("catch_up", False)
    if not isinstance(catch_up, bool):
        raise DefinitionError(f"{_where(agent_id)}: catch_up must be True or False")
    try:
        parse_cron(value["cron"], timezone)
    except DefinitionError as exc:
        raise DefinitionError(f"{_where(agent_id)}: {exc}") from None
    return CronTrigger(cron=value["cron"], timezone=timezone, catch_up=catch_up)


def check_filter(agent_id: str, value: Any) -> str | None:
    """The filter's text, once it parses."""
    if value is None:
        return None
    try:
        compile_filter(value)
    except FilterError as exc:
        raise DefinitionError(f"{_where(agent_id)}: filter: {exc}") from exc
    return str(value)

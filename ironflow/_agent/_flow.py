"""The flow-control options of ``@agent``, validated at decoration into frozen records.

``concurrency={"limit": N, "key": "data.customerId"}``, ``debounce={"period": "5s",
"key": ..., "max_wait": "1m"}``, ``cancel_on=[{"event": ..., "match": ...}]``,
``filter="..."`` and cron triggers ``{"cron": "0 9 * * *", "timezone": "UTC"}``. Each
is checked here, so a mistake surfaces as a :class:`~ironflow.errors.DefinitionError`
when the module is imported, not when the first event arrives.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ironflow._pure._durations import parse_duration
from ironflow.errors import DefinitionError, InvalidInputError
from ironflow.store._flowspec import (
    CancelOn,
    ConcurrencyLimit,
    CronTrigger,
    Debounce,
    cancel_on_problem,
    concurrency_problem,
    cron_problem,
    debounce_problem,
    filter_problem,
    key_of,
    key_path_problem,
)

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

def _where(agent_id: str) -> str:
    return f"@agent(id={agent_id!r})"


def _unknown(agent_id: str, option: str, given: Mapping[str, Any], known: set[str]) -> None:
    extra = sorted(set(given) - known)
    if extra:
        raise DefinitionError(
            f"{_where(agent_id)}: {option} has unknown key(s) {extra}; it takes {sorted(known)}"
        )


def _checked(agent_id: str, problem: str | None) -> None:
    """The store's own rule for a spec (see store/_flowspec.py), as a DefinitionError."""
    if problem is not None:
        raise DefinitionError(f"{_where(agent_id)}: {problem}")


def _key(agent_id: str, option: str, value: Any) -> str | None:
    _checked(agent_id, key_path_problem(option, value))
    return value  # type: ignore[no-any-return]


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
    limit = ConcurrencyLimit(limit=value.get("limit"), key=value.get("key"))  # type: ignore[arg-type]
    _checked(agent_id, concurrency_problem(limit))
    return limit


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
    max_wait = value.get("max_wait")
    limit = None if max_wait is None else _seconds(agent_id, "debounce max_wait", max_wait)
    debounce = Debounce(period=period, key=value.get("key"), max_wait=limit)
    _checked(agent_id, debounce_problem(debounce))
    return debounce


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
        cancel = CancelOn(event=item.get("event"), match=item.get("match"))  # type: ignore[arg-type]
        _checked(agent_id, cancel_on_problem(cancel))
        out.append(cancel)
    return tuple(out)


def cron_trigger(agent_id: str, value: Mapping[str, Any]) -> CronTrigger:
    """A trigger ``{"cron": "0 9 * * *", "timezone": "UTC", "catch_up": False}``."""
    _unknown(agent_id, "a cron trigger", value, {"cron", "timezone", "catch_up"})
    cron = CronTrigger(
        cron=value["cron"],
        timezone=value.get("timezone", "UTC"),
        catch_up=value.get("catch_up", False),
    )
    _checked(agent_id, cron_problem(cron))
    return cron


def check_filter(agent_id: str, value: Any) -> str | None:
    """The filter's text, once it parses."""
    _checked(agent_id, filter_problem(value))
    return None if value is None else str(value)

"""@agent's flow-control options are checked at decoration; cron schedules find their ticks."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from ironflow import agent
from ironflow._agent._dsl import AgentDefinition
from ironflow._agent._flow import CancelOn, ConcurrencyLimit, CronTrigger, Debounce, key_of
from ironflow._pure._cron import parse_cron
from ironflow.errors import DefinitionError


def _define(**options: Any) -> AgentDefinition:
    options.setdefault("triggers", ["order.created"])

    @agent(id="flow", **options)
    def handler(ctx: Any) -> None:
        return None

    return AgentDefinition.must_from_fn(handler)


def test_valid_options_become_frozen_records() -> None:
    """Each option is parsed into its record, durations in seconds, crons apart from events."""
    defn = _define(
        triggers=["order.*", {"cron": "0 9 * * 1-5", "timezone": "Europe/Paris"}],
        filter='data.tier == "gold"',
        concurrency={"limit": 2, "key": "data.customerId"},
        debounce={"period": "5s", "key": "data.customerId", "max_wait": "1m"},
        cancel_on=[{"event": "order.cancelled", "match": "data.orderId"}],
        version="v2",
    )
    assert defn.triggers == ("order.*",)
    assert defn.crons == (CronTrigger("0 9 * * 1-5", "Europe/Paris"),)
    assert defn.filter == 'data.tier == "gold"'
    assert defn.concurrency == ConcurrencyLimit(2, "data.customerId")
    assert defn.debounce == Debounce(5.0, "data.customerId", 60.0)
    assert defn.cancel_on == (CancelOn("order.cancelled", "data.orderId"),)
    assert defn.version == "v2"
    assert _define(concurrency=3).concurrency == ConcurrencyLimit(3, None)


@pytest.mark.parametrize(
    ("options", "words"),
    [
        (
            {"filter": "data.x =="},
            "filter: expected a value, found the end of the filter at column 10",
        ),
        ({"concurrency": 0}, "concurrency limit must be a whole number from 1"),
        ({"concurrency": {"limit": 1, "keys": "x"}}, "unknown key(s) ['keys']"),
        ({"concurrency": {"limit": 1, "key": "data x"}}, "not a path into the event"),
        ({"debounce": {"key": "data.x"}}, "debounce must be"),
        ({"debounce": {"period": "soon"}}, "debounce period"),
        ({"debounce": {"period": "1m", "max_wait": "5s"}}, "shorter than its period"),
        ({"cancel_on": [{"event": "a..b"}]}, "empty part"),
        ({"triggers": [{"cron": "0 9 * *"}]}, "it needs five"),
        ({"triggers": [{"cron": "61 * * * *"}]}, "the minute field '61'"),
        ({"triggers": [{"cron": "0 9 * * *", "timezone": "Mars/Olympus"}]}, "unknown time zone"),
        ({"version": ""}, "version must be a non-empty string"),
    ],
)
def test_bad_options_fail_at_decoration_saying_what_is_wrong(
    options: dict[str, Any], words: str
) -> None:
    """A mistake is a DefinitionError when the module is imported, naming the option."""
    with pytest.raises(DefinitionError) as info:
        _define(**options)
    assert words in str(info.value)


def test_key_paths_read_the_event_data() -> None:
    """A key path may start with data. or event.data.; a missing field is None."""
    data = {"order": {"id": 7}, "customerId": "c"}
    assert key_of("data.order.id", data) == 7
    assert key_of("event.data.customerId", data) == "c"
    assert key_of("customerId", data) == "c"
    assert key_of("data.order.missing.deeper", data) is None


def _utc(*args: int) -> float:
    return dt.datetime(*args, tzinfo=dt.UTC).timestamp()


def test_cron_ticks_in_their_time_zone() -> None:
    """Weekday 09:00 in Paris is 08:00 UTC in winter and 07:00 UTC after the clocks change."""
    schedule = parse_cron("0 9 * * mon-fri", "Europe/Paris")
    friday_noon = _utc(2026, 3, 27, 12)
    assert schedule.next_after(friday_noon) == _utc(2026, 3, 30, 7)
    assert schedule.latest_at(friday_noon, not_before=friday_noon - 5 * 86400) == _utc(
        2026, 3, 27, 8
    )


def test_cron_steps_ranges_lists_and_either_day_rule() -> None:
    """*/15 gives four ticks an hour; day-of-month and day-of-week restricted means either."""
    every_15 = parse_cron("*/15 * * * *")
    start = _utc(2026, 1, 1, 0)
    assert every_15.ticks_between(start, start + 3600, limit=10) == [
        start + 900 * k for k in (1, 2, 3, 4)
    ]
    first_or_sunday = parse_cron("0 0 1 * sun")
    ticks = first_or_sunday.ticks_between(_utc(2026, 1, 31), _utc(2026, 2, 9), limit=10)
    # Feb 1 2026 is a Sunday and the 1st; Feb 8 is a Sunday.
    assert ticks == [_utc(2026, 2, 1), _utc(2026, 2, 8)]
    assert parse_cron("30 6,18 * jan-mar 7").hours == frozenset({6, 18})

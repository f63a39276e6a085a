"""Cron schedules: five fields, minute to day of week, in a named time zone.

``"0 9 * * 1-5"`` is 09:00 on weekdays. Each field is ``*``, a number, a range
``a-b``, a step ``*/n`` or ``a-b/n``, or a comma list of those; month and day-of-week
accept names (``jan``, ``mon``), and day of week 7 is Sunday like 0. As in classic
cron, when both day of month and day of week are restricted, a day matching either
fires. Times are wall-clock times in the schedule's zone; a tick a daylight-saving
jump skips does not fire that day, and one the jump repeats fires once.
"""

from __future__ import annotations

import datetime as _dt
import functools
import zoneinfo

import attrs

from ironflow.errors import DefinitionError

__all__ = ["CronSchedule", "parse_cron"]

_MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
_DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
_FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day of month", 1, 31, {}),
    ("month", 1, 12, {name: i + 1 for i, name in enumerate(_MONTHS)}),
    ("day of week", 0, 7, {name: i for i, name in enumerate(_DAYS)}),
)
#: No schedule goes longer than this without a tick (Feb 29 on a Monday, say, is rarer).
_HORIZON_DAYS = 366 * 30


@attrs.frozen
class CronSchedule:
    """A parsed schedule. :meth:`next_after` and :meth:`latest_at` find its ticks."""

    expression: str
    timezone: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 is Sunday
    any_day: bool
    any_weekday: bool

    @property
    def zone(self) -> _dt.tzinfo:
        return _zone(self.timezone)

    def _day_matches(self, day: _dt.date) -> bool:
        if day.month not in self.months:
            return False
        in_month = day.day in self.days
        in_week = (day.isoweekday() % 7) in self.weekdays
        if self.any_day or self.any_weekday:
            return in_month and in_week
        return in_month or in_week

    def _ticks_on(self, day: _dt.date) -> list[float]:
        """The day's ticks as Unix seconds, in order (none if the day does not match)."""
        if not self._day_matches(day):
            return []
        zone = self.zone
        out: list[float] = []
        for hour in sorted(self.hours):
            for minute in sorted(self.minutes):
                wall = _dt.datetime(day.year, day.month, day.day, hour, minute, tzinfo=zone)
                # A wall time the zone skips does not round-trip: it does not exist.
                back = wall.astimezone(_dt.UTC).astimezone(zone)
                if (back.hour, back.minute) != (hour, minute):
                    continue
                out.append(wall.replace(fold=0).timestamp())
        return out

    def next_after(self, ts: float) -> float | None:
        """The first tick strictly after Unix time ``ts``, or None if none comes."""
        day = _dt.datetime.fromtimestamp(ts, self.zone).date()
        for _ in range(_HORIZON_DAYS):
            for tick in self._ticks_on(day):
                if tick > ts:
                    return tick
            day += _dt.timedelta(days=1)
        return None

    def latest_at(self, ts: float, *, not_before: float) -> float | None:
        """The last tick at or before ``ts`` and after ``not_before``, or None."""
        day = _dt.datetime.fromtimestamp(ts, self.zone).date()
        stop = _dt.datetime.fromtimestamp(not_before, self.zone).date()
        while day >= stop:
            for tick in reversed(self._ticks_on(day)):
                if not_before < tick <= ts:
                    return tick
            day -= _dt.timedelta(days=1)
        return None

    def ticks_between(self, after: float, until: float, *, limit: int) -> list[float]:
        """Up to ``limit`` ticks in ``(after, until]``, oldest first."""
        out: list[float] = []
        tick = self.next_after(after)
        while tick is not None and tick <= until and len(out) < limit:
            out.append(tick)
            tick = self.next_after(tick)
        return out


@functools.lru_cache(maxsize=64)
def _zone(name: str) -> _dt.tzinfo:
    if name.upper() == "UTC":
        return _dt.UTC
    return zoneinfo.ZoneInfo(name)


def _field(text: str, name: str, low: int, high: int, names: dict[str, int]) -> frozenset[int]:
    def number(raw: str) -> int:
        raw = raw.lower()
        if raw in names:
            return names[raw]
        if not raw.isdigit():
            raise ValueError(f"{raw!r} is not a number")
        value = int(raw)
        if not low <= value <= high:
            raise ValueError(f"{value} is outside {low}-{high}")
        return value

    values: set[int] = set()
    for part in text.split(","):
        step = 1
        if "/" in part:
            part, raw_step = part.split("/", 1)
            if not raw_step.isdigit() or int(raw_step) < 1:
                raise ValueError(f"the step {raw_step!r} must be a positive number")
            step = int(raw_step)
        if part == "*":
            start, end = low, high
        elif "-" in part:
            a, b = part.split("-", 1)
            start, end = number(a), number(b)
            if start > end:
                raise ValueError(f"the range {part!r} runs backwards")
        else:
            start = number(part)
            end = high if step > 1 else start
        values.update(range(start, end + 1, step))
    return frozenset(values)


def parse_cron(expression: str, timezone: str = "UTC") -> CronSchedule:
    """Parse a five-field cron expression; raise DefinitionError saying what is wrong."""
    if not isinstance(expression, str):
        raise DefinitionError(f"a cron schedule is a string like '0 9 * * *', not {expression!r}")
    parts = expression.split()
    if len(parts) != 5:
        raise DefinitionError(
            f"cron {expression!r} has {len(parts)} field(s); it needs five: "
            "minute hour day-of-month month day-of-week (as in '0 9 * * 1-5')"
        )
    try:
        _zone(timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, TypeError):
        raise DefinitionError(
            f"cron {expression!r}: unknown time zone {timezone!r}; use an IANA name "
            "such as 'UTC' or 'Europe/Paris'"
        ) from None
    sets: list[frozenset[int]] = []
    for text, (name, low, high, names) in zip(parts, _FIELDS, strict=True):
        try:
            sets.append(_field(text, name, low, high, names))
        except ValueError as exc:
            raise DefinitionError(
                f"cron {expression!r}: the {name} field {text!r}: {exc}"
            ) from None
    weekdays = frozenset(d % 7 for d in sets[4])
    return CronSchedule(
        expression=expression,
        timezone=timezone,
        minutes=sets[0],
        hours=sets[1],
        days=sets[2],
        months=sets[3],
        weekdays=weekdays,
        any_day=parts[2] == "*",
        any_weekday=parts[4] == "*",
    )

"""Durations as people write them: ``30``, ``2.5``, ``"500ms"``, ``"5m"``, ``"1h30m"``, ``"7d"``."""

from __future__ import annotations

import datetime as _dt
import math
import re
from typing import Any

from ironflow._pure._limits import MAX_DURATION
from ironflow.errors import InvalidInputError

__all__ = ["MAX_DURATION", "Duration", "check_ahead", "parse_duration"]

#: What every ``duration``, ``ttl``, ``timeout`` and ``backoff`` parameter accepts.
Duration = int | float | str | _dt.timedelta

# MAX_DURATION (from _limits) is the longest duration accepted anywhere (a sleep, a
# timeout, a ttl, a backoff) and how far ahead a ``sleep_until`` may be.
_LIMIT_TEXT = "100 years"

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_WHOLE = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h|d|w))+")


def parse_duration(value: Any, what: str = "duration") -> float:
    """Seconds in ``value``: a number of seconds, a ``timedelta``, or a string.

    A string is a number of seconds (``"30"``) or one or more parts, each a number and
    a unit: ``ms``, ``s``, ``m``, ``h``, ``d``, ``w`` (``"500ms"``, ``"1h30m"``, ``"7d"``).
    Raises :class:`~ironflow.errors.InvalidInputError` naming ``what`` for anything
    else, a negative duration, one that is not finite, or one longer than
    :data:`MAX_DURATION` (100 years).
    """
    seconds: float
    if isinstance(value, bool):
        seconds = math.nan
    elif isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, _dt.timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        try:
            seconds = float(text)
        except ValueError:
            if _WHOLE.fullmatch(text):
                seconds = sum(float(n) * _UNITS[unit] for n, unit in _PART.findall(text))
            else:
                seconds = math.nan
    else:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds < 0:
        raise InvalidInputError(
            f"{what}: {value!r} is not a duration; give seconds as a number (30, 2.5) or a "
            "string like '500ms', '30s', '5m', '2h', '7d' or '1h30m' (0 or more)"
        )
    if seconds > MAX_DURATION:
        raise InvalidInputError(
            f"{what}: {value!r} is longer than {_LIMIT_TEXT} ({MAX_DURATION:.0f} seconds), "
            "the longest duration Ironflow accepts; give a shorter one"
        )
    return seconds


def check_ahead(seconds: float, what: str, given: Any) -> None:
    """Refuse a time ``seconds`` ahead of now if that is more than :data:`MAX_DURATION`.

    ``given`` is the time as the user gave it, shown in the error.
    """
    if seconds > MAX_DURATION:
        raise InvalidInputError(
            f"{what}: {given} is more than {_LIMIT_TEXT} ahead, the furthest Ironflow "
            "accepts; give an earlier time"
        )

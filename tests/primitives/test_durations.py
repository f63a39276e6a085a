"""Durations: numbers are seconds; strings carry units; everything else is refused clearly."""

from __future__ import annotations

import datetime as dt

import pytest

from ironflow._pure._durations import MAX_DURATION, parse_duration
from ironflow.errors import InvalidInputError


@pytest.mark.parametrize(
    ("given", "seconds"),
    [
        (0, 0.0),
        (30, 30.0),
        (2.5, 2.5),
        ("45", 45.0),
        ("500ms", 0.5),
        ("30s", 30.0),
        ("5m", 300.0),
        ("2h", 7200.0),
        ("7d", 604800.0),
        ("1w", 604800.0),
        ("1h30m", 5400.0),
        (" 1.5h ", 5400.0),
        (dt.timedelta(minutes=2), 120.0),
    ],
)
def test_parses_numbers_units_and_timedeltas(given: object, seconds: float) -> None:
    """Each accepted spelling gives the seconds it names."""
    assert parse_duration(given) == seconds


@pytest.mark.parametrize("bad", ["", "5 minutes", "m5", "-3s", -1, float("nan"), True, None, [1]])
def test_refuses_anything_else_naming_the_parameter(bad: object) -> None:
    """A bad duration raises InvalidInputError naming where it was given and the forms."""
    with pytest.raises(InvalidInputError, match=r"ctx\.sleep: .* is not a duration.*'500ms'"):
        parse_duration(bad, "ctx.sleep")


@pytest.mark.parametrize("given", [1e12, "36526d", dt.timedelta(days=36526), "5300w"])
def test_durations_past_a_hundred_years_are_refused_with_the_limit(given: object) -> None:
    """A duration longer than MAX_DURATION (100 years) is refused, naming the bound."""
    with pytest.raises(InvalidInputError, match=r"ctx\.sleep: .* is longer than 100 years"):
        parse_duration(given, "ctx.sleep")


def test_a_hundred_years_exactly_is_accepted() -> None:
    """The bound itself is a duration like any other."""
    assert parse_duration("36525d") == MAX_DURATION

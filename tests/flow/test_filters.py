"""Trigger filters: a small expression language over an event, parsed without eval."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ironflow._pure._filters import compile_filter
from ironflow.errors import FilterError

ORDER = {"customer": {"tier": "gold", "id": "c-1"}, "amount": 250, "tags": ["rush", "gift"]}


def matches(text: str, data: Any = ORDER, name: str = "order.created") -> bool:
    return compile_filter(text).matches_data(name, data, "evt-1")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('data.customer.tier == "gold" and data.amount > 100', True),
        ('data.customer.tier == "gold" and data.amount > 1000', False),
        ("data.amount >= 250 && data.amount <= 250", True),
        ('data.customer.tier != "gold" or data.amount < 10', False),
        ('not data.customer.tier == "silver"', True),
        ('!(data.customer.tier == "gold")', False),
        ('"rush" in data.tags', True),
        ('"slow" not in data.tags', True),
        ('"tier" in data.customer', True),
        ('"ol" in data.customer.tier', True),
        ("data.customer.tier in ['gold', 'platinum']", True),
        ("data.tags[1] == 'gift' and data.tags[-1] == 'gift'", True),
        ("data['customer']['id'] == 'c-1'", True),
        ('name == "order.created" and event.name == name and id == "evt-1"', True),
        ("event.data.amount == 250.0", True),
        ("data.missing == null and data.missing.deeper == null", True),
        ("data.missing > 0 or data.missing < 0", False),
        ('data.amount > "100"', False),  # no ordering across types
        ("data.amount == -250 or -1.5e2 < 0", True),
        ("true == 1", False),  # JSON: true is not 1
        ("data.tags == ['rush', 'gift']", True),
        ("data.customer", False),  # only `true` itself is true
        ("true", True),
    ],
)
def test_expressions_evaluate_against_the_event(text: str, expected: bool) -> None:
    """Comparisons, and/or/not, in, literals, dotted and indexed paths, as documented."""
    assert matches(text) is expected


@pytest.mark.parametrize(
    ("text", "column", "words"),
    [
        ("data.amount >", 14, "expected a value"),
        ("amount > 1", 1, "unknown name 'amount'"),
        ("(data.x == 1", 13, "expected ')'"),
        ("data.x = 1", 8, "'==' "),
        ("data.x == 'open", 11, "never closed"),
        ("1 < 2 < 3", 7, "do not chain"),
        ("data.x == 1 1", 13, "after a complete expression"),
        ("data.x @ 1", 8, "unexpected character '@'"),
        ("", 1, "empty"),
        ("data.", 6, "field name"),
        ("name.first == 1", 1, "has no fields"),
    ],
)
def test_errors_name_the_column_and_the_problem(text: str, column: int, words: str) -> None:
    """Every parse error is a FilterError whose message says where and what."""
    with pytest.raises(FilterError) as info:
        compile_filter(text)
    assert info.value.column == column
    assert words in str(info.value)
    assert f"column {column}" in str(info.value)


def test_deep_nesting_is_refused_not_a_stack_overflow() -> None:
    """A thousand parentheses or nots give a FilterError, never a RecursionError."""
    with pytest.raises(FilterError, match="deeper"):
        compile_filter("(" * 1000 + "true" + ")" * 1000)
    with pytest.raises(FilterError):
        compile_filter("not " * 1000 + "true")
    with pytest.raises(FilterError):
        compile_filter("[" * 2000)


_ALPHABET = st.sampled_from(
    [
        *'data.customer.tier=="gold"andor not in[]()!<>=&|,-\'0123456789eE_ \\x@',
        *("data", "name", " and ", " or ", " in ", "true", "null", "1e999", "9" * 40),
    ]
)


@given(st.text(max_size=80) | st.lists(_ALPHABET, max_size=30).map("".join))
def test_arbitrary_text_raises_nothing_but_filter_error(text: str) -> None:
    """Whatever the text, parsing raises FilterError or gives a filter that never raises."""
    try:
        f = compile_filter(text)
    except FilterError:
        return
    for data in (ORDER, None, [], {"customer": [1, {"x": None}]}, "s", 3):
        assert f.matches_data("n", data) in (True, False)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=10,
)


@given(_JSON, _JSON)
def test_evaluation_never_raises_on_any_json(data: Any, other: Any) -> None:
    """A valid filter over any JSON data returns a bool: type mismatches are just false."""
    for text in ("data == data", "data.a.b[0] < 3", "data in data.x", "'a' in data"):
        assert compile_filter(text).matches_data("n", data) in (True, False)
    assert compile_filter("data == data").matches_data("n", data)

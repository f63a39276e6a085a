"""The JSON codec: what can be stored, and how refusals name the value."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import uuid
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ironflow.errors import NotSerializableError
from ironflow.store._codec import MAX_DEPTH, dumps, loads, structure, to_json_value


@attrs.frozen
class Page:
    number: int
    text: str


@attrs.frozen
class Doc:
    title: str
    pages: list[Page]
    when: dt.datetime | None = None


@dataclasses.dataclass
class Point:
    x: float
    y: float


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4)
    ),
    max_leaves=20,
)


@given(json_values)
def test_json_values_round_trip(value: Any) -> None:
    """Any plain JSON value survives dumps/loads unchanged."""
    assert loads(dumps(value)) == value


def test_attrs_class_round_trips_to_its_type() -> None:
    """An attrs value is stored as a dict and structured back into the same class."""
    doc = Doc("t", [Page(1, "a"), Page(2, "b")], dt.datetime(2026, 1, 2, tzinfo=dt.UTC))
    stored = loads(dumps(doc))
    assert stored["pages"][1] == {"number": 2, "text": "b"}
    assert structure(stored, Doc) == doc


def test_dataclass_and_uuid_round_trip() -> None:
    """Dataclasses and UUIDs are storable and come back typed."""
    assert structure(loads(dumps(Point(1.5, 2.0))), Point) == Point(1.5, 2.0)
    u = uuid.uuid4()
    assert structure(loads(dumps(u)), uuid.UUID) == u


@pytest.mark.parametrize(
    ("value", "path", "reason"),
    [
        ({"a": [1, math.nan]}, "value['a'][1]", "not a finite number"),
        ({"a": {"b": b"bytes"}}, "value['a']['b']", "bytes is not a JSON type"),
        ([{1, 2}], "value[0]", "set is not a JSON type"),
        ({1: "x"}, "value[1]", "dict keys must be str"),
        ({"f": float("inf")}, "value['f']", "not a finite number"),
        ({"ok": "é", "bad": ["\udc80"]}, "value['bad'][0]", "a lone surrogate"),
    ],
)
def test_unstorable_values_are_refused_with_their_path(value: Any, path: str, reason: str) -> None:
    """A value JSON cannot carry is refused, and the error names where it is."""
    with pytest.raises(NotSerializableError) as info:
        to_json_value(value)
    assert info.value.path == path
    assert reason in str(info.value)


def test_recursive_structure_is_refused_not_looped() -> None:
    """A structure that contains itself is refused at once."""
    loop: dict[str, Any] = {"a": 1}
    loop["self"] = loop
    with pytest.raises(NotSerializableError, match="contains itself"):
        to_json_value(loop)


def test_shared_but_not_recursive_values_are_fine() -> None:
    """The same list referenced twice is not a cycle."""
    shared = [1, 2]
    assert to_json_value({"a": shared, "b": shared}) == {"a": [1, 2], "b": [1, 2]}


def test_structure_mismatch_names_the_type() -> None:
    """A stored value that no longer fits the return annotation gives a clear error."""
    with pytest.raises(NotSerializableError, match="cannot be read back as Page"):
        structure({"nope": 1}, Page)


def test_integers_beyond_64_bits_are_refused_not_rounded() -> None:
    """A huge int would come back as a float; it is refused with a hint instead."""
    assert loads(dumps({"n": 2**63})) == {"n": 2**63}
    with pytest.raises(NotSerializableError, match="does not fit in 64 bits"):
        to_json_value({"n": 2**70})
    with pytest.raises(NotSerializableError, match="does not fit in 64 bits"):
        to_json_value([{"deep": -(2**64)}])


def test_str_subclasses_and_str_enums_are_stored_as_their_text() -> None:
    """A StrEnum member or str subclass, as a key or a value, is stored as plain text."""
    import enum

    class Color(enum.StrEnum):
        RED = "red"

    class Tag(str):
        pass

    value = {Color.RED: [Color.RED, Tag("t")], Tag("k"): {Tag("n"): 1}}
    assert loads(dumps(value)) == {"red": ["red", "t"], "k": {"n": 1}}


def _nested(levels: int, leaf: Any = 0) -> Any:
    value = leaf
    for i in range(levels):
        value = [value] if i % 2 else {"k": value}
    return value


def test_values_nest_at_most_max_nesting_levels_and_encode() -> None:
    """MAX_DEPTH levels of lists and dicts are stored (and encode); one more is refused
    with the path, before the encoder (which refuses about 255) could see them."""
    deepest = _nested(MAX_DEPTH)
    assert loads(dumps(deepest)) == deepest
    with pytest.raises(NotSerializableError) as info:
        to_json_value([deepest], "event 'x' data", "data")
    assert info.value.path.startswith("data[0][0]['k'][0]['k']")
    assert info.value.path.count("[") == MAX_DEPTH
    assert f"more than {MAX_DEPTH} levels deep" in str(info.value)


@attrs.frozen
class Link:
    next: Link | None


def test_objects_nested_past_the_stack_are_refused_as_too_deep() -> None:
    """An attrs chain too deep for cattrs' recursion is refused the same way, not a
    RecursionError."""
    chain: Link | None = None
    for _ in range(5000):
        chain = Link(chain)
    with pytest.raises(NotSerializableError, match="levels deep"):
        to_json_value({"chain": chain}, "step 's' output", "output")

"""Checking tool arguments against type hints."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any, Literal, Optional

import attrs
import pytest

from ironflow import ToolInputError, tool
from ironflow._pure._validate import Mismatch, check_value


@attrs.frozen
class Item:
    name: str


@dataclasses.dataclass
class Box:
    size: int


@pytest.mark.parametrize(
    ("value", "hint"),
    [
        ("a", str),
        (1, int),
        (1, float),
        (1.5, float),
        (None, Optional[int]),  # noqa: UP045 - the spelling users write
        (3, int | None),
        ("b", Literal["a", "b"]),
        ([1, 2], list[int]),
        ({"a": [1]}, dict[str, list[int]]),
        ((1, "x"), tuple[int, str]),
        (Item("x"), Item),
        (Box(3), Box),
        ("x", Annotated[str, "meta"]),
        (object(), Any),
    ],
)
def test_fitting_values_pass(value: Any, hint: Any) -> None:
    """Values that fit their hint pass without complaint."""
    check_value(value, hint, "arg")


@pytest.mark.parametrize(
    ("value", "hint", "path", "expected"),
    [
        (1, str, "arg", "str"),
        (True, int, "arg", "int"),
        ("1", int | None, "arg", "int or None"),
        ("c", Literal["a", "b"], "arg", "'a' or 'b'"),
        ([1, "2"], list[int], "arg[1]", "int"),
        ({"k": "v"}, dict[str, int], "arg['k']", "int"),
        ({"a": 1}, Item, "arg", "Item"),
    ],
)
def test_mismatches_name_the_path_and_the_type(
    value: Any, hint: Any, path: str, expected: str
) -> None:
    """A mismatch says where in the argument and what was expected."""
    with pytest.raises(Mismatch) as info:
        check_value(value, hint, "arg")
    assert info.value.path == path
    assert info.value.expected == expected


def test_pydantic_models_are_checked_when_installed() -> None:
    """A pydantic model hint accepts its instances and refuses dicts (no hard dependency)."""
    pydantic = pytest.importorskip("pydantic")

    class Model(pydantic.BaseModel):  # type: ignore[misc,name-defined]
        a: int

    check_value(Model(a=1), Model, "m")
    with pytest.raises(Mismatch):
        check_value({"a": 1}, Model, "m")


def test_tool_input_error_message_names_argument_and_expected() -> None:
    """ToolInputError carries the tool, the argument and the expectation."""

    @tool
    def ocr(image_url: str) -> str:
        return image_url

    defn = ocr.__ironflow_tool__  # type: ignore[attr-defined]
    with pytest.raises(ToolInputError) as info:
        defn.bind((), {"image_url": 42})
    assert info.value.tool == "ocr"
    assert info.value.argument == "image_url"
    assert "expected str, got int 42" in str(info.value)
    with pytest.raises(ToolInputError, match="missing a required argument"):
        defn.bind((), {})

"""JSON schemas for function calling, from @tool signatures, hints and descriptions."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import uuid
from typing import Annotated, Any, Literal, Optional, TypedDict

import attrs
import pydantic
import pytest

from ironflow import tool
from ironflow.errors import DefinitionError
from ironflow.llm import ToolSchema, json_schema, tool_schema


@pytest.mark.parametrize(
    ("hint", "schema"),
    [
        (str, {"type": "string"}),
        (int, {"type": "integer"}),
        (float, {"type": "number"}),
        (bool, {"type": "boolean"}),
        (None, {"type": "null"}),
        (Any, {}),
        (Optional[int], {"type": ["integer", "null"]}),  # noqa: UP045 (the spelling under test)
        (str | None, {"type": ["string", "null"]}),
        (int | str, {"type": ["integer", "string"]}),
        (Literal["a", "b"], {"type": "string", "enum": ["a", "b"]}),
        (Literal[1, "x"], {"enum": [1, "x"]}),
        (list[str], {"type": "array", "items": {"type": "string"}}),
        (list, {"type": "array"}),
        (tuple[int, ...], {"type": "array", "items": {"type": "integer"}}),
        (
            tuple[int, str],
            {
                "type": "array",
                "prefixItems": [{"type": "integer"}, {"type": "string"}],
                "minItems": 2,
                "maxItems": 2,
            },
        ),
        (set[int], {"type": "array", "items": {"type": "integer"}, "uniqueItems": True}),
        (dict[str, int], {"type": "object", "additionalProperties": {"type": "integer"}}),
        (dict[str, Any], {"type": "object"}),
        (dict, {"type": "object"}),
        (dt.datetime, {"type": "string", "format": "date-time"}),
        (uuid.UUID, {"type": "string", "format": "uuid"}),
        (Annotated[str, "a city name"], {"type": "string", "description": "a city name"}),
    ],
)
def test_type_hints_map_to_json_schema(hint: Any, schema: dict[str, Any]) -> None:
    """Each supported hint has the JSON schema a function-calling API expects."""
    assert json_schema(hint) == schema


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


@attrs.frozen
class Address:
    """Where to deliver."""

    city: str
    zip_code: str | None = None


@attrs.frozen
class Order:
    items: list[str]
    address: Address
    color: Color = Color.RED


@dataclasses.dataclass
class Point:
    x: float
    y: float = 0.0


class Movie(TypedDict):
    title: str
    year: int


class Person(pydantic.BaseModel):
    name: str
    age: int = 0


@attrs.frozen
class Node:
    value: int
    children: list[Node] = attrs.field(factory=list)


def test_attrs_classes_become_nested_objects_with_required_fields() -> None:
    """attrs fields are properties; those without defaults are required; docs describe."""
    assert json_schema(Order) == {
        "type": "object",
        "properties": {
            "items": {"type": "array", "items": {"type": "string"}},
            "address": {
                "type": "object",
                "properties": {
                    "city": {"type": "string"},
                    "zip_code": {"type": ["string", "null"]},
                },
                "required": ["city"],
                "additionalProperties": False,
                "description": "Where to deliver.",
            },
            "color": {"type": "string", "enum": ["red", "blue"]},
        },
        "required": ["items", "address"],
        "additionalProperties": False,
    }


def test_dataclasses_typeddicts_pydantic_and_recursive_types() -> None:
    """Other record types are objects too; a recursive type is described once, then open."""
    assert json_schema(Point) == {
        "type": "object",
        "properties": {"x": {"type": "number"}, "y": {"type": "number"}},
        "required": ["x"],
        "additionalProperties": False,
    }
    assert json_schema(Movie)["required"] == ["title", "year"]
    person = json_schema(Person)
    assert person["properties"]["name"]["type"] == "string" and person["required"] == ["name"]
    node = json_schema(Node)
    assert node["properties"]["children"] == {"type": "array", "items": {"type": "object"}}


@tool(description="Look up the weather")
def weather(
    city: Annotated[str, "the city"],
    unit: Literal["c", "f"] = "c",
    days: int | None = None,
    *extra: str,
    **options: bool,
) -> str:
    return city


@tool
def plain(order: Order, when: dt.date, tags: list[str] = []) -> None:  # noqa: B006
    """Place an order.

    Longer text.
    """


def test_tool_schema_uses_signature_defaults_and_description() -> None:
    """Required parameters, shown defaults, *args left out, **kwargs allows extra keys."""
    assert tool_schema(weather) == ToolSchema(
        name="weather",
        description="Look up the weather",
        parameters={
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "the city"},
                "unit": {"type": "string", "enum": ["c", "f"], "default": "c"},
                "days": {"type": ["integer", "null"], "default": None},
            },
            "required": ["city"],
            "additionalProperties": {"type": "boolean"},
        },
    )
    schema = tool_schema(plain)
    assert schema.description == "Place an order.\n\nLonger text."
    assert schema.parameters["required"] == ["order", "when"]
    assert schema.parameters["properties"]["when"] == {"type": "string", "format": "date"}
    assert schema.parameters["properties"]["tags"]["default"] == []
    assert schema.parameters["additionalProperties"] is False


def test_unsupported_types_and_non_tools_are_definition_errors() -> None:
    """A parameter type with no JSON schema names the tool, the parameter and the type."""

    @tool
    def takes_bytes(blob: bytes) -> None: ...

    @tool
    def int_keys(table: dict[int, str]) -> None: ...

    with pytest.raises(DefinitionError, match=r"tool 'takes_bytes': parameter 'blob'.*bytes"):
        tool_schema(takes_bytes)
    with pytest.raises(DefinitionError, match="'table'"):
        tool_schema(int_keys)
    with pytest.raises(DefinitionError, match="was it decorated with @tool"):
        tool_schema(print)

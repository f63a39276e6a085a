"""JSON schemas for function calling, from a ``@tool``'s signature, hints and description.

A parameter's description comes from ``Annotated[str, "what it is"]``; the tool's
description from ``@tool(description=...)`` or its docstring.
"""

from __future__ import annotations

import collections.abc
import contextlib
import dataclasses
import datetime as _dt
import enum
import inspect
import types
import typing
import uuid
from collections.abc import Callable
from typing import Any, Literal, Union

import attrs

from ironflow._agent._dsl import ToolDefinition
from ironflow.errors import DefinitionError, NotSerializableError
from ironflow.llm._types import ToolSchema
from ironflow.store._codec import to_json_value

__all__ = ["json_schema", "tool_schema"]

_NoneType = type(None)
_ARRAYS = (
    list,
    set,
    frozenset,
    collections.abc.Sequence,
    collections.abc.MutableSequence,
    collections.abc.Iterable,
    collections.abc.Collection,
    collections.abc.Set,
    collections.abc.MutableSet,
)
_OBJECTS = (dict, collections.abc.Mapping, collections.abc.MutableMapping)
_FORMATS: dict[Any, dict[str, Any]] = {
    _dt.datetime: {"type": "string", "format": "date-time"},
    _dt.date: {"type": "string", "format": "date"},
    _dt.time: {"type": "string", "format": "time"},
    uuid.UUID: {"type": "string", "format": "uuid"},
}


class _Unsupported(Exception):
    """Internal: ``hint`` has no JSON schema."""

    def __init__(self, hint: Any) -> None:
        self.hint = hint
        super().__init__(hint)


def tool_schema(tool: Callable[..., Any] | ToolDefinition) -> ToolSchema:
    """The function-calling schema of a ``@tool`` function (or its definition).

    Parameters become properties; those without a default are required; a default that
    is a JSON value is shown to the model. ``*args`` is left out (a model passes named
    arguments only); ``**kwargs`` allows extra properties, otherwise none are allowed.
    Raises :class:`~ironflow.errors.DefinitionError` naming a parameter whose type
    has no JSON schema.
    """
    defn = tool if isinstance(tool, ToolDefinition) else ToolDefinition.must_from_fn(tool)
    properties: dict[str, Any] = {}
    required: list[str] = []
    extra: Any = False
    for pname, param in defn.signature.parameters.items():
        hint = defn.hints.get(pname, Any)
        try:
            schema = json_schema(hint)
        except _Unsupported as bad:
            raise DefinitionError(
                f"tool {defn.name!r}: parameter {pname!r} has the type {bad.hint!r}, which has "
                "no JSON schema for function calling; use str, int, float, bool, None, list, "
                "dict, Literal, an Enum, or an attrs class, dataclass or pydantic model of them"
            ) from None
        if param.kind is inspect.Parameter.VAR_POSITIONAL:
            continue
        if param.kind is inspect.Parameter.VAR_KEYWORD:
            extra = schema or True
            continue
        if param.default is inspect.Parameter.empty:
            required.append(pname)
        else:
            # A default the model cannot be shown leaves the parameter simply optional.
            with contextlib.suppress(NotSerializableError):
                schema = {**schema, "default": to_json_value(param.default)}
        properties[pname] = schema
    parameters: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        parameters["required"] = required
    parameters["additionalProperties"] = extra
    return ToolSchema(name=defn.name, description=defn.description, parameters=parameters)


def json_schema(hint: Any) -> dict[str, Any]:
    """The JSON schema of one type hint (``{}`` for ``Any``).

    Understood: primitives, ``None``, ``Optional``/unions, ``Literal``, ``Enum``,
    ``list``/``set``/``tuple``/``Sequence``, ``dict``/``Mapping`` with str keys,
    ``TypedDict``, attrs classes, dataclasses, pydantic models, ``datetime``,
    ``date``, ``UUID`` and ``Annotated`` (a str in its metadata becomes the
    description). Anything else raises an internal error that :func:`tool_schema`
    turns into a :class:`~ironflow.errors.DefinitionError`.
    """
    return _schema(hint, frozenset())


def _schema(hint: Any, active: frozenset[Any]) -> dict[str, Any]:
    if hint is Any or hint is object or hint is inspect.Parameter.empty:
        return {}
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Annotated:
        schema = _schema(args[0], active)
        notes = [a for a in args[1:] if isinstance(a, str)]
        return {**schema, "description": " ".join(notes)} if notes else schema
    if hint is None or hint is _NoneType:
        return {"type": "null"}
    if origin is Literal:
        return _enum([a.value if isinstance(a, enum.Enum) else a for a in args])
    if origin in (Union, types.UnionType):
        return _union([_schema(a, active) for a in args])
    if origin is not None:
        return _generic(hint, origin, args, active)
    if not isinstance(hint, type):
        raise _Unsupported(hint)
    if hint is bool:
        return {"type": "boolean"}
    if hint is int:
        return {"type": "integer"}
    if hint is float:
        return {"type": "number"}
    if hint is str:
        return {"type": "string"}
    if hint in _FORMATS:
        return dict(_FORMATS[hint])
    if issubclass(hint, enum.Enum):
        return _enum([m.value for m in hint])
    if hint in (list, tuple, set, frozenset):
        return {"type": "array"}
    if hint is dict:
        return {"type": "object"}
    return _class(hint, active)


def _enum(values: list[Any]) -> dict[str, Any]:
    schema: dict[str, Any] = {"enum": values}
    kinds = {_json_type(v) for v in values}
    if len(kinds) == 1 and None not in kinds:
        schema = {"type": kinds.pop(), **schema}
    return schema


def _json_type(value: Any) -> str | None:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if value is None:
        return "null"
    return None


def _union(options: list[dict[str, Any]]) -> dict[str, Any]:
    if any(o == {} for o in options):
        return {}
    # Plain types merge into one "type" list: the form every provider accepts.
    if all(set(o) == {"type"} and isinstance(o["type"], str) for o in options):
        kinds = list(dict.fromkeys(o["type"] for o in options))
        return {"type": kinds[0] if len(kinds) == 1 else kinds}
    return {"anyOf": options}


def _generic(
    hint: Any, origin: Any, args: tuple[Any, ...], active: frozenset[Any]
) -> dict[str, Any]:
    if origin is tuple:
        if not args or (len(args) == 2 and args[1] is Ellipsis):
            return _array(args[0] if args else Any, active)
        return {
            "type": "array",
            "prefixItems": [_schema(a, active) for a in args],
            "minItems": len(args),
            "maxItems": len(args),
        }
    if origin in _ARRAYS:
        schema = _array(args[0] if args else Any, active)
        if origin in (set, frozenset, collections.abc.Set, collections.abc.MutableSet):
            schema["uniqueItems"] = True
        return schema
    if origin in _OBJECTS:
        key, value = args if args else (str, Any)
        if key is not str and typing.get_origin(key) is not Literal:
            raise _Unsupported(hint)
        schema = {"type": "object"}
        item = _schema(value, active)
        if item:
            schema["additionalProperties"] = item
        return schema
    raise _Unsupported(hint)


def _array(item_hint: Any, active: frozenset[Any]) -> dict[str, Any]:
    item = _schema(item_hint, active)
    return {"type": "array", "items": item} if item else {"type": "array"}


def _class(cls: type, active: frozenset[Any]) -> dict[str, Any]:
    if cls in active:
        return {"type": "object"}  # a recursive type: described once, then left open
    inner = active | {cls}
    if hasattr(cls, "model_json_schema") and hasattr(cls, "model_validate"):
        return typing.cast(dict[str, Any], cls.model_json_schema())
    if attrs.has(cls):
        hints = _class_hints(cls)
        fields = [
            (f.alias or f.name, hints.get(f.name, f.type), f.default is attrs.NOTHING)
            for f in attrs.fields(cls)
            if f.init
        ]
    elif dataclasses.is_dataclass(cls):
        hints = _class_hints(cls)
        fields = [
            (
                f.name,
                hints.get(f.name, f.type),
                f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING,
            )
            for f in dataclasses.fields(cls)
            if f.init
        ]
    elif typing.is_typeddict(cls):
        hints = _class_hints(cls)
        keys: frozenset[str] = getattr(cls, "__required_keys__", frozenset(hints))
        fields = [(name, tp, name in keys) for name, tp in hints.items()]
    else:
        raise _Unsupported(cls)
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {name: _schema(tp, inner) for name, tp, _ in fields},
    }
    required = [name for name, _, must in fields if must]
    if required:
        schema["required"] = required
    schema["additionalProperties"] = False
    doc = cls.__doc__
    if doc and not doc.startswith(f"{cls.__name__}("):  # not a dataclass's generated doc
        schema["description"] = inspect.cleandoc(doc)
    return schema


def _class_hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls, include_extras=True)
    except Exception:
        return {}  # unresolvable forward references: fall back to the raw field types

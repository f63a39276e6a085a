"""Checking a tool's call arguments against its type hints.

A check, not a conversion: the tool receives exactly what the caller passed, and a
mismatch is reported with the argument's path and the type it should have had.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import types
import typing
from typing import Any, Literal, Union

import attrs

__all__ = ["Mismatch", "check_value", "describe"]

_NoneType = type(None)


class Mismatch(Exception):
    """Internal: ``path`` is where in the argument the value went wrong."""

    def __init__(self, path: str, expected: str, got: Any) -> None:
        self.path = path
        self.expected = expected
        self.got = got
        super().__init__(path, expected)


def describe(tp: Any) -> str:
    """A short human name for a type hint: ``list[str]``, ``Optional[int]``, ``'a' or 'b'``."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return "any value"
    if origin is Literal:
        return " or ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(describe(a) for a in typing.get_args(tp))
    if tp is _NoneType or tp is None:
        return "None"
    if isinstance(tp, type) and origin is None:
        return tp.__name__
    return str(tp).replace("typing.", "")


def check_value(value: Any, tp: Any, path: str) -> None:
    """Raise :class:`Mismatch` if ``value`` does not fit the hint ``tp``.

    Understood: primitives, attrs classes, dataclasses, pydantic models, ``list``,
    ``tuple``, ``set``, ``dict``, ``Optional``/unions, ``Literal``, ``Annotated`` and
    ``Any``. Any other class is checked with ``isinstance``; anything else passes.
    """
    if tp is Any or tp is object:
        return
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Annotated:
        check_value(value, args[0], path)
        return
    if origin is Literal:
        if not any(value == a and type(value) is type(a) for a in args):
            raise Mismatch(path, describe(tp), value)
        return
    if origin in (Union, types.UnionType):
        for option in args:
            try:
                check_value(value, option, path)
                return
            except Mismatch:
                continue
        raise Mismatch(path, describe(tp), value)
    if tp is None or tp is _NoneType:
        if value is not None:
            raise Mismatch(path, "None", value)
        return
    if origin is not None:
        _check_generic(value, tp, origin, args, path)
        return
    if not isinstance(tp, type):
        return  # a TypeVar, a string forward reference: nothing we can check honestly
    if tp is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, tp)
    if not ok:
        raise Mismatch(path, describe(tp), value)
    if attrs.has(tp) or dataclasses.is_dataclass(tp):
        return  # constructing the instance already ran its own validators


def _check_generic(value: Any, tp: Any, origin: Any, args: tuple[Any, ...], path: str) -> None:
    if origin in (list, collections.abc.Sequence, collections.abc.Iterable, set, frozenset):
        want = list if origin is collections.abc.Sequence else origin
        if want is collections.abc.Iterable:
            want = collections.abc.Iterable
        if not isinstance(value, want) or isinstance(value, str | bytes):
            raise Mismatch(path, describe(tp), value)
        if args:
            for i, item in enumerate(value):
                check_value(item, args[0], f"{path}[{i}]")
        return
    if origin is tuple:
        if not isinstance(value, tuple | list):
            raise Mismatch(path, describe(tp), value)
        if len(args) == 2 and args[1] is Ellipsis:
            for i, item in enumerate(value):
                check_value(item, args[0], f"{path}[{i}]")
        elif args:
            if len(value) != len(args):
                raise Mismatch(path, f"{describe(tp)} ({len(args)} items)", value)
            for i, (item, item_tp) in enumerate(zip(value, args, strict=True)):
                check_value(item, item_tp, f"{path}[{i}]")
        return
    if origin in (dict, collections.abc.Mapping):
        if not isinstance(value, collections.abc.Mapping):
            raise Mismatch(path, describe(tp), value)
        if args:
            key_tp, value_tp = args
            for k, v in value.items():
                check_value(k, key_tp, f"{path} key {k!r}")
                check_value(v, value_tp, f"{path}[{k!r}]")
        return
    if isinstance(origin, type) and not isinstance(value, origin):
        raise Mismatch(path, describe(tp), value)

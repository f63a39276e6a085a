"""The one JSON codec: user values to storable JSON, records to bytes and back.

Stored data is JSON, never pickle: a data directory must be safe to open and readable
by any tool. Reading uses orjson, several times faster than the standard library,
which matters when a long run is resumed and every step record is decoded. Writing
uses orjson where the value has already been through :func:`to_json_value` (user
values, and step records, whose payloads the engine validated): it is on every
step's path. Other records are written by the standard library with
``allow_nan=False`` as a last guard, since orjson would write NaN as null.

attrs classes, dataclasses and pydantic models are unstructured with one cattrs
converter and structured back to the type a tool's return annotation names.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import enum
import json
import math
import types
import typing
import uuid
from typing import Any, TypeVar

import attrs
import cattrs
import orjson

from ironflow._pure._limits import MAX_DEPTH, MAX_INT, MIN_INT
from ironflow.errors import InvalidInputError, NotSerializableError, StoreCorruptedError

__all__ = [
    "MAX_DEPTH",
    "converter",
    "decode_record",
    "dumps",
    "encode_record",
    "event_data",
    "loads",
    "structure",
    "to_json_value",
]

T = TypeVar("T")

converter = cattrs.Converter()


def _is_pydantic(tp: Any) -> bool:
    return isinstance(tp, type) and hasattr(tp, "model_validate") and hasattr(tp, "model_dump")


# Pydantic is supported when installed, never required: its models are found by shape.
converter.register_structure_hook_func(_is_pydantic, lambda v, tp: tp.model_validate(v))
converter.register_unstructure_hook_func(_is_pydantic, lambda v: v.model_dump(mode="json"))
converter.register_structure_hook(
    _dt.datetime, lambda v, _: v if isinstance(v, _dt.datetime) else _dt.datetime.fromisoformat(v)
)
converter.register_unstructure_hook(_dt.datetime, lambda v: v.isoformat())
converter.register_structure_hook(
    uuid.UUID, lambda v, _: v if isinstance(v, uuid.UUID) else uuid.UUID(v)
)
converter.register_unstructure_hook(uuid.UUID, str)
# ``object`` (as in ``dict[str, object]``) accepts any JSON value as it is.
converter.register_structure_hook_func(lambda t: t is object, lambda v, _: v)

_PRIMITIVE = (str, bool, type(None))


def to_json_value(value: Any, what: str = "value", path: str = "value") -> Any:
    """Return ``value`` as plain JSON data, or raise :class:`NotSerializableError`.

    Guarantees: the result holds only str, int, finite float, bool, None, list and
    dict with str keys, nested at most :data:`~ironflow._pure._limits.MAX_DEPTH` levels
    (``[[1]]`` nests 2; the stored format's encoder stops at 255); the error's path
    names the first value that cannot be stored (``value['items'][2]``); a recursive
    structure is refused, never looped on.
    """
    if type(value) is dict and all(
        type(k) is str
        and k.isascii()
        and (
            (type(v) in _FLAT and (type(v) is not str or v.isascii()))
            or (type(v) is int and MIN_INT <= v <= MAX_INT)
        )
        for k, v in value.items()
    ):
        return dict(value)  # the common step input, {"image_url": "..."}: nothing to walk
    return _walk(value, what, path, set(), 0)


_FLAT = frozenset({str, bool, type(None)})


def _check_text(text: str, what: str, path: str) -> None:
    """Refuse a string UTF-8 cannot hold: one with a lone surrogate.

    Python makes those when it decodes bytes that are not UTF-8 with
    ``errors="surrogateescape"`` (file names, a subprocess's output); JSON cannot
    store them.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise NotSerializableError(
            what,
            path,
            f"it holds {text[exc.start]!r} at index {exc.start}, a lone surrogate, which is "
            "not valid UTF-8; decode the bytes with errors='replace', or store them as base64",
        ) from None


def _too_deep(what: str, path: str) -> NotSerializableError:
    return NotSerializableError(
        what,
        path,
        f"it nests lists and objects more than {MAX_DEPTH} levels deep",
        hint="Store a flatter value, or its deep part as a JSON string.",
    )


def _walk(v: Any, what: str, path: str, active: set[int], depth: int) -> Any:
    if isinstance(v, _PRIMITIVE):
        if isinstance(v, str) and not v.isascii():
            _check_text(v, what, path)
        return v
    if isinstance(v, int):
        if not MIN_INT <= v <= MAX_INT:
            raise NotSerializableError(
                what, path, f"{v} does not fit in 64 bits; store large integers as strings"
            )
        return int(v) if isinstance(v, enum.Enum) else v
    if isinstance(v, float):
        if not math.isfinite(v):
            raise NotSerializableError(what, path, f"{v!r} is not a finite number")
        return v
    if isinstance(v, dict | list | tuple):
        if depth >= MAX_DEPTH:
            raise _too_deep(what, path)
        key = id(v)
        if key in active:
            raise NotSerializableError(what, path, "it contains itself (a recursive structure)")
        active.add(key)
        try:
            if isinstance(v, dict):
                out: dict[str, Any] = {}
                for k, item in v.items():
                    if not isinstance(k, str):
                        raise NotSerializableError(
                            what, f"{path}[{k!r}]", f"dict keys must be str, not {type(k).__name__}"
                        )
                    # A str subclass (a StrEnum member) is stored as its plain text.
                    text = k if type(k) is str else str.__str__(k)
                    if not text.isascii():
                        _check_text(text, what, f"{path}[{k!r}]")
                    out[text] = _walk(item, what, f"{path}[{k!r}]", active, depth + 1)
                return out
            return [
                _walk(item, what, f"{path}[{i}]", active, depth + 1) for i, item in enumerate(v)
            ]
        finally:
            active.discard(key)
    if isinstance(v, enum.Enum):
        return _walk(v.value, what, path, active, depth)
    if attrs.has(type(v)) or (dataclasses.is_dataclass(v) and not isinstance(v, type)):
        return _walk(_unstructured(v, what, path), what, path, active, depth)
    if _is_pydantic(type(v)):
        return _walk(_unstructured(v, what, path), what, path, active, depth)
    if isinstance(v, _dt.datetime | _dt.date):
        return v.isoformat()
    if isinstance(v, uuid.UUID):
        return str(v)
    raise NotSerializableError(what, path, f"{type(v).__name__} is not a JSON type")


def _unstructured(v: Any, what: str, path: str) -> Any:
    """An attrs, dataclass or pydantic object as plain data (then walked and checked).

    Its converter recurses by itself: objects nested past Python's stack are refused
    as too deep, like nested lists, rather than raising RecursionError.
    """
    try:
        return v.model_dump(mode="json") if _is_pydantic(type(v)) else converter.unstructure(v)
    except RecursionError:
        raise _too_deep(what, path) from None


def event_data(data: Any, what: str) -> dict[str, Any]:
    """An event's data as stored: a JSON object, checked like any stored value.

    Handlers read fields of ``ctx.event.data``, filters, matches and keys name paths
    into it: data that is a list, a string or a number would only fail later, inside a
    run. Raises :class:`~ironflow.errors.InvalidInputError` (a 422 over HTTP, exit
    status 2 from the CLI) for anything but an object, naming ``what``.
    """
    value = to_json_value(data, what, "data")
    if not isinstance(value, dict):
        raise InvalidInputError(
            f"{what} must be a JSON object, not {_json_kind(value)}; put the value under "
            f'a name, e.g. {{"value": {_clip(value)}}}'
        )
    return value


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return "a string" if isinstance(value, str) else "an array"


def _clip(value: Any) -> str:
    text = orjson.dumps(value).decode()
    return text if len(text) <= 40 else text[:37] + "..."


def dumps(value: Any, what: str = "value") -> bytes:
    """Validate and encode a user value as compact UTF-8 JSON."""
    return orjson.dumps(to_json_value(value, what))


def loads(raw: bytes | memoryview) -> Any:
    """Decode JSON written by :func:`dumps` or :func:`encode_record`."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _damaged("value", exc) from exc


def _damaged(what: str, exc: BaseException) -> StoreCorruptedError:
    """A stored record that no longer decodes: the bytes on disk are not what we wrote."""
    return StoreCorruptedError(f"a stored {what} cannot be read ({type(exc).__name__}: {exc})")


def structure(value: Any, tp: Any) -> Any:
    """Re-type stored JSON ``value`` as ``tp`` (an attrs class comes back as that class)."""
    if tp is Any or tp is None or tp is type(None) or tp is object:
        return value
    try:
        return converter.structure(value, tp)
    except Exception as exc:
        raise NotSerializableError(
            "stored value",
            "value",
            f"it cannot be read back as {_type_name(tp)} ({exc}); "
            "check that the return annotation matches what the function returns",
        ) from exc


def _type_name(tp: Any) -> str:
    return tp.__name__ if isinstance(tp, type) else str(tp).replace("typing.", "")


def encode_record(record: Any) -> bytes:
    """Encode one of the store's attrs records. Its user payloads are already JSON."""
    return json.dumps(
        converter.unstructure(record), separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


def decode_record(raw: bytes | memoryview, cls: type[T]) -> T:
    """Decode a record written by :func:`encode_record`.

    Raises :class:`~ironflow.errors.StoreCorruptedError` if the bytes are not one.
    """
    try:
        return converter.structure(orjson.loads(raw), cls)
    except Exception as exc:
        raise _damaged(f"{cls.__name__} record", exc) from exc


def _plain_field(tp: Any) -> bool:
    """Whether JSON gives a field of this type its value as is (no structuring needed)."""
    if tp in (str, int, float, bool, Any, type(None)):
        return True
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        return True
    if origin in (typing.Union, types.UnionType):
        return all(_plain_field(a) for a in typing.get_args(tp))
    return False


class RecordCodec:
    """Encode and decode one record class, skipping cattrs where every field is plain.

    Each step is encoded once when recorded and decoded again whenever its run is
    leased, so both directions are on the hot path. Plain fields (str, numbers, the
    already-validated JSON of inputs and outputs) are taken as they are: walking a
    step's output again through the converter would redo what ``to_json_value`` did.
    Any other field (nested records, tuples) goes through the converter, so a field
    added later is never coded wrongly, only more slowly.
    """

    def __init__(self, cls: type[Any]) -> None:
        attrs.resolve_types(cls)
        self.cls = cls
        fields = attrs.fields(cls)
        self.names = tuple(f.name for f in fields)
        self.plain = frozenset(f.name for f in fields if _plain_field(f.type))
        self.nested = tuple(name for name in self.names if name not in self.plain)

    def encode(self, record: Any) -> bytes:
        data = {}
        for name in self.names:
            value = getattr(record, name)
            data[name] = (
                value if value is None or name in self.plain else converter.unstructure(value)
            )
        return orjson.dumps(data)

    def decode(self, raw: bytes | memoryview) -> Any:
        try:
            data = orjson.loads(raw)
            for name in self.nested:
                if data.get(name) is not None:
                    return converter.structure(data, self.cls)
            try:
                return self.cls(**data)
            except TypeError:
                # A key this version does not know (or a missing one): the converter
                # ignores the first and names the second.
                return converter.structure(data, self.cls)
        except Exception as exc:
            raise _damaged(f"{self.cls.__name__} record", exc) from exc

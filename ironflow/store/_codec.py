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
import functools
import json
import math
import types
import typing
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

import attrs
import cattrs
import orjson

from ironflow._pure._limits import MAX_DEPTH, MAX_INT, MIN_INT
from ironflow.errors import InvalidInputError, NotSerializableError, StoreCorruptedError

__all__ = [
    "MAX_DEPTH",
    "NOT_JSON",
    "converter",
    "decode_record",
    "dumps",
    "encode_record",
    "event_data",
    "exact_json",
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
    if type(value) is dict:
        # The common step input, {"image_url": "..."}: flat, checked in one loop.
        flat: dict[str, Any] = {}
        for k, v in value.items():
            kind = type(v)
            if type(k) is not str or not k.isascii():
                break
            if kind is str:
                if not v.isascii():
                    break
            elif kind is int:
                if not MIN_INT <= v <= MAX_INT:
                    break
            elif v is not None and kind is not bool:
                break
            flat[k] = v
        else:
            return flat
    copy = exact_json(value)
    if copy is not NOT_JSON:
        return copy
    try:
        return _plain_copy(value, 0)
    except _Unusual:
        # Anything but plain JSON (records, enums, dates, a value to refuse): the full
        # walk converts it, or names the path of what cannot be stored.
        return _walk(value, what, path, set(), 0)


#: orjson's own types only: a subclass (an IntEnum, a str subclass), a dataclass or a
#: datetime goes to ``default``, and with none given the encode raises.
_EXACT = (
    orjson.OPT_PASSTHROUGH_SUBCLASS
    | orjson.OPT_PASSTHROUGH_DATACLASS
    | orjson.OPT_PASSTHROUGH_DATETIME
)
#: What :func:`exact_json` answers for a value that is not plain JSON.
NOT_JSON: Any = object()


def exact_json(value: Any) -> Any:
    """A copy of ``value`` if it is plain JSON that reads back as an equal value of the
    same types (what :func:`to_json_value` would return unchanged), else :data:`NOT_JSON`.

    One encode and one decode in C, no walk in Python: the check every stored event and
    LangGraph checkpoint value makes. orjson refuses what JSON cannot hold (a non-str
    key, a lone surrogate, an integer past 64 bits, a recursive structure, any other
    type) and writes a few things as something else (NaN as null, a tuple as a list, an
    enum as its value, a UUID as text), which the copy then no longer equals. Nesting is
    at most the opening brackets counted (some may be inside strings): a value with more
    than :data:`MAX_DEPTH` of them gets the full walk.
    """
    try:
        raw = orjson.dumps(value, option=_EXACT)
    except TypeError:  # orjson.JSONEncodeError is one
        return NOT_JSON
    if raw.count(b"[") + raw.count(b"{") > MAX_DEPTH:
        return NOT_JSON
    copy = orjson.loads(raw)
    try:
        same = copy == value
    except Exception:  # an enum's own __eq__ that raises
        return NOT_JSON
    return copy if same else NOT_JSON


class _Unusual(Exception):
    """The value is not plain JSON data: :func:`_walk` takes over."""


def _plain_copy(v: Any, depth: int) -> Any:
    """A copy of plain JSON data, checked as :func:`_walk` checks it, with no paths built.

    Raises :class:`_Unusual` at anything else (a recursive structure ends at the depth
    limit), so the common value costs one quick pass and a refused one gets its message.
    """
    kind = type(v)
    if kind is str:
        if not v.isascii():
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:
                raise _Unusual from None
        return v
    if kind is int:
        if MIN_INT <= v <= MAX_INT:
            return v
        raise _Unusual
    if kind is float:
        if math.isfinite(v):
            return v
        raise _Unusual
    if v is None or kind is bool:
        return v
    if depth >= MAX_DEPTH:
        raise _Unusual
    if kind is dict:
        out = {}
        for k, item in v.items():
            if type(k) is not str or not (k.isascii() or _utf8(k)):
                raise _Unusual
            out[k] = _plain_copy(item, depth + 1)
        return out
    if kind is list or kind is tuple:
        return [_plain_copy(item, depth + 1) for item in v]
    raise _Unusual


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


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
        exact = _exact(tp)
    except TypeError:  # a hint that cannot be hashed (Annotated with a list): no shortcut
        exact = None
    if exact is not None and exact(value):
        # Already the very type (a dict[str, int] read back): a copy, as cattrs gives.
        kind = type(value)
        return dict(value) if kind is dict else list(value) if kind is list else value
    try:
        return converter.structure(value, tp)
    except Exception as exc:
        raise NotSerializableError(
            "stored value",
            "value",
            f"it cannot be read back as {_type_name(tp)} ({exc}); "
            "check that the return annotation matches what the function returns",
        ) from exc


_SCALARS = (str, int, float, bool)


@functools.lru_cache(maxsize=512)
def _exact(tp: Any) -> Callable[[Any], bool] | None:
    """For a scalar hint or a flat ``dict[str, X]``/``list[X]`` of one, a test that a JSON
    value already is exactly that type, so :func:`structure` need not convert it;
    None for any other hint (the converter decides). An ``int`` where a ``float`` is
    asked, or a ``bool`` where an ``int`` is, fails the test: the converter converts."""
    if tp in _SCALARS:
        return lambda v: type(v) is tp
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is dict and len(args) == 2 and args[0] is str and args[1] in _SCALARS:
        item = args[1]
        return lambda v: type(v) is dict and all(type(x) is item for x in v.values())
    if origin is list and len(args) == 1 and args[0] in _SCALARS:
        item = args[0]
        return lambda v: type(v) is list and all(type(x) is item for x in v)
    return None


def _type_name(tp: Any) -> str:
    return tp.__name__ if isinstance(tp, type) else str(tp).replace("typing.", "")


def encode_record(record: Any) -> bytes:
    """Encode one of the store's attrs records. Its user payloads are already JSON."""
    return codec_of(type(record)).encode(record)


def decode_record(raw: bytes | memoryview, cls: type[T], **changes: Any) -> T:
    """Decode a record written by :func:`encode_record`, with ``changes`` to its fields
    if given (what ``attrs.evolve`` of the decoded record gives, built once).

    Raises :class:`~ironflow.errors.StoreCorruptedError` if the bytes are not one.
    """
    decoded: T = codec_of(cls).decode(raw, changes)
    return decoded


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


def _record_field(tp: Any) -> type[Any] | None:
    """The attrs class a field holds (``X`` or ``X | None``), or None."""
    if attrs.has(tp):
        return tp
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and attrs.has(args[0]):
            return args[0]
    return None


def _tuple_field(tp: Any) -> bool:
    return typing.get_origin(tp) is tuple


def _scalar_tuple(tp: Any) -> bool:
    """Whether a field is ``tuple[str, ...]`` (or of another plain scalar): a JSON list."""
    args = typing.get_args(tp)
    return (
        typing.get_origin(tp) is tuple
        and len(args) == 2
        and args[1] is Ellipsis
        and args[0] in (str, int, bool)
    )


class RecordCodec:
    """Encode and decode one record class, skipping cattrs where it can.

    Records are written on every step's path (a step record, the run at its emit,
    lease and finish, the event) and read whenever a run is leased, so both directions
    are hot. Plain fields (str, numbers, the already-validated JSON of inputs and
    outputs) are taken as they are: walking a step's output again through the
    converter would redo what ``to_json_value`` did. A field holding another record
    (a run's event) goes through that record's own codec. Any other field (tuples of
    records) goes through the converter, so a field added later is never coded
    wrongly, only more slowly.

    Written with orjson, which writes a NaN as ``null``: every float field is checked
    finite first, and a record whose fields needed the converter is written by the
    standard library with ``allow_nan=False``, the last guard against storing a value
    that would read back different.
    """

    def __init__(self, cls: type[Any]) -> None:
        attrs.resolve_types(cls)
        self.cls = cls
        fields = attrs.fields(cls)
        self.names = tuple(f.name for f in fields)
        self.plain = frozenset(f.name for f in fields if _plain_field(f.type))
        self.subs: dict[str, RecordCodec] = {}
        for f in fields:
            sub = None if f.name in self.plain else _record_field(f.type)
            if sub is not None:
                self.subs[f.name] = codec_of(sub)
        #: ``tuple[str, ...]`` fields (an emit's run ids): a list of scalars, checked on read.
        self.scalar_tuples = {
            f.name: typing.get_args(f.type)[0] for f in fields if _scalar_tuple(f.type)
        }
        self.nested = tuple(
            name
            for name in self.names
            if name not in self.plain and name not in self.subs and name not in self.scalar_tuples
        )
        #: Tuple fields whose default is the empty tuple: stored as [], read back as ().
        self.empty_tuples = frozenset(
            f.name for f in fields if _tuple_field(f.type) and f.default == ()
        )

    def plain_dict(self, record: Any) -> tuple[dict[str, Any], bool]:
        """The record as JSON data, and whether orjson may write it (see the class)."""
        data: dict[str, Any] = {}
        fast = True
        plain = self.plain
        for name in self.names:
            value = getattr(record, name)
            if value is None:
                data[name] = None
            elif name in plain:
                if type(value) is float and not math.isfinite(value):
                    fast = False
                data[name] = value
            else:
                sub = self.subs.get(name)
                if sub is not None:
                    data[name], sub_fast = sub.plain_dict(value)
                    fast = fast and sub_fast
                elif name in self.scalar_tuples and type(value) is tuple:
                    data[name] = list(value)
                elif value == () and name in self.empty_tuples:
                    data[name] = []
                else:
                    data[name] = converter.unstructure(value)
                    fast = False
        return data, fast

    def encode(self, record: Any) -> bytes:
        data, fast = self.plain_dict(record)
        if fast:
            return orjson.dumps(data)
        return json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()

    def from_dict(self, data: dict[str, Any], changes: dict[str, Any] | None = None) -> Any:
        """The record from its JSON data (raises on data that is not one), with
        ``changes`` to its fields if given: what ``attrs.evolve`` of it would give,
        built once."""
        for name in self.nested:
            value = data.get(name)
            if value is not None:
                if value == [] and name in self.empty_tuples:
                    data[name] = ()
                    continue
                return self._converted(data, changes)
        for name, item in self.scalar_tuples.items():
            value = data.get(name)
            if value is not None:
                if type(value) is not list or not all(type(x) is item for x in value):
                    return self._converted(data, changes)  # converts, or names it
                data[name] = tuple(value)
        for name, sub in self.subs.items():
            value = data.get(name)
            if value is not None:
                data[name] = sub.from_dict(value)
        try:
            return self.cls(**data) if not changes else self.cls(**{**data, **changes})
        except TypeError:
            # A key this version does not know (or a missing one): the converter
            # ignores the first and names the second.
            return self._converted(data, changes)

    def _converted(self, data: dict[str, Any], changes: dict[str, Any] | None) -> Any:
        # A nested record already built from ``data`` goes back to its JSON: the
        # converter reads JSON only.
        for name, sub in self.subs.items():
            value = data.get(name)
            if value is not None and not isinstance(value, dict):
                data[name] = sub.plain_dict(value)[0]
        record = converter.structure(data, self.cls)
        return attrs.evolve(record, **changes) if changes else record

    def decode(self, raw: bytes | memoryview, changes: dict[str, Any] | None = None) -> Any:
        try:
            return self.from_dict(orjson.loads(raw), changes)
        except Exception as exc:
            raise _damaged(f"{self.cls.__name__} record", exc) from exc


_codecs: dict[type[Any], RecordCodec] = {}


def codec_of(cls: type[Any]) -> RecordCodec:
    """The codec of a record class, built once."""
    codec = _codecs.get(cls)
    if codec is None:
        codec = _codecs[cls] = RecordCodec(cls)
    return codec

"""The store routes' wire: how each kind of argument is read from a request and
written into one, and the strict converter the server reads records with.

Why the wire is strict: a request comes from any program, not only from RemoteStore.
Its JSON is read with its own converter, which takes a string only as a string and a
number only as a number (``"7"`` is not 7, ``1.5`` is not 1, ``true`` is not 1), a list
only as a list, and refuses keys a record does not have; and each argument is checked
before the store sees it. A request refused with a 4xx has changed nothing.

Separate from the route table (``_routes.py``) because it is a different job: a
:class:`Kind` knows one value's shape and check on the wire and nothing of paths,
methods or Store methods; the table only names, for each argument, which kind it is.
"""

from __future__ import annotations

import collections.abc
import typing
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import cattrs
from cattrs.gen import make_dict_structure_fn

from ironflow._pure._limits import MAX_PAGE
from ironflow.errors import InvalidInputError
from ironflow.store import _checks as checks
from ironflow.store._codec import converter, to_json_value
from ironflow.store._history import History, history_from_json, history_to_json

__all__ = [
    "Checked",
    "Data",
    "Flag",
    "HistoryDocument",
    "Int",
    "Kind",
    "Many",
    "Maybe",
    "Number",
    "Record",
]


# -- the strict wire converter ---------------------------------------------------------------

_wire = cattrs.Converter(forbid_extra_keys=True)


def _exactly(kind: type, test: Callable[[Any], bool]) -> Callable[[Any, Any], Any]:
    def hook(value: Any, _: Any) -> Any:
        if not test(value):
            raise TypeError(f"expected {kind.__name__}, got {type(value).__name__} {value!r:.40}")
        return value

    return hook


_wire.register_structure_hook(str, _exactly(str, lambda v: isinstance(v, str)))
_wire.register_structure_hook(bool, _exactly(bool, lambda v: isinstance(v, bool)))
_wire.register_structure_hook(int, _exactly(int, lambda v: type(v) is int))
_wire.register_structure_hook(
    float,
    lambda v, _: float(_exactly(float, lambda x: type(x) in (int, float))(v, _)),
)
_wire.register_structure_hook_func(lambda t: t is object, lambda v, _: v)


def _is_collection(tp: Any) -> bool:
    origin = typing.get_origin(tp)
    return origin in (tuple, list, set, frozenset, collections.abc.Sequence, dict)


def _collection_hook(tp: Any) -> Callable[[Any, Any], Any]:
    """A list only from a JSON array, an object only from a JSON object."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is dict:
        key_hook = _wire.get_structure_hook(args[0])
        value_hook = _wire.get_structure_hook(args[1])

        def mapping(value: Any, _: Any) -> Any:
            if not isinstance(value, dict):
                raise TypeError(f"expected an object, got {type(value).__name__}")
            return {key_hook(k, args[0]): value_hook(v, args[1]) for k, v in value.items()}

        return mapping
    if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
        raise TypeError(f"the wire has no shape for {tp}")  # not used by any record
    item = args[0]
    item_hook = _wire.get_structure_hook(item)
    make: Callable[[Any], Any] = list if origin in (list, collections.abc.Sequence) else origin

    def sequence(value: Any, _: Any) -> Any:
        if not isinstance(value, list):
            raise TypeError(f"expected a list, got {type(value).__name__}")
        out = []
        for i, element in enumerate(value):
            try:
                out.append(item_hook(element, item))
            except Exception as exc:
                raise TypeError(f"[{i}]: {_reason(exc)}") from None
        return make(out)

    return sequence


_wire.register_structure_hook_factory(_is_collection, _collection_hook)


def _record_hook(tp: Any) -> Callable[[Any, Any], Any]:
    """A record only from a JSON object (cattrs would try ``.keys()`` on anything)."""
    fields = make_dict_structure_fn(tp, _wire, _cattrs_forbid_extra_keys=True)

    def record(value: Any, _: Any) -> Any:
        if not isinstance(value, dict):
            raise TypeError(f"expected an object, got {type(value).__name__}")
        return fields(value, tp)

    return record


_wire.register_structure_hook_factory(attrs.has, _record_hook)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, cattrs.BaseValidationError):
        return "; ".join(cattrs.transform_error(exc, path="$"))
    return str(exc) or type(exc).__name__


# -- what an argument is on the wire ------------------------------------------------------------


class Kind:
    """How an argument travels: :meth:`load` reads it from a request (the server),
    :meth:`dump` writes it into one (the client). Both check it; both raise the error
    the store raises for a bad value."""

    def load(self, raw: Any, what: str) -> Any:
        raise NotImplementedError

    def dump(self, value: Any, what: str) -> Any:
        raise NotImplementedError

    def load_text(self, raw: str, what: str) -> Any:
        """The argument from a path segment or a query parameter."""
        return self.load(raw, what)


@attrs.frozen
class Checked(Kind):
    """A value (a string, mostly) checked by ``check(value, what)``, a function of
    ``_checks`` that returns it checked or raises the store's error for it."""

    check: Callable[[Any, str], Any]

    def load(self, raw: Any, what: str) -> Any:
        return self.check(raw, what)

    def dump(self, value: Any, what: str) -> Any:
        return self.check(value, what)


@attrs.frozen
class Int(Kind):
    """A whole number from ``lo`` to ``hi``."""

    lo: int
    hi: int

    def load(self, raw: Any, what: str) -> int:
        return checks.integer(raw, what, self.lo, self.hi)

    def dump(self, value: Any, what: str) -> int:
        return checks.integer(value, what, self.lo, self.hi)

    def load_text(self, raw: str, what: str) -> int:
        digits = raw[1:] if raw.startswith("-") else raw
        if not digits.isascii() or not digits.isdigit() or len(digits) > 20:
            raise InvalidInputError(
                f"{what} must be a whole number from {self.lo} to {self.hi}, not {raw[:40]!r}"
            )
        return self.load(int(raw), what)


@attrs.frozen
class Number(Kind):
    """A finite number from ``lo`` to ``hi``."""

    lo: float
    hi: float

    def load(self, raw: Any, what: str) -> float:
        return checks.number(raw, what, self.lo, self.hi)

    def dump(self, value: Any, what: str) -> float:
        return checks.number(value, what, self.lo, self.hi)

    def load_text(self, raw: str, what: str) -> float:
        try:
            value = float(raw[:40]) if raw.isascii() else None
        except ValueError:
            value = None
        if value is None:
            raise InvalidInputError(f"{what} must be a number, not {raw[:40]!r}")
        return self.load(value, what)


@attrs.frozen
class Flag(Kind):
    """true or false."""

    def load(self, raw: Any, what: str) -> bool:
        if not isinstance(raw, bool):
            raise InvalidInputError(f"{what} must be true or false, not {raw!r:.40}")
        return raw

    def dump(self, value: Any, what: str) -> bool:
        return self.load(value, what)


@attrs.frozen
class Data(Kind):
    """A user value: any JSON the store can hold (``to_json_value``'s rules).

    ``path`` starts the path an error names (``data['items'][2]``).
    """

    path: str

    def load(self, raw: Any, what: str) -> Any:
        return to_json_value(raw, what, self.path)

    def dump(self, value: Any, what: str) -> Any:
        return to_json_value(value, what, self.path)


@attrs.frozen
class Record(Kind):
    """A record of the store (or a list of them), then ``check`` on it.

    The server reads it with the strict wire converter; the client writes it with the
    store's codec after checking it.
    """

    tp: Any
    check: Callable[[Any], Any] | None = None

    def load(self, raw: Any, what: str) -> Any:
        try:
            value = _wire.structure(raw, self.tp)
        except (cattrs.BaseValidationError, TypeError, ValueError, KeyError) as exc:
            raise InvalidInputError(f"{what} is not a valid {self.name}: {_reason(exc)}") from None
        return value if self.check is None else self.check(value)

    def dump(self, value: Any, what: str) -> Any:
        checked = value if self.check is None else self.check(value)
        return converter.unstructure(checked, self.tp)

    @property
    def name(self) -> str:
        tp = self.tp
        if typing.get_origin(tp) is list:
            return f"list of {typing.get_args(tp)[0].__name__}"
        return str(tp.__name__)


@attrs.frozen
class HistoryDocument(Kind):
    """A run's history (``ironflow run export``), in its own versioned format."""

    def load(self, raw: Any, what: str) -> History:
        return history_from_json(raw, source=what)

    def dump(self, value: Any, what: str) -> Any:
        if not isinstance(value, History):
            raise InvalidInputError(f"{what} must be a History, not {type(value).__name__}")
        return history_to_json(value)


@attrs.frozen
class Many(Kind):
    """A list of at most ``max_items`` of ``item``."""

    item: Kind
    max_items: int = MAX_PAGE

    def load(self, raw: Any, what: str) -> list[Any]:
        if not isinstance(raw, list) or len(raw) > self.max_items:
            raise InvalidInputError(f"{what} must be a list of at most {self.max_items} items")
        return [self.item.load(v, f"each of {what}") for v in raw]

    def dump(self, value: Any, what: str) -> list[Any]:
        if isinstance(value, str | bytes | Mapping) or not isinstance(
            value, collections.abc.Iterable
        ):
            raise InvalidInputError(f"{what} must be a list, not {value!r:.40}")
        items = list(value)
        if len(items) > self.max_items:
            raise InvalidInputError(f"{what} must be a list of at most {self.max_items} items")
        return [self.item.dump(v, f"each of {what}") for v in items]


@attrs.frozen
class Maybe(Kind):
    """``inner``, or null."""

    inner: Kind

    def load(self, raw: Any, what: str) -> Any:
        return None if raw is None else self.inner.load(raw, what)

    def dump(self, value: Any, what: str) -> Any:
        return None if value is None else self.inner.dump(value, what)

    def load_text(self, raw: str, what: str) -> Any:
        return self.inner.load_text(raw, what)

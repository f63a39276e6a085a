"""Trigger filters: a small, safe expression language over an event.

``@agent(..., filter='data.customer.tier == "gold" and data.amount > 100')`` starts a
run only for events the expression is true for. The language has no ``eval``, no
calls and no attribute access on Python objects: it reads JSON values by path and
compares them.

Grammar (lowest precedence first)::

    expr       := or
    or         := and (("or" | "||") and)*
    and        := not (("and" | "&&") not)*
    not        := ("not" | "!") not | comparison
    comparison := value (("==" | "!=" | "<" | "<=" | ">" | ">=" | "in" | "not" "in") value)?
    value      := literal | path | "(" expr ")" | "[" (expr ("," expr)*)? "]" | "-" number
    path       := root ("." name | "[" (integer | string) "]")*
    root       := "data" | "name" | "id" | "event"       (event.data, event.name, ...)
    literal    := number | string | true | false | null

Evaluation never raises: a path that leads nowhere is ``null``; ordering compares
numbers with numbers and strings with strings, anything else is false; ``a in b`` looks
for an item of a list, a key of an object or a substring of a string. ``true`` equals
only ``true`` (never ``1``), as in JSON.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import Any

import attrs

from ironflow._pure._limits import MAX_FILTER_CHARS, MAX_FILTER_DEPTH
from ironflow.errors import FilterError

__all__ = ["Filter", "compile_filter"]


_ROOTS = ("data", "name", "id", "event")
_KEYWORDS = {"and", "or", "not", "in", "true", "false", "null"}
_TWO_CHAR = ("==", "!=", "<=", ">=", "&&", "||")
_ONE_CHAR = "<>()[].,!-"


class _Missing:
    """A path that leads nowhere. Compares like null."""

    def __repr__(self) -> str:
        return "missing"


_MISSING = _Missing()


@attrs.frozen
class _Token:
    kind: str  # "num", "str", "name", "op", "end"
    value: Any
    column: int  # 1-based, for messages


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in " \t\r\n":
            i += 1
            continue
        col = i + 1
        if c in "\"'":
            value, i = _read_string(text, i)
            tokens.append(_Token("str", value, col))
        elif c.isascii() and c.isdigit():
            j = i
            while j < n and text[j].isascii() and (text[j].isalnum() or text[j] in "._"):
                # 1e-5 and 1E+5: a sign right after an exponent belongs to the number
                if text[j] in "eE" and j + 1 < n and text[j + 1] in "+-":
                    j += 2
                    continue
                j += 1
            tokens.append(_Token("num", _number(text, text[i:j], col), col))
            i = j
        elif c.isascii() and (c.isalpha() or c == "_"):
            j = i
            while j < n and text[j].isascii() and (text[j].isalnum() or text[j] == "_"):
                j += 1
            tokens.append(_Token("name", text[i:j], col))
            i = j
        elif text[i : i + 2] in _TWO_CHAR:
            tokens.append(_Token("op", text[i : i + 2], col))
            i += 2
        elif c in _ONE_CHAR:
            tokens.append(_Token("op", c, col))
            i += 1
        elif c == "=":
            raise FilterError(text, col, "'=' is not an operator; compare with '=='")
        else:
            raise FilterError(text, col, f"unexpected character {c!r}")
    tokens.append(_Token("end", None, n + 1))
    return tokens


_ESCAPES = {'"': '"', "'": "'", "\\": "\\", "n": "\n", "t": "\t", "r": "\r", "/": "/"}


def _read_string(text: str, start: int) -> tuple[str, int]:
    quote = text[start]
    out: list[str] = []
    i = start + 1
    while i < len(text):
        c = text[i]
        if c == quote:
            return "".join(out), i + 1
        if c == "\\":
            if i + 1 >= len(text):
                break
            escaped = _ESCAPES.get(text[i + 1])
            if escaped is None:
                raise FilterError(text, i + 1, f"unknown escape '\\{text[i + 1]}' in a string")
            out.append(escaped)
            i += 2
            continue
        out.append(c)
        i += 1
    raise FilterError(text, start + 1, "this string is never closed")


def _number(text: str, raw: str, col: int) -> int | float:
    try:
        if all(ch.isdigit() for ch in raw):
            if len(raw) > 30:
                raise ValueError("too long")
            return int(raw)
        value = float(raw)
    except ValueError:
        raise FilterError(text, col, f"{raw!r} is not a number") from None
    if not math.isfinite(value):
        raise FilterError(text, col, f"{raw!r} is out of range")
    return value


# -- the AST ------------------------------------------------------------------------------


@attrs.frozen
class _Literal:
    value: Any


@attrs.frozen
class _Path:
    root: str
    parts: tuple[str | int, ...]


@attrs.frozen
class _List:
    items: tuple[_Node, ...]


@attrs.frozen
class _Not:
    operand: _Node


@attrs.frozen
class _Bool:
    op: str  # "and" | "or"
    operands: tuple[_Node, ...]


@attrs.frozen
class _Compare:
    op: str
    left: _Node
    right: _Node


_Node = _Literal | _Path | _List | _Not | _Bool | _Compare


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.i = 0
        self.depth = 0

    def peek(self) -> _Token:
        return self.tokens[self.i]

    def take(self) -> _Token:
        token = self.tokens[self.i]
        self.i += 1
        return token

    def is_op(self, *values: str) -> bool:
        t = self.peek()
        return t.kind == "op" and t.value in values

    def is_word(self, *values: str) -> bool:
        t = self.peek()
        return t.kind == "name" and t.value in values

    def fail(self, message: str, token: _Token | None = None) -> FilterError:
        return FilterError(self.text, (token or self.peek()).column, message)

    def expect_op(self, value: str, what: str) -> None:
        if not self.is_op(value):
            raise self.fail(f"expected {value!r} {what}, found {_describe(self.peek())}")
        self.take()

    def parse(self) -> _Node:
        if not self.text.strip():
            raise FilterError(self.text, 1, "the filter is empty")
        node = self.expr()
        if self.peek().kind != "end":
            raise self.fail(f"unexpected {_describe(self.peek())} after a complete expression")
        return node

    def expr(self) -> _Node:
        self.depth += 1
        if self.depth > MAX_FILTER_DEPTH:
            raise self.fail(f"the expression nests deeper than {MAX_FILTER_DEPTH} levels")
        try:
            return self.or_()
        finally:
            self.depth -= 1

    def or_(self) -> _Node:
        operands = [self.and_()]
        while self.is_word("or") or self.is_op("||"):
            self.take()
            operands.append(self.and_())
        return operands[0] if len(operands) == 1 else _Bool("or", tuple(operands))

    def and_(self) -> _Node:
        operands = [self.not_()]
        while self.is_word("and") or self.is_op("&&"):
            self.take()
            operands.append(self.not_())
        return operands[0] if len(operands) == 1 else _Bool("and", tuple(operands))

    def not_(self) -> _Node:
        nots = 0
        while self.is_word("not") or self.is_op("!"):
            self.take()
            nots += 1
            if nots > MAX_FILTER_DEPTH:
                raise self.fail(f"more than {MAX_FILTER_DEPTH} 'not' in a row")
        node = self.comparison()
        for _ in range(nots):
            node = _Not(node)
        return node

    def comparison(self) -> _Node:
        left = self.value()
        if self.is_op("==", "!=", "<", "<=", ">", ">="):
            op = self.take().value
        elif self.is_word("in"):
            self.take()
            op = "in"
        elif (
            self.is_word("not")
            and self.tokens[self.i + 1].kind == "name"
            and (self.tokens[self.i + 1].value == "in")
        ):
            self.i += 2
            op = "not in"
        else:
            return left
        right = self.value()
        if self.is_op("==", "!=", "<", "<=", ">", ">=") or self.is_word("in"):
            raise self.fail("comparisons do not chain; join them with 'and'")
        return _Compare(op, left, right)

    def value(self) -> _Node:
        token = self.peek()
        if token.kind == "num":
            self.take()
            return _Literal(token.value)
        if token.kind == "str":
            self.take()
            return _Literal(token.value)
        if self.is_op("-"):
            self.take()
            number = self.peek()
            if number.kind != "num":
                raise self.fail(f"expected a number after '-', found {_describe(number)}")
            self.take()
            return _Literal(-number.value)
        if self.is_op("("):
            self.take()
            node = self.expr()
            self.expect_op(")", "to close the '(' at column " + str(token.column))
            return node
        if self.is_op("["):
            return self.list_(token)
        if token.kind == "name":
            word = token.value
            if word in ("true", "false"):
                self.take()
                return _Literal(word == "true")
            if word == "null":
                self.take()
                return _Literal(None)
            if word in _KEYWORDS:
                raise self.fail(f"expected a value, found the keyword {word!r}")
            return self.path()
        raise self.fail(f"expected a value, found {_describe(token)}")

    def list_(self, opening: _Token) -> _Node:
        self.take()
        items: list[_Node] = []
        self.depth += 1
        if self.depth > MAX_FILTER_DEPTH:
            raise self.fail(f"the expression nests deeper than {MAX_FILTER_DEPTH} levels")
        if not self.is_op("]"):
            items.append(self.expr())
            while self.is_op(","):
                self.take()
                items.append(self.expr())
        self.depth -= 1
        self.expect_op("]", f"to close the '[' at column {opening.column}")
        return _List(tuple(items))

    def path(self) -> _Node:
        root = self.take()
        if root.value not in _ROOTS:
            raise self.fail(
                f"unknown name {root.value!r}; a path starts with data, name, id or event "
                "(as in data.customer.tier)",
                root,
            )
        parts: list[str | int] = []
        while self.is_op(".", "["):
            if self.take().value == ".":
                part = self.peek()
                if part.kind != "name":
                    raise self.fail(f"expected a field name after '.', found {_describe(part)}")
                self.take()
                parts.append(part.value)
            else:
                sign = 1
                if self.is_op("-"):  # data.tags[-1]: from the end, as in Python
                    self.take()
                    sign = -1
                key = self.peek()
                if key.kind == "str" and sign == 1:
                    self.take()
                    parts.append(key.value)
                elif key.kind == "num" and isinstance(key.value, int):
                    self.take()
                    parts.append(sign * key.value)
                else:
                    raise self.fail(
                        f"expected an index or a quoted key inside '[', found {_describe(key)}"
                    )
                self.expect_op("]", "to close the index")
        if root.value == "event":
            # event.data.x is data.x; event.name is name.
            if not parts or parts[0] not in ("data", "name", "id"):
                raise self.fail("after 'event.' comes data, name or id", root)
            return _Path(str(parts[0]), tuple(parts[1:]))
        if root.value in ("name", "id") and parts:
            raise self.fail(f"{root.value!r} is a string and has no fields", root)
        return _Path(root.value, tuple(parts))


def _describe(token: _Token) -> str:
    if token.kind == "end":
        return "the end of the filter"
    if token.kind == "str":
        return f"the string {token.value!r}"
    return repr(str(token.value))


# -- evaluation ---------------------------------------------------------------------------


def _lookup(root: Any, parts: tuple[str | int, ...]) -> Any:
    value = root
    for part in parts:
        if isinstance(part, str) and isinstance(value, Mapping):
            value = value.get(part, _MISSING)
        elif isinstance(part, int) and isinstance(value, list | tuple):
            value = value[part] if -len(value) <= part < len(value) else _MISSING
        else:
            return _MISSING
        if value is _MISSING:
            return value
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _equal(a: Any, b: Any) -> bool:
    if a is _MISSING:
        a = None
    if b is _MISSING:
        b = None
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if _is_number(a) and _is_number(b):
        return bool(a == b)
    if type(a) is not type(b) and not (
        (isinstance(a, Mapping) and isinstance(b, Mapping))
        or (isinstance(a, list | tuple) and isinstance(b, list | tuple))
    ):
        return False
    if isinstance(a, Mapping):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    try:
        return bool(a == b)
    except Exception:  # a foreign object's __eq__; filters read JSON, so say no
        return False


def _order(op: str, a: Any, b: Any) -> bool:
    if not ((_is_number(a) and _is_number(b)) or (isinstance(a, str) and isinstance(b, str))):
        return False
    if op == "<":
        return bool(a < b)
    if op == "<=":
        return bool(a <= b)
    if op == ">":
        return bool(a > b)
    return bool(a >= b)


def _contains(item: Any, container: Any) -> bool:
    if isinstance(container, str):
        return isinstance(item, str) and item in container
    if isinstance(container, Mapping):
        return isinstance(item, str) and item in container
    if isinstance(container, list | tuple):
        return any(_equal(item, x) for x in container)
    return False


def _truthy(value: Any) -> bool:
    return value is True


@attrs.frozen
class Filter:
    """A parsed filter expression; :meth:`matches` evaluates it against an event.

    Guarantees: :meth:`matches` never raises and returns a ``bool``; the same text
    always parses to the same filter.
    """

    text: str
    _root: _Node = attrs.field(repr=False, alias="root")

    def matches(self, event: Any) -> bool:
        """Whether the event (anything with ``.data``, ``.name``, ``.id``) passes."""
        try:
            return _truthy(self._eval(self._root, event))
        except RecursionError:  # data nested past Python's stack; cannot match
            return False

    def matches_data(self, name: str, data: Any, event_id: str = "") -> bool:
        """Like :meth:`matches`, for an event not built yet (the store's emit path)."""
        return self.matches(_EventView(id=event_id, name=name, data=data))

    def _eval(self, node: _Node, event: Any) -> Any:
        if isinstance(node, _Literal):
            return node.value
        if isinstance(node, _Path):
            root = getattr(event, node.root, _MISSING)
            return _lookup(root, node.parts) if node.parts else root
        if isinstance(node, _List):
            return [self._eval(item, event) for item in node.items]
        if isinstance(node, _Not):
            return not _truthy(self._eval(node.operand, event))
        if isinstance(node, _Bool):
            if node.op == "and":
                return all(_truthy(self._eval(o, event)) for o in node.operands)
            return any(_truthy(self._eval(o, event)) for o in node.operands)
        left = self._eval(node.left, event)
        right = self._eval(node.right, event)
        op = node.op
        if op == "==":
            return _equal(left, right)
        if op == "!=":
            return not _equal(left, right)
        if op == "in":
            return _contains(left, right)
        if op == "not in":
            return not _contains(left, right)
        return _order(op, left, right)


@attrs.frozen
class _EventView:
    id: str
    name: str
    data: Any


@functools.lru_cache(maxsize=1024)
def compile_filter(text: str) -> Filter:
    """Parse ``text`` into a :class:`Filter`; raise :class:`~ironflow.errors.FilterError`.

    The error's message names the column of the problem and what was expected there.
    Nothing else is ever raised, whatever the text.
    """
    if not isinstance(text, str):
        raise FilterError(None, 1, f"a filter is a string, not {type(text).__name__}")
    if len(text) > MAX_FILTER_CHARS:
        raise FilterError(None, 1, f"a filter is at most {MAX_FILTER_CHARS} characters")
    return Filter(text, root=_Parser(text).parse())

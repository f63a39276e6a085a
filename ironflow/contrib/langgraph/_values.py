"""How a LangGraph value becomes JSON in an Ironflow record, and back. Never pickle.

A value that is plain JSON (str, int, finite float, bool, None, lists, dicts with str
keys) is stored as it is, ``{"json": value}``, so ``ironflow inspect`` and the HTTP API
show it readably. Anything else (LangChain messages, ``Send``, dataclasses, pydantic
models, tuples, sets, datetimes) goes through LangGraph's own ``JsonPlusSerializer``
with its pickle fallback off, as msgpack in base64: ``{"msgpack": "..."}``.

A value is checked when it is written, not when it is read back: one msgpack cannot
encode (an arbitrary object) fails at once with :class:`NotSerializableError` naming
the channel; one whose type the serializer's module allowlist would refuse to rebuild
fails the same way, naming the ``(module, name)`` to allow. Reading never imports a
module outside the allowlist.
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterable
from typing import Any

from langgraph.checkpoint.serde.base import SerializerProtocol
from langgraph.checkpoint.serde.event_hooks import SerdeEvent, register_serde_event_listener
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

from ironflow.errors import NotSerializableError
from ironflow.store._codec import NOT_JSON, exact_json

__all__ = ["EMPTY", "decode", "encode", "is_empty", "make_serializer"]

#: A channel listed in a checkpoint's new versions with no value (LangGraph's "empty").
EMPTY: dict[str, Any] = {"empty": True}

# The serializer reports a type it refused to rebuild through a process-wide listener;
# a thread that is checking a value collects the reports made on it, and only it.
_probe = threading.local()


def _on_serde_event(event: SerdeEvent) -> None:
    found: list[SerdeEvent] | None = getattr(_probe, "blocked", None)
    if found is not None and event.get("kind", "").endswith("blocked"):
        found.append(event)


register_serde_event_listener(_on_serde_event)


def make_serializer(allowed_modules: Iterable[tuple[str, ...] | type] = ()) -> JsonPlusSerializer:
    """LangGraph's serializer, strict: no pickle, and only its safe types plus these."""
    allowed = tuple(allowed_modules)
    return JsonPlusSerializer(pickle_fallback=False, allowed_msgpack_modules=allowed or None)


def encode(serde: SerializerProtocol, value: Any, what: str, path: str) -> dict[str, Any]:
    """``value`` as JSON for a record; raises NotSerializableError naming ``path``."""
    copy = exact_json(value)
    if copy is not NOT_JSON:
        return {"json": copy}
    try:
        kind, data = serde.dumps_typed(value)
    except Exception as exc:  # msgpack's TypeError for an object it cannot encode
        raise NotSerializableError(
            what,
            path,
            f"{type(value).__name__} cannot be encoded by LangGraph's serializer ({exc})",
            hint=(
                "Ironflow stores checkpoints without pickle: keep graph state to JSON "
                "values, LangChain messages, dataclasses, pydantic models and the other "
                "types LangGraph's JsonPlusSerializer encodes."
            ),
        ) from None
    if kind not in ("msgpack", "bytes", "bytearray"):
        raise NotSerializableError(
            what, path, f"the serializer produced {kind!r} data", hint="Ironflow never pickles."
        )
    if kind == "msgpack":
        _check_revivable(serde, (kind, data), what, path)
    return {kind: base64.b64encode(data).decode("ascii")}


def _check_revivable(
    serde: SerializerProtocol, typed: tuple[str, bytes], what: str, path: str
) -> None:
    """Refuse a value the serializer would not rebuild on read (a type not allowed)."""
    _probe.blocked = []
    try:
        serde.loads_typed(typed)
        blocked: list[SerdeEvent] = _probe.blocked
    finally:
        _probe.blocked = None
    if blocked:
        first = blocked[0]
        module, name = first.get("module", "?"), first.get("name", "?")
        raise NotSerializableError(
            what,
            path,
            f"{module}.{name} is outside the saver's module allowlist, so it would not be "
            "rebuilt when the checkpoint is read",
            hint=f"Allow it: IronflowSaver(..., allowed_modules=[({module!r}, {name!r})]).",
        )


def decode(serde: SerializerProtocol, stored: dict[str, Any]) -> Any:
    """The value :func:`encode` stored."""
    if "json" in stored:
        return stored["json"]
    for kind in ("msgpack", "bytes", "bytearray"):
        if kind in stored:
            return serde.loads_typed((kind, base64.b64decode(stored[kind])))
    raise ValueError(f"not a stored LangGraph value: {sorted(stored)}")


def is_empty(stored: dict[str, Any]) -> bool:
    return stored.get("empty") is True

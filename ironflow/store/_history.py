"""A run's history as one self-contained, versioned JSON document.

``ironflow run export`` writes it, ``ironflow run import`` loads it into another store,
``ironflow replay`` and ``ironflow.testing.replay_history`` run today's code against
it, and the golden histories under ``tests/golden/`` are such files. One format, read
and written only here::

    {"format": "ironflow.history", "version": 1, "exported_at": "2026-...Z",
     "run": {...}, "steps": [...], "memory": [...], "children": [{"run": ..., ...}]}

``run`` is the run record with its triggering event, ``steps`` every step record with
its failed tries, ``memory`` the entity stream events the run appended (its
``memory.append`` steps), ``children`` the same for each run it spawned, recursively.
Records are the store's own, unstructured by the store's converter, so times are Unix
seconds exactly as stored and an import gives back the records that were exported.

A reader refuses a document that is not a history, or one of a newer version than it
knows, naming the field at fault: a history is never half-read.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import cattrs

from ironflow.errors import InvalidInputError
from ironflow.store._base import Store
from ironflow.store._codec import converter
from ironflow.store._records import Event, Run, StepRecord, utc

__all__ = [
    "HISTORY_FORMAT",
    "HISTORY_VERSION",
    "History",
    "appended_events",
    "dump_history",
    "export_history",
    "history_from_json",
    "history_to_json",
    "load_history",
    "spawned_children",
]

#: The ``format`` field every history carries.
HISTORY_FORMAT = "ironflow.history"
#: The newest version this code reads and the one it writes.
HISTORY_VERSION = 1
#: Children nest this deep at most: deeper is a loop in a damaged store, not a real tree.
_MAX_DEPTH = 100


@attrs.frozen
class History:
    """One run as it was recorded: the run, its steps, its memory appends, its children."""

    run: Run
    steps: tuple[StepRecord, ...]
    #: The entity stream events the run appended with ``ctx.memory.append``, in order.
    memory: tuple[Event, ...] = ()
    #: A history for each run it spawned with ``ctx.spawn``, in spawn order.
    children: tuple[History, ...] = ()

    def walk(self) -> Iterator[History]:
        """This history and every descendant's, parents before children."""
        yield self
        for child in self.children:
            yield from child.walk()

    def step(self, step_id: str) -> StepRecord:
        """The step with this id; raises :class:`InvalidInputError` naming the ids it has."""
        for s in self.steps:
            if s.id == step_id:
                return s
        known = ", ".join(s.id for s in self.steps) or "none"
        raise InvalidInputError(f"run {self.run.id} has no step {step_id!r} (its steps: {known})")


def spawned_children(steps: list[StepRecord] | tuple[StepRecord, ...]) -> list[dict[str, str]]:
    """The runs a run spawned, from its ``spawn.<agent>`` steps, in spawn order:
    ``{"id", "agent", "step"}`` each."""
    out = []
    for step in steps:
        output = step.output
        if (
            step.id.startswith("spawn.")
            and step.status == "completed"
            and isinstance(output, dict)
            and isinstance(output.get("run_id"), str)
            and isinstance(output.get("agent"), str)
        ):
            out.append({"id": output["run_id"], "agent": output["agent"], "step": step.id})
    return out


def _is_append(step: StepRecord) -> bool:
    # memory.append, memory.append#2, ...; never memory.append.wait.
    return step.id == "memory.append" or step.id.startswith("memory.append#")


def appended_events(store: Store, steps: list[StepRecord] | tuple[StepRecord, ...]) -> list[Event]:
    """The stream events a run's completed ``memory.append`` steps appended, in step
    order; an event since deleted from its stream is left out."""
    out = []
    for step in steps:
        output = step.output
        if not (_is_append(step) and step.status == "completed" and isinstance(output, dict)):
            continue
        stream, version = output.get("stream"), output.get("version")
        if not isinstance(stream, str) or not isinstance(version, int):
            continue
        found = store.read_stream(stream, from_version=version, limit=1)
        if found and found[0].version == version:
            out.append(found[0])
    return out


def export_history(store: Store, run_id: str) -> History:
    """The history of ``run_id`` and of every run it spawned, read from ``store``.

    Raises :class:`~ironflow.errors.RunNotFoundError` for an unknown run. A child run
    pruned since is left out of ``children``.
    """
    return _export(store, run_id, 0)


def _export(store: Store, run_id: str, depth: int) -> History:
    from ironflow.errors import RunNotFoundError

    run = store.get_run(run_id)
    steps = tuple(store.get_steps(run_id))
    children = []
    if depth < _MAX_DEPTH:
        for child in spawned_children(steps):
            try:
                children.append(_export(store, child["id"], depth + 1))
            except RunNotFoundError:
                continue  # pruned: the parent's spawn step still says it existed
    return History(run, steps, tuple(appended_events(store, steps)), tuple(children))


def _body(history: History) -> dict[str, Any]:
    return {
        "run": converter.unstructure(history.run),
        "steps": [converter.unstructure(s) for s in history.steps],
        "memory": [converter.unstructure(e) for e in history.memory],
        "children": [_body(c) for c in history.children],
    }


def history_to_json(history: History, *, exported_at: float | None = None) -> dict[str, Any]:
    """The history as a JSON object, with its format header."""
    when = time.time() if exported_at is None else exported_at
    stamp = utc(when).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return {
        "format": HISTORY_FORMAT,
        "version": HISTORY_VERSION,
        "exported_at": stamp,
        **_body(history),
    }


def history_from_json(obj: Any, *, source: str = "history") -> History:
    """Read a history written by :func:`history_to_json` (any version up to ours).

    Raises :class:`~ironflow.errors.InvalidInputError` naming ``source`` and the first
    field that is wrong.
    """
    if not isinstance(obj, dict) or obj.get("format") != HISTORY_FORMAT:
        raise InvalidInputError(
            f"{source} is not an Ironflow history: expected a JSON object with "
            f'"format": "{HISTORY_FORMAT}" (write one with `ironflow run export RUN_ID`)'
        )
    version = obj.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise InvalidInputError(f'{source}: "version" must be a positive integer, not {version!r}')
    if version > HISTORY_VERSION:
        raise InvalidInputError(
            f"{source} is a version {version} history; this Ironflow reads versions up to "
            f"{HISTORY_VERSION}: upgrade ironflow to read it"
        )
    return _read_body(obj, source, "$", 0)


def _read_body(obj: Any, source: str, path: str, depth: int) -> History:
    if not isinstance(obj, dict):
        raise InvalidInputError(f"{source}: {path} must be a JSON object, not {_kind(obj)}")
    if depth > _MAX_DEPTH:
        raise InvalidInputError(f"{source}: children nest deeper than {_MAX_DEPTH} at {path}")
    for key, kind in (("run", dict), ("steps", list), ("memory", list), ("children", list)):
        if key == "run" and key not in obj:
            raise InvalidInputError(f"{source}: {path}.run is missing")
        if key in obj and not isinstance(obj[key], kind):
            want = "an object" if kind is dict else "an array"
            raise InvalidInputError(f"{source}: {path}.{key} must be {want}, not {_kind(obj[key])}")
    run = _structure(obj["run"], Run, source, f"{path}.run")
    steps = tuple(
        _structure(s, StepRecord, source, f"{path}.steps[{i}]")
        for i, s in enumerate(obj.get("steps", []))
    )
    for i, step in enumerate(steps):
        if step.run_id != run.id:
            raise InvalidInputError(
                f"{source}: {path}.steps[{i}].run_id is {step.run_id!r}, not the run's id "
                f"{run.id!r}"
            )
    positions = [s.position for s in steps]
    if positions != sorted(set(positions)):
        raise InvalidInputError(
            f"{source}: {path}.steps must be in position order, each position once "
            f"(found {positions})"
        )
    memory = tuple(
        _structure(e, Event, source, f"{path}.memory[{i}]")
        for i, e in enumerate(obj.get("memory", []))
    )
    children = tuple(
        _read_body(c, source, f"{path}.children[{i}]", depth + 1)
        for i, c in enumerate(obj.get("children", []))
    )
    for i, child in enumerate(children):
        if child.run.parent_id != run.id:
            raise InvalidInputError(
                f"{source}: {path}.children[{i}] is run {child.run.id}, whose parent_id is "
                f"{child.run.parent_id!r}, not {run.id!r}"
            )
    return History(run, steps, memory, children)


def _structure(value: Any, cls: type[Any], source: str, path: str) -> Any:
    try:
        return converter.structure(value, cls)
    except Exception as exc:
        problems = (
            cattrs.transform_error(exc, path=path)
            if isinstance(exc, cattrs.BaseValidationError)
            else [f"{exc} @ {path}"]
        )
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise InvalidInputError(f"{source}: {problems[0]}{more}") from None


def _kind(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", type(None): "null"}.get(
        type(value), type(value).__name__
    )


def dump_history(history: History, path: str | os.PathLike[str]) -> None:
    """Write the history to ``path`` as indented JSON (whole, or not at all)."""
    target = Path(path)
    text = json.dumps(history_to_json(history), indent=1, ensure_ascii=False, allow_nan=False)
    partial = target.with_name(f".{target.name}.partial")
    partial.write_text(text + "\n", encoding="utf-8")
    partial.replace(target)


def load_history(path: str | os.PathLike[str]) -> History:
    """Read a history file; raises :class:`InvalidInputError` naming the file and field."""
    source = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise InvalidInputError(f"cannot read the history {source}: {exc.strerror}") from None
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise InvalidInputError(
            f"{source} is not JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})"
        ) from None
    except (UnicodeDecodeError, RecursionError, ValueError) as exc:
        raise InvalidInputError(f"{source} is not readable JSON: {exc}") from None
    return history_from_json(obj, source=source)

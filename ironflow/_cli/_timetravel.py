"""``ironflow inspect RUN_ID --at STEP_ID|TIME``: a run as it stood at a moment.

The store keeps each step's record with its times, not every state a run passed
through, so the past is read back from the records:

- the steps: those recorded by then (ended at or before the moment; for a step id,
  the moment that step was recorded, so gathered siblings that finished first count);
- the status: the run's final one if it had finished by then; ``sleeping`` or
  ``waiting`` if a sleep, a wait, an approval or a child's result was pending then;
  else ``running``. It is said to be inferred;
- memory: the run's projection (named by its memory steps) at the log position
  reached by then (the last event appended at or before the moment, and at least the
  run's own appends so far), folded from the log with the projection's definition
  when ``--module`` gives it; without it, what the run appended and read by then.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
from collections.abc import Iterator
from typing import Any

from ironflow._cli._inspect import compact, inspect_lines
from ironflow.server._views import children_of, iso, run_with_steps_json
from ironflow.store import FINISHED, Run, StepRecord, Store

__all__ = ["cmd_inspect_at", "moment", "status_then"]

#: Step ids whose record the store writes when a suspension ends: between their start
#: and their end the run was suspended, not running.
_SLEEPS = ("sleep",)
_WAITS = ("wait.", "approve.")


def moment(at: str, run: Run, steps: list[StepRecord]) -> tuple[float, str | None]:
    """The moment ``--at`` names: (Unix seconds, the step id it named or None).

    A step id of the run means just after that step was recorded; otherwise a time,
    ISO 8601 (``2026-01-05T09:30:00Z``; without a zone, UTC) or ``+SECONDS`` after the
    run was created (the offsets ``inspect`` shows).
    """
    from ironflow._cli._common import Usage

    for step in steps:
        if step.id == at:
            return step.ended_at, step.id
    text = at.strip()
    when: float | None = None
    if text.startswith("+"):
        try:
            offset = float(text[1:].removesuffix("s"))
        except ValueError:
            offset = float("nan")
        if offset >= 0:
            when = run.created_at + offset
    else:
        try:
            parsed = _dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            parsed = None
        if parsed is not None:
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=_dt.UTC)
            when = parsed.timestamp()
    if when is None:
        ids = ", ".join(s.id for s in steps) or "none recorded"
        raise Usage(
            f"--at {at!r}: no step of run {run.id} has that id (its steps: {ids}), and it is "
            "not a time: give ISO 8601 like 2026-01-05T09:30:00Z, or +SECONDS after the "
            "run's start like +1.5"
        )
    if when < run.created_at:
        raise Usage(f"--at {at!r} is before run {run.id} was created ({iso(run.created_at)})")
    return when, None


def _suspending(step_id: str) -> str | None:
    """``sleeping`` or ``waiting`` for a step that suspends its run, else None."""
    base = step_id.split("#", 1)[0]
    if base in _SLEEPS:
        return "sleeping"
    if base.startswith(_WAITS) or (base.startswith("spawn.") and base.endswith(".result")):
        return "waiting"
    return None


def status_then(run: Run, steps: list[StepRecord], when: float) -> str:
    """The run's status at ``when``, inferred from its records (see the module doc)."""
    if run.status in FINISHED and when >= run.updated_at:
        return run.status
    for step in steps:
        kind = _suspending(step.id)
        if kind is not None and step.started_at <= when < step.ended_at:
            return kind
    return "running"


def _steps_then(steps: list[StepRecord], when: float) -> list[StepRecord]:
    return [s for s in steps if s.ended_at <= when]


def _memory_then(
    store: Store, steps: list[StepRecord], then: list[StepRecord], when: float, module: str | None
) -> dict[str, Any] | None:
    """The run's memory at ``when``: projection, position, and its state or what is known."""
    projection = None
    stream = None
    for step in steps:
        base = step.id.split("#", 1)[0]
        if base in ("memory.append.wait", "memory.state") and isinstance(step.input, dict):
            projection = step.input.get("projection") or projection
        if base == "memory.append" and isinstance(step.input, dict):
            stream = step.input.get("stream") or stream
    if projection is None and stream is None:
        return None
    appends = [
        s for s in then if s.id.split("#", 1)[0] == "memory.append" and isinstance(s.output, dict)
    ]
    own = max((int(s.output.get("seq", 0)) for s in appends), default=0)
    position = max(own, _log_position(store, when))
    out: dict[str, Any] = {
        "projection": projection,
        "stream": stream,
        "position": position,
        "appended": [s.input for s in appends],
    }
    reads = [s for s in then if s.id.split("#", 1)[0] == "memory.state"]
    if reads:
        out["last_read"] = {"step": reads[-1].id, "state": reads[-1].output}
    if projection is not None and module is not None:
        out["state"] = _fold(store, projection, position, module)
        out["shown"] = f"folded here from the log up to #{position} with {module}'s definition"
    else:
        out["state"] = None
        out["shown"] = (
            "not folded: pass --module MODULE (the module defining the projection) to fold "
            "the log up to this position with your projection's definition"
        )
    return out


def _log_position(store: Store, when: float) -> int:
    """The seq of the last log event appended at or before ``when`` (0 for none)."""
    position = 0
    after = 0
    while True:
        page = store.events(after_seq=after, limit=1000)
        for event in page:
            if event.ts > when:
                return position
            position = event.seq
        if len(page) < 1000:
            return position
        after = page[-1].seq


def _fold(store: Store, name: str, position: int, module: str) -> Any:
    from ironflow._agent._memory import fold_events, projections_in
    from ironflow._cli._common import Usage
    from ironflow._worker._loader import load_module

    defs = {d.name: d for d in projections_in(vars(load_module(module)))}
    defn = defs.get(name)
    if defn is None:
        others = f" (it defines: {', '.join(sorted(defs))})" if defs else ""
        raise Usage(f"module {module!r} defines no @projection named {name!r}{others}")
    parts: dict[str, Any] = {}
    after = 0
    while after < position:
        page = store.events(after_seq=after, limit=1000)
        events = [e for e in page if e.seq <= position]
        fold_events(defn, events, parts)
        if len(page) < 1000 or not events or events[-1].seq >= position:
            break
        after = page[-1].seq
    if defn.partitioned:
        return dict(parts)
    return parts.get("", defn.initial())


def cmd_inspect_at(args: argparse.Namespace) -> int:
    """``inspect --at``: print the run as it stood then (``--json`` as an object)."""
    from ironflow._cli._common import opened
    from ironflow._cli._runs import status_of

    with opened(args, create=False) as store:
        run = store.get_run(args.run_id)
        steps = store.get_steps(run.id)
        when, step_id = moment(args.at, run, steps)
        then = _steps_then(steps, when)
        memory = _memory_then(store, steps, then, when, args.module)
        children = [(c, status_of(store, c["id"])) for c in children_of(then)]
    status = status_then(run, steps, when)
    finished = status in FINISHED
    past = _as_of(run, then, status, finished)
    obj = run_with_steps_json(past, then)
    obj["orphaned"] = False  # who held it then is not recorded
    obj["at"] = {
        "time": iso(when),
        "step": step_id,
        "status_now": run.status,
        "steps_now": len(steps),
        "status_inferred": not finished,
    }
    obj["memory"] = memory
    if args.json:
        print(json.dumps(obj, indent=2, ensure_ascii=False))
        return 0
    print(_headline(run, when, step_id, status, len(then), len(steps)))
    print()
    for line in inspect_lines(past, then, None, obj, children, traceback=args.traceback):
        print(line)
    if memory is not None:
        print()
        for line in _memory_lines(memory):
            print(line)
    return 0


def _as_of(run: Run, then: list[StepRecord], status: str, finished: bool) -> Run:
    """The run record as it was: its status then, the attempt that recorded its latest
    step, and no outcome yet unless it had finished."""
    import attrs

    if finished:
        return run
    return attrs.evolve(
        run,
        status=status,  # type: ignore[arg-type]
        attempt=max((s.attempt for s in then), default=min(run.attempt, 1)),
        updated_at=max((s.ended_at for s in then), default=run.created_at),
        output=None,
        error=None,
        suspension=None,
        reruns=(),
    )


def _headline(run: Run, when: float, step_id: str | None, status: str, then: int, now: int) -> str:
    moment_text = f"just after step {step_id} was recorded" if step_id else "then"
    inferred = "" if status in FINISHED else " (inferred from the records)"
    return (
        f"as of {iso(when)}, {moment_text}: {status}{inferred}, {then} of {now} steps "
        f"recorded. Now: {run.status}."
    )


def _memory_lines(memory: dict[str, Any]) -> Iterator[str]:
    name = memory["projection"] or "(none)"
    where = f"stream {memory['stream']}, log position {memory['position']}"
    yield f"memory   projection {name}, {where}"
    for append in memory["appended"]:
        yield f"         appended {append.get('name')} {compact(append.get('data'), 80)}"
    if "last_read" in memory:
        read = memory["last_read"]
        yield f"         read at {read['step']}: {compact(read['state'], 80)}"
    if memory["state"] is not None:
        yield f"state    {compact(memory['state'], 100)}"
    yield f"         ({memory['shown']})"

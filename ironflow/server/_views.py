"""Runs and steps as JSON for people and programs: the CLI's --json and the HTTP API.

One rendering, so ``ironflow run list --json`` and ``GET /api/v1/runs`` agree field by
field. Times are ISO 8601 in UTC with milliseconds.
"""

from __future__ import annotations

import time
from typing import Any

from ironflow._agent._primitives import EVENT_WAIT_STEPS
from ironflow.store import ErrorInfo, Event, Lease, Run, StepRecord, StepTry, Suspension
from ironflow.store._history import spawned_children
from ironflow.store._liveness import process_alive
from ironflow.store._records import SUSPENDED, ProjectionState, ProjectionStatus, utc

__all__ = [
    "children_of",
    "event_json",
    "iso",
    "projection_json",
    "run_json",
    "run_with_steps_json",
    "runner_alive",
    "step_json",
    "step_output_json",
    "suspension_json",
]


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return utc(ts).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _error(err: ErrorInfo | None, *, traceback: bool = False) -> dict[str, Any] | None:
    if err is None:
        return None
    out: dict[str, Any] = {"type": err.type, "message": err.message, "step": err.step_id}
    if traceback:
        out["traceback"] = err.traceback
    return out


def orphaned(run: Run, lease: Lease | None, now: float) -> bool:
    """A running run whose holder is gone: lease lapsed, or a dead process on this host."""
    if run.status != "running":
        return False
    if lease is None or lease.expires_at < now:
        return True
    return process_alive(lease.worker) is False


def run_json(run: Run, lease: Lease | None = None, *, now: float | None = None) -> dict[str, Any]:
    """The run object of ``run list --json`` and ``GET /api/v1/runs``."""
    import time

    return {
        "id": run.id,
        "agent": run.agent,
        "status": run.status,
        "event": {
            "id": run.event.id,
            "name": run.event.name,
            "data": run.event.data,
            "ts": iso(run.event.ts),
        },
        "output": run.output,
        "error": _error(run.error),
        "attempt": run.attempt,
        "worker": lease.worker.id if lease is not None else None,
        "orphaned": orphaned(run, lease, time.time() if now is None else now),
        "cancel_requested": run.cancel_requested,
        "created_at": iso(run.created_at),
        "updated_at": iso(run.updated_at),
        "parent_id": run.parent_id,
        # The agent's code version when the run was created (@agent(version=...)).
        "version": run.version,
        # Each `run resume --from-step`: where it restarted and what the run had been.
        "reruns": [
            {
                "from_step": r.from_step,
                "position": r.position,
                "at": iso(r.at),
                "previous_status": r.previous_status,
                "previous_attempt": r.previous_attempt,
            }
            for r in run.reruns
        ],
        # A fork's origin (`ironflow run fork`), and the runs forked from this one.
        "forked_from": (
            None
            if run.forked_from is None
            else {
                "run_id": run.forked_from.run_id,
                "from_step": run.forked_from.from_step,
                "position": run.forked_from.position,
                "at": iso(run.forked_from.at),
            }
        ),
        "forks": list(run.forks),
        # What a sleeping or waiting run waits for; None for any other status.
        "suspension": suspension_json(run.suspension) if run.status in SUSPENDED else None,
    }


def suspension_json(s: Suspension | None) -> dict[str, Any] | None:
    """What a suspended run waits for, and until when."""
    if s is None:
        return None
    return {
        "kind": s.kind,
        "step": s.step_id,
        "position": s.position,
        "since": iso(s.since),
        "wake_at": iso(s.wake_at),
        "event": s.event,
        "match": s.match,
        "child_id": s.child_id,
        "tries": [_try_json(t) for t in s.tries],
    }


def _try_json(t: StepTry) -> dict[str, Any]:
    return {
        "error": _error(t.error, traceback=True),
        "started_at": iso(t.started_at),
        "ended_at": iso(t.ended_at),
    }


def children_of(steps: list[StepRecord]) -> list[dict[str, str]]:
    """The runs this run spawned, from its ``spawn.<agent>`` steps, in spawn order."""
    return spawned_children(steps)


def event_json(event: Event) -> dict[str, Any]:
    """An event of the log or of a stream, its time in ISO 8601 as everywhere in the views."""
    return {
        "id": event.id,
        "name": event.name,
        "data": event.data,
        "ts": iso(event.ts),
        "seq": event.seq,
        "stream": event.stream,
        "version": event.version,
    }


def step_output_json(step: StepRecord) -> Any:
    """A step's recorded output as the views show it.

    A wait for an event (``wait.<name>``, ``approve.<name>``) recorded the event it took,
    with its time as Unix seconds; shown here, like every time, in ISO 8601.
    """
    output = step.output
    if (
        step.id.startswith(EVENT_WAIT_STEPS)
        and isinstance(output, dict)
        and isinstance(output.get("ts"), int | float)
        and not isinstance(output.get("ts"), bool)
    ):
        return {**output, "ts": iso(output["ts"])}
    return output


def step_json(step: StepRecord) -> dict[str, Any]:
    return {
        "id": step.id,
        "position": step.position,
        "status": step.status,
        "input": step.input,
        "output": step_output_json(step),
        "error": _error(step.error, traceback=True),
        "attempt": step.attempt,
        "started_at": iso(step.started_at),
        "ended_at": iso(step.ended_at),
        "duration_ms": round((step.ended_at - step.started_at) * 1000, 3),
        # The failed tries before this outcome (a tool with retries).
        "tries": [_try_json(t) for t in step.tries or ()],
        # Which worker executed it (None when the store recorded it, as a wait ended).
        "worker": step.worker,
    }


def run_with_steps_json(
    run: Run, steps: list[StepRecord], lease: Lease | None = None
) -> dict[str, Any]:
    """The object of ``inspect --json`` and ``GET /api/v1/runs/{id}``."""
    out = run_json(run, lease)
    if run.error is not None:
        out["error"] = _error(run.error, traceback=True)
    out["steps"] = [step_json(s) for s in steps]
    out["children"] = children_of(steps)
    return out


def runner_alive(status: ProjectionStatus, now: float | None = None) -> bool:
    """Whether a live worker holds the projection's lease."""
    if status.runner is None:
        return False
    if status.runner_expires_at <= (time.time() if now is None else now):
        return False
    return process_alive(status.runner) is not False


def projection_json(state: ProjectionState) -> dict[str, Any]:
    """The object of ``GET /api/v1/projections/{name}`` and ``projection get --json``."""
    return {
        "name": state.name,
        "state": {
            "state": state.state,
            "position": state.position,
            "updated_at": iso(state.updated_at),
        },
    }

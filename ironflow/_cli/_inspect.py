"""``ironflow inspect RUN_ID``: a run and its step timeline, for a person.

Two counters appear and are never mixed up: a run's *attempt* (its Nth execution from
the top: the first, and one more for each takeover after a crash or drain, each
wake-up after a sleep, wait or retry backoff, each resume) and a step's *try* (the Nth
try of a ``@tool(retries=...)``). A failure shows the user's line that raised it;
``--traceback`` adds the whole traceback.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

from ironflow._pure._frames import user_frame
from ironflow.server._views import iso, orphaned, step_output_json
from ironflow.store import ErrorInfo, Lease, Run, StepRecord

__all__ = ["LEGEND", "compact", "inspect_lines", "status_text"]

LEGEND = (
    "attempt N: the run's Nth execution (a takeover after a crash or drain, a wake-up "
    "after a sleep, wait or retry backoff, or a resume starts one); "
    "try N: a retried step's Nth try"
)


def compact(value: Any, width: int = 100) -> str:
    """``value`` as one line of JSON, cut to ``width`` characters."""
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= width else text[: width - 3] + "..."


def status_text(run_obj: dict[str, Any]) -> str:
    """A run's status, with ``(orphaned)`` when its worker is gone."""
    status = str(run_obj["status"])
    return f"{status} (orphaned)" if run_obj.get("orphaned") else status


def inspect_lines(
    run: Run,
    steps: list[StepRecord],
    lease: Lease | None,
    obj: dict[str, Any],
    children: list[tuple[dict[str, str], str]],
    *,
    traceback: bool = False,
) -> Iterator[str]:
    """The lines ``ironflow inspect`` prints; ``obj`` is the run's JSON view."""
    yield f"run      {run.id}"
    yield f"agent    {run.agent}"
    yield f"status   {status_text(obj)}   attempt {run.attempt}"
    yield f"event    {run.event.name} {run.event.id} {compact(run.event.data)}"
    yield f"created  {iso(run.created_at)}   updated {iso(run.updated_at)}"
    if run.status == "completed":
        yield f"output   {compact(run.output)}"
    if run.error is not None:
        where = f" (at {run.error.step_id})" if run.error.step_id else ""
        yield f"error    {run.error.type}: {run.error.message}{where}"
        yield from _raised_at(run.error, "         ")
    if obj.get("worker") and run.status == "running":
        alive = "gone" if orphaned(run, lease, time.time()) else "alive"
        yield f"worker   {obj['worker']} ({alive})"
    if obj.get("suspension"):
        yield f"waiting  {waiting_for(obj['suspension'])}"
    if run.version is not None:
        yield f"version  {run.version}"
    for i, rerun in enumerate(run.reruns):
        label = "re-runs" if i == 0 else ""
        yield (
            f"{label:<8} from {rerun.from_step} (#{rerun.position}) at {iso(rerun.at)}, "
            f"after attempt {rerun.previous_attempt} ended {rerun.previous_status}"
        )
    if run.forked_from is not None:
        f = run.forked_from
        yield f"forked   from {f.run_id} at {f.from_step} (#{f.position}), {iso(f.at)}"
    for i, fork in enumerate(run.forks):
        yield f"{'forks' if i == 0 else '':<8} {fork}"
    if run.parent_id is not None:
        yield f"parent   {run.parent_id}"
    for i, (child, status) in enumerate(children):
        label = "children" if i == 0 else ""
        yield f"{label:<8} {child['id']} {child['agent']} ({status})"
    yield ""
    if not steps:
        yield "no steps recorded yet"
        return
    yield "steps"
    origin = run.created_at
    width = max(len(s.id) for s in steps)
    for s in steps:
        mark = "✓" if s.status == "completed" else "✗"
        took = (s.ended_at - s.started_at) * 1000
        tried = f", try {len(s.tries) + 1}" if s.tries else ""
        # None: the store recorded the step itself (a sleep, wait or child run ended).
        by = f"  worker {s.worker}" if s.worker else ""
        yield (
            f"  {mark} #{s.position:<3} {s.id.ljust(width)}  {s.status:<9}  "
            f"+{s.started_at - origin:7.3f}s  {took:9.1f} ms  attempt {s.attempt}{tried}{by}"
        )
        for n, failed in enumerate(s.tries or (), start=1):
            frame = user_frame(failed.error.traceback)
            at = f" (at {frame.describe()})" if frame else ""
            why = f"{failed.error.type}: {compact(failed.error.message, 80)}"
            yield f"      try {n} failed: {why}{at}"
        if s.status == "failed" and s.error is not None:
            yield f"      {s.error.type}: {s.error.message}"
            yield from _raised_at(s.error, "      ")
        else:
            yield f"      → {compact(step_output_json(s), 90)}"
    if run.attempt > 1 or any(s.tries for s in steps):
        yield ""
        yield LEGEND
    tracebacks = list(_tracebacks(run, steps))
    if traceback:
        for title, text in tracebacks:
            yield ""
            yield f"{title}:"
            yield text.rstrip("\n")
    elif tracebacks:
        yield ""
        yield f"`ironflow inspect {run.id} --traceback` shows the whole traceback"


def _raised_at(error: ErrorInfo, indent: str) -> Iterator[str]:
    frame = user_frame(error.traceback)
    if frame is not None:
        yield f"{indent}raised at {frame.describe()}"


def _tracebacks(run: Run, steps: list[StepRecord]) -> Iterator[tuple[str, str]]:
    """(title, traceback text) of each failure the run recorded, each text once."""
    found: list[tuple[str, ErrorInfo]] = []
    for s in steps:
        tries = enumerate(s.tries or (), start=1)
        found += [(f"traceback of {s.id}, try {n}", t.error) for n, t in tries]
        if s.status == "failed" and s.error is not None:
            found.append((f"traceback of {s.id}", s.error))
    if run.error is not None:
        found.append(("traceback of the run's error", run.error))
    seen: set[str] = set()
    for title, error in found:
        if error.traceback and error.traceback not in seen:
            seen.add(error.traceback)
            yield title, error.traceback


def waiting_for(s: dict[str, Any]) -> str:
    """One line on what a suspended run waits for."""
    until = f" until {s['wake_at']}" if s["wake_at"] else ""
    if s["kind"] == "sleep":
        return f"{s['step']}: sleeping{until}"
    if s["kind"] == "retry":
        last = s["tries"][-1]["error"] if s["tries"] else None
        why = f" after {last['type']}: {compact(last['message'], 60)}" if last else ""
        return f"{s['step']}: try {len(s['tries']) + 1} at {s['wake_at']}{why}"
    if s["kind"] == "child":
        return f"{s['step']}: child run {s['child_id']} to finish" + (
            f" (gives up at {s['wake_at']})" if s["wake_at"] else ""
        )
    match = f" matching {compact(s['match'], 60)}" if s["match"] else ""
    timeout = f" (times out at {s['wake_at']})" if s["wake_at"] else ""
    return f"{s['step']}: event {s['event']}{match}{timeout}"

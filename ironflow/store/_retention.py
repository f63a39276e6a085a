"""Retention: prune finished runs, and the log events nothing can need again.

Why prune keeps what it keeps. A finished run older than the cut-off goes, with its
step records and its entries in the flow-control indexes (cancel-on, concurrency).
An event of the log goes only when nothing can ask for it again: it is not on an
entity stream (the stream *is* the agents' memory), no registered projection
subscribes to its name (a rebuild folds the whole log) and every projection has
already passed it, no unfinished run started before it (a run waiting for an event
looks for one logged after its start), every run it started is gone, and it is not
the last event (its position numbers the next one). An event id is remembered as
long as its event is kept: emitting a pruned id again starts a new run.
"""

from __future__ import annotations

import re
import time
from collections.abc import Collection

from ironflow._pure._limits import MAX_DURATION
from ironflow.errors import InvalidInputError
from ironflow.store._backend import Backend, WriteTxn
from ironflow.store._checks import number
from ironflow.store._codec import decode_record
from ironflow.store._keys import u64
from ironflow.store._records import (
    FINISHED,
    EmitResult,
    Event,
    ProjectionStatus,
    PruneResult,
    Run,
)
from ironflow.store._runs import last_seq
from ironflow.store._triggers import trigger_matches
from ironflow.store._waits import name_key

__all__ = ["parse_age", "prune", "prune_statuses"]

#: Runs (or events) deleted per write transaction: small enough to keep each commit short.
_BATCH = 500
#: Event times come from the emitting process just before its commit; allow that much skew.
_CLOCK_SLACK = 300.0

_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)?\s*$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, None: 1}


def parse_age(text: str) -> float:
    """``30d``, ``12h``, ``90m``, ``45s``, ``2w`` or plain seconds, as seconds."""
    found = _AGE.match(text) if isinstance(text, str) else None
    if found is None:
        raise InvalidInputError(
            f"an age must be a number with a unit s, m, h, d or w (like 30d or 12h), not {text!r}"
        )
    return float(found.group(1)) * _UNIT[found.group(2)]


def prune_statuses(statuses: Collection[str] | None) -> frozenset[str]:
    """The statuses asked for, checked: only finished runs may ever be pruned."""
    if statuses is None:
        return FINISHED
    chosen = frozenset(statuses)
    wrong = chosen - FINISHED
    if wrong or not chosen:
        raise InvalidInputError(
            f"prune deletes only finished runs: statuses must be among {sorted(FINISHED)}, "
            f"not {sorted(wrong) or 'none'}"
        )
    return chosen


def _check_age(older_than: float) -> float:
    return number(older_than, "older_than (seconds)", 0.0, MAX_DURATION)


def prune(
    backend: Backend,
    *,
    older_than: float,
    statuses: Collection[str] | None = None,
    dry_run: bool = False,
) -> PruneResult:
    """Delete finished runs last updated more than ``older_than`` seconds ago.

    See the module docstring for what goes with them and what is always kept. Never
    deletes a run that is not finished, a run whose parent is unfinished, or a run
    with an unfinished child. With ``dry_run`` nothing is written; the counts say what
    would go. Deletes in batches, each its own durable transaction: an interrupted
    prune leaves a consistent store with part of the work done.
    """
    wanted = prune_statuses(statuses)
    cutoff = time.time() - _check_age(older_than)
    with backend.read() as txn:
        runs: list[Run] = [decode_record(raw, Run) for _, raw in txn.scan("runs")]
        projections = [decode_record(raw, ProjectionStatus) for _, raw in txn.scan("projections")]
    unfinished = {r.id for r in runs if r.status not in FINISHED}
    parent = {r.id: getattr(r, "parent_id", None) for r in runs}
    busy_parents = {parent[r] for r in unfinished if parent[r]}
    chosen = [
        r.id
        for r in runs
        if r.status in wanted
        and r.updated_at < cutoff
        and r.id not in busy_parents
        and parent[r.id] not in unfinished
    ]
    # The log position before which no unfinished run can look for an event.
    horizon = min(
        (
            min(r.event.seq, getattr(getattr(r, "suspension", None), "after_seq", r.event.seq))
            for r in runs
            if r.id in unfinished
        ),
        default=2**63,
    )
    del runs
    steps = _delete_runs(backend, chosen, wanted, dry_run)
    events = _delete_events(backend, projections, horizon, cutoff, set(chosen), dry_run)
    return PruneResult(runs=len(chosen), steps=steps, events=events, dry_run=dry_run)


def _delete_runs(
    backend: Backend, run_ids: list[str], wanted: frozenset[str], dry_run: bool
) -> int:
    indexed = _index_entries(backend, set(run_ids))
    steps = 0
    for start in range(0, len(run_ids), _BATCH):
        batch = run_ids[start : start + _BATCH]

        def op(txn: WriteTxn, batch: list[str] = batch) -> int:
            count = 0
            for run_id in batch:
                key = run_id.encode()
                raw = txn.get("runs", key)
                # Checked again inside the write: finished runs never change, but be sure.
                if raw is None or decode_record(raw, Run).status not in wanted:
                    continue
                step_keys = [k for k, _ in txn.scan("steps", prefix=key + b"\x00")]
                count += len(step_keys)
                if dry_run:
                    continue
                for step_key in step_keys:
                    txn.delete("steps", step_key)
                for spawn_key in [k for k, _ in txn.scan("spawns", prefix=key + b"\x00")]:
                    txn.delete("spawns", spawn_key)
                for table in ("ready", "leases", "cancels", "paused"):
                    txn.delete(table, key)
                for table, entry in indexed.get(run_id, ()):
                    txn.delete(table, entry)
                txn.delete("runs", key)
            return count

        if dry_run:
            with backend.read() as txn:
                steps += op(txn)  # type: ignore[arg-type]  # a dry run only reads
        else:
            steps += backend.write(op)
    return steps


def _index_entries(backend: Backend, run_ids: set[str]) -> dict[str, list[tuple[str, bytes]]]:
    """The flow-control index entries of these runs, found by one scan of each index.

    Both indexes end their keys with the run id. A finished run's entries are normally
    dropped on the way (its concurrency slot when it finishes, a cancel-on entry when
    a matching event comes or finds the run finished); these are what is left.
    """
    found: dict[str, list[tuple[str, bytes]]] = {}
    if not run_ids:
        return found
    with backend.read() as txn:
        for table in ("cancel_keys", "slots"):
            for entry, _ in txn.scan(table):
                run_id = entry.rsplit(b"\x00", 1)[-1].decode()
                if run_id in run_ids:
                    found.setdefault(run_id, []).append((table, entry))
    return found


def _delete_events(
    backend: Backend,
    projections: list[ProjectionStatus],
    horizon: int,
    cutoff: float,
    gone: set[str],
    dry_run: bool,
) -> int:
    limit = min([horizon, *(p.position + 1 for p in projections)])
    patterns = [pattern for p in projections for pattern in p.events]
    doomed: list[tuple[int, Event]] = []
    with backend.read() as txn:
        last = last_seq(txn)
        limit = min(limit, last)  # the last event numbers the next one: always kept
        for raw_seq, raw in txn.scan("events"):
            seq = int.from_bytes(raw_seq, "big")
            if seq >= limit:
                break
            event = decode_record(raw, Event)
            if event.ts >= cutoff + _CLOCK_SLACK:
                break
            if event.stream is not None or event.ts >= cutoff:
                continue
            if any(trigger_matches(p, event.name) for p in patterns):
                continue
            emitted = txn.get("event_ids", event.id.encode())
            run_ids = () if emitted is None else decode_record(emitted, EmitResult).run_ids
            if not run_ids:
                continue  # an event that started nothing is history, not a run's: kept
            if all(
                r in gone or (not dry_run and txn.get("runs", r.encode()) is None) for r in run_ids
            ):
                doomed.append((seq, event))
    if dry_run:
        return len(doomed)
    for start in range(0, len(doomed), _BATCH):
        batch = doomed[start : start + _BATCH]

        def op(txn: WriteTxn, batch: list[tuple[int, Event]] = batch) -> None:
            for seq, event in batch:
                txn.delete("events", u64(seq))
                emitted = txn.get("event_ids", event.id.encode())
                if emitted is not None and decode_record(emitted, EmitResult).seq == seq:
                    txn.delete("event_ids", event.id.encode())
                txn.delete("event_names", name_key(event.name) + b"\x00" + u64(seq))

        backend.write(op)
    return len(doomed)

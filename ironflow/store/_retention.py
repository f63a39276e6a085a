"""Retention for the embedded store: prune finished runs, compact the data file.

Why prune keeps what it keeps. A finished run older than the cut-off goes, with its
step records and its entries in the flow-control indexes (cancel-on, concurrency).
An event of the log goes only when nothing can ask for it again: it is not on an
entity stream (the stream *is* the agents' memory), no registered projection
subscribes to its name (a rebuild folds the whole log) and every projection has
already passed it, no unfinished run started before it (a run waiting for an event
looks for one logged after its start), every run it started is gone, and it is not
the last event (its position numbers the next one). An event id is remembered as
long as its event is kept: emitting a pruned id again starts a new run.

Why compaction is a copy. LMDB never shrinks its file; it reuses freed pages, so
under a steady workload with pruning the file stops growing, but it does not give
space back. ``compact`` writes a compacted copy with LMDB's own ``copy(compact=True)``,
checks it, and swaps it in with one atomic rename, holding the data directory's lock
file exclusively throughout, so it refuses to run while any process has it open.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import time
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lmdb

from ironflow.errors import InvalidInputError, StoreError, StoreLockedError
from ironflow.store._codec import decode_record
from ironflow.store._records import (
    FINISHED,
    EmitResult,
    Event,
    ProjectionStatus,
    PruneResult,
    Run,
)
from ironflow.store._triggers import trigger_matches

if TYPE_CHECKING:
    from ironflow.store._lmdb import LmdbStore

__all__ = ["compact", "parse_age", "prune", "prune_statuses"]

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
    if (
        not isinstance(older_than, int | float)
        or isinstance(older_than, bool)
        or not 0 <= older_than < 1e12
    ):
        raise InvalidInputError(f"older_than must be seconds from 0 up, not {older_than!r}")
    return float(older_than)


def _prefixed(txn: Any, db: Any, prefix: bytes) -> Iterator[bytes]:
    cursor = txn.cursor(db=db)
    if cursor.set_range(prefix):
        for key in cursor.iternext(values=False):
            if not key.startswith(prefix):
                break
            yield bytes(key)


def prune(
    store: LmdbStore,
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
    db = store._db
    with store._txn() as txn:
        runs: list[Run] = [decode_record(raw, Run) for _, raw in txn.cursor(db=db["runs"])]
        projections = [
            decode_record(raw, ProjectionStatus) for _, raw in txn.cursor(db=db["projections"])
        ]
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
    steps = _delete_runs(store, chosen, wanted, dry_run)
    events = _delete_events(store, projections, horizon, cutoff, set(chosen), dry_run)
    return PruneResult(runs=len(chosen), steps=steps, events=events, dry_run=dry_run)


def _delete_runs(
    store: LmdbStore, run_ids: list[str], wanted: frozenset[str], dry_run: bool
) -> int:
    db = store._db
    per_run = [db[n] for n in ("ready", "leases", "cancels", "paused") if n in db]
    indexed = _index_entries(store, set(run_ids))
    steps = 0
    for start in range(0, len(run_ids), _BATCH):
        batch = run_ids[start : start + _BATCH]

        def op(txn: Any, batch: list[str] = batch) -> int:
            count = 0
            for run_id in batch:
                key = run_id.encode()
                raw = txn.get(key, db=db["runs"])
                # Checked again inside the write: finished runs never change, but be sure.
                if raw is None or decode_record(raw, Run).status not in wanted:
                    continue
                step_keys = list(_prefixed(txn, db["steps"], key + b"\x00"))
                count += len(step_keys)
                if dry_run:
                    continue
                for step_key in step_keys:
                    txn.delete(step_key, db=db["steps"])
                if "spawns" in db:
                    for spawn_key in list(_prefixed(txn, db["spawns"], key + b"\x00")):
                        txn.delete(spawn_key, db=db["spawns"])
                for index in per_run:
                    txn.delete(key, db=index)
                for name, entry in indexed.get(run_id, ()):
                    txn.delete(entry, db=db[name])
                txn.delete(key, db=db["runs"])
            return count

        if dry_run:
            with store._txn() as txn:
                steps += op(txn)
        else:
            steps += store._write(op)
    return steps


def _index_entries(store: LmdbStore, run_ids: set[str]) -> dict[str, list[tuple[str, bytes]]]:
    """The flow-control index entries of these runs, found by one scan of each index.

    Both indexes end their keys with the run id. A finished run's entries are normally
    dropped on the way (its concurrency slot when it finishes, a cancel-on entry when
    a matching event comes or finds the run finished); these are what is left.
    """
    found: dict[str, list[tuple[str, bytes]]] = {}
    if not run_ids:
        return found
    db = store._db
    with store._txn() as txn:
        for name in ("cancel_keys", "slots"):
            if name not in db:
                continue
            for key in txn.cursor(db=db[name]).iternext(values=False):
                entry = bytes(key)
                run_id = entry.rsplit(b"\x00", 1)[-1].decode()
                if run_id in run_ids:
                    found.setdefault(run_id, []).append((name, entry))
    return found


def _delete_events(
    store: LmdbStore,
    projections: list[ProjectionStatus],
    horizon: int,
    cutoff: float,
    gone: set[str],
    dry_run: bool,
) -> int:
    db = store._db
    limit = min([horizon, *(p.position + 1 for p in projections)])
    patterns = [pattern for p in projections for pattern in p.events]
    doomed: list[tuple[int, Event]] = []
    with store._txn() as txn:
        cursor = txn.cursor(db=db["events"])
        last = int.from_bytes(cursor.key(), "big") if cursor.last() else 0
        limit = min(limit, last)  # the last event numbers the next one: always kept
        for raw_seq, raw in txn.cursor(db=db["events"]):
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
            emitted = txn.get(event.id.encode(), db=db["event_ids"])
            run_ids = () if emitted is None else decode_record(emitted, EmitResult).run_ids
            if not run_ids:
                continue  # an event that started nothing is history, not a run's: kept
            if all(
                r in gone or (not dry_run and txn.get(r.encode(), db=db["runs"]) is None)
                for r in run_ids
            ):
                doomed.append((seq, event))
    if dry_run:
        return len(doomed)
    for start in range(0, len(doomed), _BATCH):
        batch = doomed[start : start + _BATCH]

        def op(txn: Any, batch: list[tuple[int, Event]] = batch) -> None:
            for seq, event in batch:
                txn.delete(seq.to_bytes(8, "big"), db=db["events"])
                emitted = txn.get(event.id.encode(), db=db["event_ids"])
                if emitted is not None and decode_record(emitted, EmitResult).seq == seq:
                    txn.delete(event.id.encode(), db=db["event_ids"])
                if "event_names" in db:
                    txn.delete(_name_index_key(event.name, seq), db=db["event_names"])

        store._write(op)
    return len(doomed)


def _name_index_key(name: str, seq: int) -> bytes:
    # The (event name, seq) index of events that runs may wait for (see _waits.py).
    from ironflow.store import _waits  # type: ignore[attr-defined,unused-ignore]

    key: bytes = _waits.name_key(name) + b"\x00" + seq.to_bytes(8, "big")
    return key


# -- compaction -----------------------------------------------------------------------


@contextlib.contextmanager
def _exclusive(path: Path) -> Iterator[int]:
    """Hold the data directory's lock file exclusively, or refuse: someone has it open.

    Every process with the LMDB environment open holds a shared lock on ``lock.mdb``,
    so an exclusive one is free only when nobody does.
    """
    fd = os.open(path / "lock.mdb", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 0)
        except OSError:
            raise StoreLockedError(
                f"the data directory {path} is in use by another process (a worker, the "
                "server or a command): stop it, then run `ironflow store compact` again"
            ) from None
        yield fd
    finally:
        os.close(fd)  # closing releases the lock


def _db_names(env: Any) -> list[bytes]:
    with env.begin() as txn:
        return [bytes(k) for k in txn.cursor().iternext(values=False)]


def _entries(env: Any, names: list[bytes]) -> dict[bytes, int]:
    out = {}
    with env.begin() as txn:
        for name in names:
            out[name] = txn.stat(env.open_db(name, txn=txn, create=False))["entries"]
    return out


def compact(path: str | os.PathLike[str]) -> tuple[int, int]:
    """Rewrite the data file without its free pages; return its size before and after.

    Refuses (:class:`~ironflow.errors.StoreLockedError`) while any process has the data
    directory open. The copy is checked (every database holds as many entries as the
    original) before it replaces the original in one atomic rename; a crash at any
    point leaves either the old file or the new one, both complete.
    """
    path = Path(path)
    data = path / "data.mdb"
    if not data.is_file():
        raise StoreError(f"no Ironflow data directory at {path}: there is no data.mdb to compact")
    scratch = path / ".compact"
    with _exclusive(path):
        before = data.stat().st_size
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir()
        try:
            # lock=False: our own exclusive lock already keeps everyone else out.
            source = lmdb.open(str(path), readonly=True, lock=False, max_dbs=256)
            try:
                names = _db_names(source)
                expected = _entries(source, names)
                source.copy(str(scratch), compact=True)
            finally:
                source.close()
            copy = lmdb.open(str(scratch), readonly=True, lock=False, max_dbs=256)
            try:
                found = _entries(copy, names)
            finally:
                copy.close()
            if found != expected:
                raise StoreError(
                    f"the compacted copy of {path} does not match the original; nothing was "
                    "replaced (the original is untouched)"
                )
            fd = os.open(scratch / "data.mdb", os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(scratch / "data.mdb", data)
            dir_fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
            # Opening it here, while this process holds the lock exclusively, makes LMDB
            # reset the lock file's state for the new data file before anyone else uses it.
            lmdb.open(str(path), max_dbs=256).close()
        except lmdb.Error as exc:
            raise StoreError(f"cannot compact {path}: {exc}; the original is untouched") from exc
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return before, data.stat().st_size

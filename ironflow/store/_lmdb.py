"""LmdbStore: the embedded store, one LMDB environment in a data directory.

Why LMDB: a commit is one fsync'd copy-on-write of a few pages, readers never block
the writer, and several processes on a host share one environment safely through its
lock file. Our cost per step is then close to the disk's own commit cost.

Why group commit: concurrent runs in one process hand their writes to whichever
thread is committing next, so sixteen runs recording steps together pay for one
fsync, not sixteen, and each writer still returns only after its write is on disk.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
import threading
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import attrs
import lmdb

from ironflow._pure._ids import new_id
from ironflow._pure._trace import TraceContext, check_trace
from ironflow.errors import (
    ConcurrencyError,
    InvalidInputError,
    LeaseLostError,
    ProjectionNotFoundError,
    RunNotFoundError,
    StoreError,
    StoreFormatError,
    StoreLockedError,
)
from ironflow.store._codec import (
    RecordCodec,
    converter,
    decode_record,
    dumps,
    encode_record,
    event_data,
    loads,
    to_json_value,
)
from ironflow.store._faults import check_ours, guard, storage_error
from ironflow.store._flowctl import FLOW_DBS, FlowControl
from ironflow.store._flowspec import Rerun
from ironflow.store._liveness import process_alive
from ironflow.store._records import (
    DELETED_EVENT,
    FINISHED,
    SUSPENDED,
    AgentSpec,
    EmitResult,
    ErrorInfo,
    Event,
    Lease,
    LeasedRun,
    ProjectionLease,
    ProjectionSpec,
    ProjectionState,
    ProjectionStatus,
    ProjectionWrite,
    PruneResult,
    Run,
    RunStatus,
    StepAck,
    StepRecord,
    SuspendResult,
    Suspension,
    WorkerInfo,
)
from ironflow.store._triggers import starts
from ironflow.store._waits import (
    checked_suspension,
    child_wait_key,
    data_matches,
    event_wait_prefix,
    index_keys,
    micros,
    name_key,
    timer_micros,
)

__all__ = ["FORMAT_VERSION", "LmdbStore"]

#: Bumped whenever the on-disk layout changes; a store refuses any other version.
FORMAT_VERSION = 1

T = TypeVar("T")

_DBS = (
    "meta",
    "events",
    "event_ids",
    "runs",
    "ready",
    "leases",
    "steps",
    "agents",
    "cancels",
    # Entity streams: (stream, version) -> seq; stream -> version; (stream, key) -> seq.
    "streams",
    "stream_heads",
    "stream_keys",
    # Projections: name -> status; (name, partition) -> state JSON; name -> lease.
    "projections",
    "projection_parts",
    "projection_leases",
    # Suspended runs (see _waits.py): (wake time, run) -> b""; what ends a wait -> b"";
    # (parent, step id) -> child run id; (event name, seq) -> b"" to find past events.
    "timers",
    "waits",
    "spawns",
    "event_names",
    # Flow control (see _flowctl.py): slots, debounces, cancel-on, crons, pauses.
    *FLOW_DBS,
)
_INITIAL_MAP = 1 << 30
#: How often wait_for_run looks again for a run finished by another process.
_FINISH_RECHECK = 0.1


def _u64(n: int) -> bytes:
    return n.to_bytes(8, "big")


def _step_key(run_id: str, position: int) -> bytes:
    return run_id.encode() + b"\x00" + position.to_bytes(4, "big")


def _run_key(run_id: str) -> bytes:
    """The key of a run id given by a user; an id no run can have is simply not found."""
    key = run_id.encode() if isinstance(run_id, str) else b""
    if not key or len(key) > 200 or b"\x00" in key:
        raise RunNotFoundError(str(run_id))
    return key


def _stream_key(stream_id: str) -> bytes:
    key = stream_id.encode() if isinstance(stream_id, str) else b""
    if not key or len(key) > 200 or b"\x00" in key:
        raise InvalidInputError(
            f"a stream id must be a string of 1 to 200 bytes without NUL, not {stream_id!r}"
        )
    return key


def _projection_key(name: str) -> bytes:
    """The key of a projection name given by a user; an impossible name is simply not found."""
    key = name.encode() if isinstance(name, str) else b""
    if not key or len(key) > 200 or b"\x00" in key:
        raise ProjectionNotFoundError(str(name))
    return key


def _partition_key(name: str, partition: str) -> bytes:
    part = partition.encode() if isinstance(partition, str) else b"\x00"
    if b"\x00" in part or len(part) > 250:
        raise InvalidInputError(
            f"projection {name!r}: a partition key must be a string of at most 250 bytes "
            f"without NUL, not {partition!r}; make partition_by return such a string"
        )
    return name.encode() + b"\x00" + part


_STEPS = RecordCodec(StepRecord)
_decode_step = _STEPS.decode

#: How deep a cancellation follows child runs of child runs.
_MAX_SPAWN_DEPTH = 100


def _ending(run: Run, s: Suspension, now: float, *, output: Any) -> StepRecord:
    """The completed record of a suspended step, written by the store as its wait ends."""
    return StepRecord(
        run_id=run.id,
        position=s.position,
        id=s.step_id,
        status="completed",
        input=s.input,
        output=output,
        started_at=s.since,
        ended_at=now,
        attempt=run.attempt,
    )


def _failing(run: Run, s: Suspension, now: float, error: ErrorInfo) -> StepRecord:
    return attrs.evolve(
        _ending(run, s, now, output=None),
        status="failed",
        error=attrs.evolve(error, step_id=s.step_id),
    )


def _timed_out(run: Run, s: Suspension, now: float) -> StepRecord:
    """The record of a sleep that ended, or of a wait whose time ran out."""
    if s.kind == "child":
        waited = "" if s.wake_at is None else f" within {max(0.0, s.wake_at - s.since):g}s"
        return _failing(
            run,
            s,
            now,
            ErrorInfo(
                type="StepTimeoutError",
                message=f"child run {s.child_id} did not finish{waited}",
            ),
        )
    # A sleep returns None; a wait for an event that timed out returns None too.
    return _ending(run, s, now, output=None)


def _child_ending(run: Run, s: Suspension, child: Run, now: float) -> StepRecord:
    """The record of a wait for a child run that has finished: its output or its error."""
    if child.status == "completed":
        return _ending(run, s, now, output=child.output)
    error = child.error or ErrorInfo(type="Cancelled", message="the run was cancelled")
    return _failing(
        run,
        s,
        now,
        ErrorInfo(
            type=error.type,
            message=f"child run {child.id} ({child.agent}) {child.status}: {error.message}",
        ),
    )


@functools.lru_cache(maxsize=4096)
def _lease_holder(raw: bytes) -> tuple[str, int]:
    """The worker id and attempt of an encoded lease; cached, as every step checks it."""
    lease = decode_record(raw, Lease)
    return lease.worker.id, lease.attempt


@attrs.define
class _Op:
    fn: Callable[[Any], Any]
    done: bool = False
    result: Any = None
    error: BaseException | None = None


class _GroupCommitter:
    """Leader-based group commit: one thread commits everyone's queued writes at once.

    Each op runs inside the shared write transaction and must validate before it
    writes: an op that raises has written nothing, so the others still commit.
    """

    def __init__(self, store: LmdbStore) -> None:
        self._store = store
        self._cv = threading.Condition()
        self._queue: list[_Op] = []
        self._leading = False

    def submit(self, fn: Callable[[Any], T]) -> T:
        op = _Op(fn)
        with self._cv:
            self._queue.append(op)
            while self._leading and not op.done:
                self._cv.wait()
            if not op.done:
                self._leading = True
                batch, self._queue = self._queue, []
        if not op.done:
            try:
                self._commit(batch)
            finally:
                with self._cv:
                    self._leading = False
                    self._cv.notify_all()
        if op.error is not None:
            raise op.error
        return op.result  # type: ignore[no-any-return]

    def _commit(self, batch: list[_Op]) -> None:
        watch = self._store.commit_observer
        started = time.perf_counter() if watch is not None else 0.0
        try:
            for _ in range(64):
                try:
                    with self._store._txn(write=True) as txn:
                        for op in batch:
                            try:
                                op.result = op.fn(txn)
                                op.error = None
                            except lmdb.MapFullError:
                                raise
                            except Exception as exc:  # the op wrote nothing; see class docstring
                                op.error = exc
                    break
                except lmdb.MapFullError:
                    self._store._grow()
            else:
                raise StoreError(
                    f"the data directory {self._store.path} is full even after "
                    "growing its map 64 times"
                )
        except BaseException as exc:
            # The transaction did not commit: every op in the batch failed, and each
            # waiting thread must hear so rather than read a result that was never written.
            failure: BaseException = exc
            if isinstance(exc, lmdb.Error):
                failure = StoreError(
                    f"a write to the data directory {self._store.path} failed: {exc}. Check "
                    "free disk space and permissions; nothing of this write was stored."
                )
            elif not isinstance(exc, Exception):
                failure = StoreError(f"a write was interrupted: {exc!r}")
            for op in batch:
                op.result = None
                op.error = failure
                op.done = True
            if not isinstance(exc, Exception):
                raise
            return
        if watch is not None:
            watch(time.perf_counter() - started, len(batch))
        for op in batch:
            op.done = True


class LmdbStore:
    """The embedded store. Safe to share between threads, and between processes on a host.

    Guarantees: every write method returns after its transaction is fsync'd (unless
    ``sync=False``, meant for throwaway tests); the map grows on demand instead of
    failing when it is full.

    ``clock`` is the time source of durable timers (sleeps, wait timeouts, retry
    backoff): tests pass a fake clock to let a seven-day sleep end at once.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        sync: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(path)
        self._clock = clock
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreLockedError(
                f"cannot create the data directory {self.path}: {exc.strerror}. "
                "Pick another with --data-dir or IRONFLOW_DATA_DIR."
            ) from exc
        data_file = self.path / "data.mdb"
        map_size = max(_INITIAL_MAP, data_file.stat().st_size * 2 if data_file.exists() else 0)
        try:
            self._env = lmdb.open(
                str(self.path),
                map_size=map_size,
                max_dbs=len(_DBS) + 8,
                max_readers=1024,
                sync=sync,
                metasync=sync,
                readahead=False,
            )
        except lmdb.Error as exc:
            raise storage_error(self.path, exc) from exc
        # Readers and the map resize exclude each other: LMDB may only resize a map
        # while this process has no transaction open.
        self._resize_lock = threading.Condition()
        self._readers = 0
        self._resizing = False
        self._closed = False
        try:
            check_ours(self._env, self.path, _DBS)
        except BaseException:
            self._env.close()
            raise
        self._db = {name: self._env.open_db(name.encode()) for name in _DBS}
        self._flow = FlowControl(self._db, self._clock)
        self._committer = _GroupCommitter(self)
        #: Told each commit's seconds (from the transaction's start to its fsync) and how
        #: many writes it carried; for metrics. None: nothing is timed.
        self.commit_observer: Callable[[float, int], None] | None = None
        self._work = threading.Condition()
        # Signalled when a projection advances, with a count so a waiter misses nothing.
        self._advanced = threading.Condition()
        self._advances = 0
        try:
            self._check_format()
        except BaseException:
            # A refused directory must not stay open: the caller may open another.
            self._closed = True
            self._env.close()
            raise

    # -- plumbing -------------------------------------------------------------------

    @contextlib.contextmanager
    def _txn(self, *, write: bool = False) -> Iterator[Any]:
        if self._closed:
            raise StoreError(f"the store at {self.path} is closed")
        for _ in range(8):
            with self._resize_lock:
                while self._resizing:
                    self._resize_lock.wait()
                self._readers += 1
            resized = False
            try:
                try:
                    txn = self._env.begin(write=write)
                except lmdb.MapResizedError:
                    resized = True
                except lmdb.Error as exc:
                    raise StoreError(f"cannot read the data directory {self.path}: {exc}") from exc
                if not resized:
                    with txn:
                        yield txn
                    return
            finally:
                with self._resize_lock:
                    self._readers -= 1
                    self._resize_lock.notify_all()
            # Another process grew the map. LMDB allows adopting its size only while this
            # process has no transaction open, so do it as exclusively as a resize.
            self._resize(0)
        raise StoreError(f"the data directory {self.path} keeps being resized; try again")

    def _resize(self, size: int) -> None:
        """Set the map size (0: adopt the size on disk) with no transaction open here."""
        with self._resize_lock:
            while self._resizing:
                self._resize_lock.wait()
            self._resizing = True
            try:
                while self._readers > 0:
                    self._resize_lock.wait()
                self._env.set_mapsize(size)
            finally:
                self._resizing = False
                self._resize_lock.notify_all()

    def _grow(self) -> None:
        # The committer's own transaction has ended when this is called.
        self._resize(self._env.info()["map_size"] * 2)

    def _write(self, fn: Callable[[Any], T]) -> T:
        return self._committer.submit(fn)

    def _notify(self) -> None:
        with self._work:
            self._work.notify_all()

    def _check_format(self) -> None:
        def op(txn: Any) -> int:
            raw = txn.get(b"format_version", db=self._db["meta"])
            if raw is None:
                txn.put(b"format_version", str(FORMAT_VERSION).encode(), db=self._db["meta"])
                return FORMAT_VERSION
            return int(raw)

        try:
            version = self._write(op)
        except ValueError as exc:
            raise StoreFormatError(
                f"{self.path} holds an unreadable format marker; it is not an Ironflow data "
                "directory or it is damaged"
            ) from exc
        if version != FORMAT_VERSION:
            raise StoreFormatError(
                f"{self.path} was written in storage format {version}; this Ironflow reads "
                f"format {FORMAT_VERSION}. Use the Ironflow version that wrote it, or point "
                "--data-dir at a new directory."
            )

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._env.close()

    def __enter__(self) -> LmdbStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- agents and events ------------------------------------------------------------

    def register_agents(self, agents: Sequence[AgentSpec]) -> None:
        encoded = [(a.id.encode(), encode_record(a)) for a in agents]

        def op(txn: Any) -> None:
            for (key, value), spec in zip(encoded, agents, strict=True):
                if txn.get(key, db=self._db["agents"]) != value:
                    txn.put(key, value, db=self._db["agents"])
                self._flow.registered(txn, spec)

        self._write(op)

    def agents(self) -> list[AgentSpec]:
        with self._txn() as txn:
            return [decode_record(v, AgentSpec) for _, v in txn.cursor(db=self._db["agents"])]

    def emit(
        self, name: str, data: Any, *, id: str | None = None, trace: TraceContext | None = None
    ) -> EmitResult:
        if not isinstance(name, str) or not name or len(name) > 200:
            raise InvalidInputError(f"an event name must be 1 to 200 characters, not {name!r}")
        if id is not None and (not isinstance(id, str) or not id or len(id.encode()) > 200):
            raise InvalidInputError(f"an event id must be a string of 1 to 200 bytes, not {id!r}")
        check_trace(trace, f"emit {name!r}")
        data = event_data(data, f"event {name!r} data")
        now = time.time()

        def op(txn: Any) -> EmitResult:
            return self._emit_in(txn, name, data, id, now, trace=trace)

        result = self._write(op)
        # Runners of projections wait for new events too, not only for new runs.
        self._notify()
        return result

    def _emit_in(
        self,
        txn: Any,
        name: str,
        data: Any,
        id: str | None,
        now: float,
        *,
        stream: str | None = None,
        version: int = 0,
        trace: TraceContext | None = None,
    ) -> EmitResult:
        """Append an event and create its runs inside the caller's write transaction."""
        if id is not None:
            seen = txn.get(id.encode(), db=self._db["event_ids"])
            if seen is not None:
                prior = decode_record(seen, EmitResult)
                return attrs.evolve(prior, created=False)
        cursor = txn.cursor(db=self._db["events"])
        seq = int.from_bytes(cursor.key(), "big") + 1 if cursor.last() else 1
        event = Event(
            id=id or new_id("evt_"),
            name=name,
            data=data,
            ts=now,
            seq=seq,
            stream=stream,
            version=version,
            trace=trace,
        )
        run_ids = []
        for _, raw in txn.cursor(db=self._db["agents"]):
            spec = decode_record(raw, AgentSpec)
            if starts(spec.id, spec.triggers, name) and self._flow.admits(spec, event):
                # A pending run, a queued one (no concurrency slot), or a debounced burst's.
                run_id = self._flow.new_run(txn, spec, event, now)
                if run_id is not None:
                    run_ids.append(run_id)
        result = EmitResult(event_id=event.id, run_ids=tuple(run_ids), created=True, seq=seq)
        txn.put(_u64(seq), encode_record(event), db=self._db["events"])
        txn.put(event.id.encode(), encode_record(result), db=self._db["event_ids"])
        txn.put(name_key(name) + b"\x00" + _u64(seq), b"", db=self._db["event_names"])
        # Runs waiting for this event take it in this same transaction: none can miss it.
        self._resolve_event_waits(txn, event, now)
        self._flow.cancel_matching(txn, event, now, self._cancel_at)
        return result

    def _cancel_at(self, txn: Any, run_id: str, now: float) -> None:
        self._cancel_in(txn, run_id, now, depth=0)

    def events(self, *, after_seq: int = 0, limit: int = 1000) -> list[Event]:
        """Events of the log after position ``after_seq``, oldest first."""
        out: list[Event] = []
        with self._txn() as txn:
            cursor = txn.cursor(db=self._db["events"])
            if not cursor.set_range(_u64(after_seq + 1)):
                return out
            for _, raw in cursor:
                out.append(decode_record(raw, Event))
                if len(out) >= limit:
                    break
        return out

    # -- leasing ---------------------------------------------------------------------

    def _candidates(
        self, txn: Any, worker: WorkerInfo, agents: Collection[str], limit: int, now: float
    ) -> list[str]:
        found: list[str] = []
        wanted = {a.encode() for a in agents}
        taken: dict[tuple[bytes, str], int] = {}
        for key, agent in txn.cursor(db=self._db["ready"]):
            if agent in wanted:
                # Oldest first; a run whose key has no free slot waits, queued.
                if self._flow.is_paused(txn, key) or not self._flow.slot_free(
                    txn, key, agent, taken
                ):
                    continue
                found.append(key.decode())
                if len(found) >= limit:
                    return found
        for key, raw in txn.cursor(db=self._db["leases"]):
            lease = decode_record(raw, Lease)
            if lease.expires_at > now and (
                lease.worker.id == worker.id or process_alive(lease.worker) is not False
            ):
                continue
            run_raw = txn.get(key, db=self._db["runs"])
            if run_raw is None or decode_record(run_raw, Run).agent not in agents:
                continue
            found.append(key.decode())
            if len(found) >= limit:
                break
        return found

    def lease_runs(
        self, worker: WorkerInfo, agents: Collection[str], *, limit: int, ttl: float
    ) -> list[LeasedRun]:
        if limit <= 0 or not agents:
            return []
        now = time.time()
        timers_now = self._clock()
        # An idle poll costs a read transaction, not an fsync'd write.
        with self._txn() as txn:
            if (
                not self._candidates(txn, worker, agents, limit, now)
                and not self._timers_due(txn, timers_now)
                and not self._flow.due(txn, timers_now)
            ):
                return []

        def op(txn: Any) -> list[LeasedRun]:
            # Due timers first: a run whose sleep ended is pending from here on.
            self._fire_timers(txn, timers_now)
            # Due debounced runs and cron ticks: one transaction fires each tick once.
            cursor = txn.cursor(db=self._db["events"])
            self._flow.fire(
                txn, timers_now, int.from_bytes(cursor.key(), "big") if cursor.last() else 0
            )
            leased = []
            for run_id in self._candidates(txn, worker, agents, limit, now):
                key = run_id.encode()
                run = decode_record(txn.get(key, db=self._db["runs"]), Run)
                run = attrs.evolve(run, status="running", attempt=run.attempt + 1, updated_at=now)
                # An orphan still has its dead or lapsed holder's lease: a takeover.
                prior = txn.get(key, db=self._db["leases"])
                lease = Lease(
                    run_id=run_id, worker=worker, expires_at=now + ttl, attempt=run.attempt
                )
                txn.put(key, encode_record(run), db=self._db["runs"])
                txn.delete(key, db=self._db["ready"])
                txn.put(key, encode_record(lease), db=self._db["leases"])
                leased.append(
                    LeasedRun(
                        run=run,
                        steps=tuple(self._steps_in(txn, run_id)),
                        lease=lease,
                        taken_from=None if prior is None else decode_record(prior, Lease).worker,
                    )
                )
            return leased

        return self._write(op)

    def wait_for_run(self, run_id: str, *, timeout: float) -> Run:
        deadline = time.monotonic() + timeout
        while True:
            run = self.get_run(run_id)
            remaining = deadline - time.monotonic()
            if run.status in FINISHED or remaining <= 0:
                return run
            # A finish in this process wakes us; one by a worker in another process
            # signals nothing here, so look again after a short while.
            with self._work:
                self._work.wait(min(remaining, _FINISH_RECHECK))

    def wait_for_work(self, timeout: float) -> None:
        with self._work:
            self._work.wait(timeout)

    def heartbeat(self, worker: WorkerInfo, run_ids: Collection[str], *, ttl: float) -> set[str]:
        if not run_ids:
            return set()
        ids = list(run_ids)

        def op(txn: Any) -> set[str]:
            held = set()
            expires = time.time() + ttl
            for run_id in ids:
                raw = txn.get(run_id.encode(), db=self._db["leases"])
                if raw is None:
                    continue
                lease = decode_record(raw, Lease)
                if lease.worker.id == worker.id:
                    lease = attrs.evolve(lease, expires_at=expires)
                    txn.put(run_id.encode(), encode_record(lease), db=self._db["leases"])
                    held.add(run_id)
            return held

        return self._write(op)

    def _check_holder(self, txn: Any, worker: WorkerInfo, run_id: str, attempt: int) -> None:
        """Fencing: raise unless ``worker`` holds the run in that attempt.

        The attempt matters when one worker lost a run and later leased it again: the
        execution of the old attempt must not write into the new one's history, nor
        finish, release, suspend or spawn for it.
        """
        raw = txn.get(run_id.encode(), db=self._db["leases"])
        holder, held_attempt = _lease_holder(bytes(raw)) if raw is not None else ("", 0)
        if holder != worker.id or held_attempt not in (0, attempt):
            raise LeaseLostError(
                f"worker {worker.id} no longer holds run {run_id}: its lease expired and "
                "another worker took the run over (raise the lease TTL if steps block for long)"
            )

    # -- steps and run completion ----------------------------------------------------

    def record_step(self, worker: WorkerInfo, step: StepRecord) -> StepAck:
        key = _step_key(step.run_id, step.position)
        value = _STEPS.encode(step)

        def op(txn: Any) -> StepAck:
            self._check_holder(txn, worker, step.run_id, step.attempt)
            txn.put(key, value, db=self._db["steps"], overwrite=False)
            run_key = step.run_id.encode()
            return StepAck(
                txn.get(run_key, db=self._db["cancels"]) is not None,
                pause_requested=self._flow.is_paused(txn, run_key),
            )

        return self._write(op)

    def finish_run(
        self,
        worker: WorkerInfo,
        run_id: str,
        *,
        status: str,
        output: Any = None,
        error: ErrorInfo | None = None,
        attempt: int,
    ) -> Run:
        if status not in FINISHED:
            raise InvalidInputError(
                f"finish_run: status must be one of {sorted(FINISHED)}, not {status!r}"
            )
        output = to_json_value(output, f"run {run_id} output", "output")

        def op(txn: Any) -> Run:
            self._check_holder(txn, worker, run_id, attempt)
            key = run_id.encode()
            run = decode_record(txn.get(key, db=self._db["runs"]), Run)
            run = attrs.evolve(
                run,
                status=status,  # type: ignore[arg-type]  # checked against FINISHED above
                output=output,
                error=error,
                updated_at=time.time(),
            )
            txn.put(key, encode_record(run), db=self._db["runs"])
            txn.delete(key, db=self._db["leases"])
            txn.delete(key, db=self._db["cancels"])
            self._flow.finished(txn, run)
            self._finished_in(txn, run)
            return run

        run = self._write(op)
        self._notify()
        return run

    def release_run(self, worker: WorkerInfo, run_id: str, *, attempt: int) -> None:
        def op(txn: Any) -> None:
            self._check_holder(txn, worker, run_id, attempt)
            key = run_id.encode()
            run = decode_record(txn.get(key, db=self._db["runs"]), Run)
            # A run paused while it ran stops here: it waits for `run resume`.
            status: RunStatus = "paused" if self._flow.is_paused(txn, key) else "pending"
            run = attrs.evolve(run, status=status, updated_at=time.time())
            txn.put(key, encode_record(run), db=self._db["runs"])
            txn.delete(key, db=self._db["leases"])
            if status == "pending":
                txn.put(key, run.agent.encode(), db=self._db["ready"])

        self._write(op)
        self._notify()

    def request_cancel(self, run_id: str) -> Run:
        key = _run_key(run_id)

        def op(txn: Any) -> Run:
            if txn.get(key, db=self._db["runs"]) is None:
                raise RunNotFoundError(run_id)
            return self._cancel_in(txn, run_id, time.time(), depth=0)

        run = self._write(op)
        # A parent waiting for this run, now cancelled, is pending again.
        self._notify()
        return run

    def pause_run(self, run_id: str) -> Run:
        key = _run_key(run_id)

        def op(txn: Any) -> Run:
            raw = txn.get(key, db=self._db["runs"])
            if raw is None:
                raise RunNotFoundError(run_id)
            run = decode_record(raw, Run)
            if run.status in FINISHED or run.status == "paused":
                return run
            txn.put(key, b"", db=self._db["paused"])
            if txn.get(key, db=self._db["ready"]) is not None:
                txn.delete(key, db=self._db["ready"])
                run = attrs.evolve(run, status="paused", updated_at=time.time())
                txn.put(key, encode_record(run), db=self._db["runs"])
            # Running: told by its next record_step. Sleeping, waiting or debouncing: it
            # is skipped when it becomes pending, until resumed.
            return run

        return self._write(op)

    def resume_run(self, run_id: str, *, from_step: str | None = None) -> Run:
        key = _run_key(run_id)

        def op(txn: Any) -> Run:
            raw = txn.get(key, db=self._db["runs"])
            if raw is None:
                raise RunNotFoundError(run_id)
            run = decode_record(raw, Run)
            now = time.time()
            if from_step is not None:
                return self._rerun_in(txn, run, from_step, now)
            txn.delete(key, db=self._db["paused"])
            if run.status == "paused":
                run = attrs.evolve(run, status="pending", updated_at=now)
                txn.put(key, encode_record(run), db=self._db["runs"])
                txn.put(key, run.agent.encode(), db=self._db["ready"])
            return run

        run = self._write(op)
        self._notify()
        return run

    def _rerun_in(self, txn: Any, run: Run, from_step: str, now: float) -> Run:
        """Drop the records from ``from_step`` on and make the finished run pending."""
        if run.status not in FINISHED:
            raise InvalidInputError(
                f"run {run.id} is {run.status}; --from-step re-runs a finished run "
                "(completed, failed or cancelled): wait for it, or cancel it first"
            )
        steps = self._steps_in(txn, run.id)
        position = next((s.position for s in steps if s.id == from_step), None)
        if position is None:
            known = ", ".join(s.id for s in steps[:20]) or "none"
            raise InvalidInputError(
                f"run {run.id} has no step {from_step!r}; its steps are: {known}"
            )
        for s in steps:
            if s.position >= position:
                txn.delete(_step_key(run.id, s.position), db=self._db["steps"])
        key = run.id.encode()
        txn.delete(key, db=self._db["paused"])
        txn.delete(key, db=self._db["cancels"])
        rerun = Rerun(
            from_step=from_step,
            position=position,
            at=now,
            previous_status=run.status,
            previous_attempt=run.attempt,
        )
        run = attrs.evolve(
            run,
            status="pending",
            output=None,
            error=None,
            cancel_requested=False,
            suspension=None,
            updated_at=now,
            reruns=(*run.reruns, rerun),
        )
        txn.put(key, encode_record(run), db=self._db["runs"])
        txn.put(key, run.agent.encode(), db=self._db["ready"])
        return run

    def _cancel_in(self, txn: Any, run_id: str, now: float, *, depth: int) -> Run:
        """Cancel one run and, below it, its unfinished children, in the caller's txn."""
        key = run_id.encode()
        raw = txn.get(key, db=self._db["runs"])
        if raw is None:
            raise RunNotFoundError(run_id)
        run = decode_record(raw, Run)
        if run.status in FINISHED:
            return run
        if run.status in ("pending", "queued", "paused"):
            run = attrs.evolve(run, status="cancelled", cancel_requested=True, updated_at=now)
            txn.delete(key, db=self._db["ready"])
            self._flow.finished(txn, run)
            self._flow.forget(txn, run_id)
        elif run.status in SUSPENDED:
            # Nothing executes a suspended run: it is cancelled now, its timer and wait gone,
            # and with them its concurrency slot and any pause request.
            self._unindex(txn, run)
            run = attrs.evolve(run, status="cancelled", cancel_requested=True, updated_at=now)
            self._flow.finished(txn, run)
        else:
            run = attrs.evolve(run, cancel_requested=True, updated_at=now)
            txn.put(key, b"1", db=self._db["cancels"])
        txn.put(key, encode_record(run), db=self._db["runs"])
        if run.status == "cancelled":
            self._finished_in(txn, run)
        if depth < _MAX_SPAWN_DEPTH:
            for child_id in self._children_in(txn, run_id):
                self._cancel_in(txn, child_id, now, depth=depth + 1)
        return run

    # -- suspended runs and child runs ---------------------------------------------------

    def suspend_run(
        self, worker: WorkerInfo, run_id: str, suspension: Suspension, *, attempt: int
    ) -> SuspendResult:
        s = checked_suspension(suspension)

        def op(txn: Any) -> SuspendResult:
            self._check_holder(txn, worker, run_id, attempt)
            key = run_id.encode()
            # A retried request whose first reply was lost, or a wait already over.
            done = txn.get(_step_key(run_id, s.position), db=self._db["steps"])
            if done is not None:
                return SuspendResult(suspended=False, step=_decode_step(done))
            if txn.get(key, db=self._db["cancels"]) is not None:
                return SuspendResult(suspended=False, cancel_requested=True)
            run = decode_record(txn.get(key, db=self._db["runs"]), Run)
            now = self._clock()
            wake_at = s.wake_at
            if wake_at is None and s.wake_in is not None:
                wake_at = now + s.wake_in
            stored = attrs.evolve(s, since=s.since or now, wake_at=wake_at, wake_in=None)
            step = self._already_over(txn, run, stored, now)
            if step is not None:
                txn.put(_step_key(run_id, s.position), encode_record(step), db=self._db["steps"])
                return SuspendResult(suspended=False, step=step)
            status: RunStatus = "waiting" if s.kind in ("event", "child") else "sleeping"
            run = attrs.evolve(run, status=status, suspension=stored, updated_at=time.time())
            txn.put(key, encode_record(run), db=self._db["runs"])
            txn.delete(key, db=self._db["leases"])
            for db, index_key in zip(("timers", "waits"), index_keys(run_id, stored), strict=True):
                if index_key is not None:
                    txn.put(index_key, b"", db=self._db[db])
            return SuspendResult(suspended=True)

        return self._write(op)

    def spawn_run(
        self,
        worker: WorkerInfo,
        parent_id: str,
        step_id: str,
        agent: str,
        data: Any,
        *,
        attempt: int,
        trace: TraceContext | None = None,
    ) -> Run:
        if not isinstance(agent, str) or not agent or len(agent.encode()) > 200:
            raise InvalidInputError(f"spawn_run: an agent id must be 1 to 200 bytes, not {agent!r}")
        if not isinstance(step_id, str) or not step_id or len(step_id.encode()) > 200:
            raise InvalidInputError(f"spawn_run: a step id must be 1 to 200 bytes, not {step_id!r}")
        check_trace(trace, f"spawn_run of {agent!r}")
        data = event_data(data, f"spawn of {agent!r} data")
        spawn_key = _run_key(parent_id) + b"\x00" + step_id.encode()

        def op(txn: Any) -> Run:
            self._check_holder(txn, worker, parent_id, attempt)
            seen = txn.get(spawn_key, db=self._db["spawns"])
            if seen is not None:
                return decode_record(txn.get(seen, db=self._db["runs"]), Run)
            now = time.time()
            cursor = txn.cursor(db=self._db["events"])
            head = int.from_bytes(cursor.key(), "big") if cursor.last() else 0
            event = Event(
                id=new_id("evt_"), name=f"spawn.{agent}", data=data, ts=now, seq=head, trace=trace
            )
            # A parent being cancelled starts no new work: its child is born cancelled.
            cancelled = txn.get(parent_id.encode(), db=self._db["cancels"]) is not None
            run = Run(
                id=new_id("run_"),
                agent=agent,
                status="cancelled" if cancelled else "pending",
                event=event,
                created_at=now,
                updated_at=now,
                cancel_requested=cancelled,
                parent_id=parent_id,
            )
            key = run.id.encode()
            txn.put(key, encode_record(run), db=self._db["runs"])
            if not cancelled:
                txn.put(key, agent.encode(), db=self._db["ready"])
            txn.put(spawn_key, key, db=self._db["spawns"])
            return run

        run = self._write(op)
        self._notify()
        return run

    def _children_in(self, txn: Any, run_id: str) -> list[str]:
        prefix = run_id.encode() + b"\x00"
        cursor = txn.cursor(db=self._db["spawns"])
        out = []
        if cursor.set_range(prefix):
            for key, child in cursor:
                if not key.startswith(prefix):
                    break
                out.append(bytes(child).decode())
        return out

    def _already_over(self, txn: Any, run: Run, s: Suspension, now: float) -> StepRecord | None:
        """The step's record if what it waits for has happened already, else None."""
        if s.kind == "event":
            event = self._past_event(txn, s)
            if event is not None:
                return _ending(run, s, now, output=converter.unstructure(event))
        elif s.kind == "child" and s.child_id is not None:
            raw = txn.get(s.child_id.encode(), db=self._db["runs"])
            if raw is not None:
                child = decode_record(raw, Run)
                if child.status in FINISHED:
                    return _child_ending(run, s, child, now)
        if s.kind != "retry" and s.wake_at is not None and s.wake_at <= now:
            return _timed_out(run, s, now)
        return None

    def _past_event(self, txn: Any, s: Suspension) -> Event | None:
        """The first event of the log after ``s.after_seq`` that the wait would take."""
        assert s.event is not None
        prefix = name_key(s.event) + b"\x00"
        cursor = txn.cursor(db=self._db["event_names"])
        if not cursor.set_range(prefix + _u64(s.after_seq + 1)):
            return None
        skip = set(s.skip)
        for key, _ in cursor:
            if not key.startswith(prefix) or len(key) != len(prefix) + 8:
                break
            seq = int.from_bytes(key[-8:], "big")
            if seq in skip:
                continue
            event = decode_record(txn.get(key[-8:], db=self._db["events"]), Event)
            if event.name == s.event and data_matches(event.data, s.match):
                return event
        return None

    def _resume(self, txn: Any, run: Run, step: StepRecord | None, now: float) -> None:
        """Make a suspended run pending again, writing the record that ends its wait."""
        self._unindex(txn, run)
        key = run.id.encode()
        if step is not None:
            txn.put(_step_key(run.id, step.position), encode_record(step), db=self._db["steps"])
        run = attrs.evolve(run, status="pending", updated_at=time.time())
        txn.put(key, encode_record(run), db=self._db["runs"])
        txn.put(key, run.agent.encode(), db=self._db["ready"])

    def _unindex(self, txn: Any, run: Run) -> None:
        if run.suspension is None:
            return
        timer, wait = index_keys(run.id, run.suspension)
        if timer is not None:
            txn.delete(timer, db=self._db["timers"])
        if wait is not None:
            txn.delete(wait, db=self._db["waits"])

    def _suspended(self, txn: Any, run_id: str) -> Run | None:
        raw = txn.get(run_id.encode(), db=self._db["runs"])
        if raw is None:
            return None
        run = decode_record(raw, Run)
        if run.status not in SUSPENDED or run.suspension is None:
            return None
        return run

    def _resolve_event_waits(self, txn: Any, event: Event, now: float) -> None:
        prefix = event_wait_prefix(event.name)
        cursor = txn.cursor(db=self._db["waits"])
        waiting: list[str] = []
        if cursor.set_range(prefix):
            for key, _ in cursor:
                if not key.startswith(prefix):
                    break
                waiting.append(bytes(key[len(prefix) :]).decode())
        for run_id in waiting:
            run = self._suspended(txn, run_id)
            if run is None:
                continue
            s = run.suspension
            assert s is not None
            if (
                s.kind == "event"
                and s.event == event.name
                and event.seq > s.after_seq
                and event.seq not in s.skip
                and data_matches(event.data, s.match)
            ):
                step = _ending(run, s, now, output=converter.unstructure(event))
                self._resume(txn, run, step, now)

    def _finished_in(self, txn: Any, run: Run) -> None:
        """A run just finished: its parent, if waiting for it, takes its result now."""
        if run.parent_id is None:
            return
        if txn.get(child_wait_key(run.id, run.parent_id), db=self._db["waits"]) is None:
            return
        parent = self._suspended(txn, run.parent_id)
        if parent is None:
            return
        s = parent.suspension
        assert s is not None
        if s.kind == "child" and s.child_id == run.id:
            now = self._clock()
            self._resume(txn, parent, _child_ending(parent, s, run, now), now)

    def _timers_due(self, txn: Any, now: float) -> bool:
        cursor = txn.cursor(db=self._db["timers"])
        return bool(cursor.first()) and timer_micros(cursor.key()) <= micros(now)

    def _fire_timers(self, txn: Any, now: float, *, limit: int = 1000) -> None:
        """End the suspensions whose time has come (at most ``limit`` per transaction)."""
        horizon = micros(now)
        due: list[bytes] = []
        for key, _ in txn.cursor(db=self._db["timers"]):
            if timer_micros(key) > horizon or len(due) >= limit:
                break
            due.append(bytes(key))
        for key in due:
            txn.delete(key, db=self._db["timers"])
            run = self._suspended(txn, key[8:].decode())
            if run is None:
                continue
            s = run.suspension
            assert s is not None
            step = None
            if s.kind != "retry" and s.wake_at is not None and micros(s.wake_at) <= horizon:
                step = _timed_out(run, s, now)
            # Else the run's deadline woke it: no record, the engine fails it at this step.
            self._resume(txn, run, step, now)

    # -- entity streams ------------------------------------------------------------------

    def append_to_stream(
        self,
        stream_id: str,
        name: str,
        data: Any,
        *,
        expected_version: int | None = None,
        idempotency_key: str | None = None,
    ) -> Event:
        stream_key = _stream_key(stream_id)
        if not isinstance(name, str) or not name or len(name) > 200:
            raise InvalidInputError(f"an event name must be 1 to 200 characters, not {name!r}")
        if expected_version is not None and (
            type(expected_version) is not int or expected_version < 0
        ):
            raise InvalidInputError(
                f"expected_version must be a version number (0 for a new stream), "
                f"not {expected_version!r}"
            )
        idem: bytes | None = None
        if idempotency_key is not None:
            raw_key = idempotency_key.encode() if isinstance(idempotency_key, str) else b""
            if not raw_key or len(raw_key) > 200:
                raise InvalidInputError(
                    f"an idempotency key must be a string of 1 to 200 bytes, "
                    f"not {idempotency_key!r}"
                )
            idem = stream_key + b"\x00" + raw_key
        data = to_json_value(data, f"stream {stream_id!r} event {name!r} data", "data")
        now = time.time()

        def op(txn: Any) -> Event:
            if idem is not None:
                seen = txn.get(idem, db=self._db["stream_keys"])
                if seen is not None:
                    return decode_record(txn.get(seen, db=self._db["events"]), Event)
            head = txn.get(stream_key, db=self._db["stream_heads"])
            current = int.from_bytes(head, "big") if head is not None else 0
            if expected_version is not None and expected_version != current:
                raise ConcurrencyError(
                    f"stream {stream_id!r} is at version {current}, not the expected "
                    f"{expected_version}: another writer appended first; read the stream "
                    "again and retry",
                    expected=expected_version,
                    actual=current,
                )
            version = current + 1
            result = self._emit_in(txn, name, data, None, now, stream=stream_id, version=version)
            seq = _u64(result.seq)
            txn.put(stream_key + b"\x00" + _u64(version), seq, db=self._db["streams"])
            txn.put(stream_key, _u64(version), db=self._db["stream_heads"])
            if idem is not None:
                txn.put(idem, seq, db=self._db["stream_keys"])
            return decode_record(txn.get(seq, db=self._db["events"]), Event)

        event = self._write(op)
        self._notify()
        return event

    def read_stream(
        self, stream_id: str, *, from_version: int = 0, limit: int = 1000
    ) -> list[Event]:
        prefix = _stream_key(stream_id) + b"\x00"
        out: list[Event] = []
        with self._txn() as txn:
            cursor = txn.cursor(db=self._db["streams"])
            if not cursor.set_range(prefix + _u64(max(from_version, 0))):
                return out
            for key, seq in cursor:
                if not key.startswith(prefix) or len(out) >= limit:
                    break
                out.append(decode_record(txn.get(seq, db=self._db["events"]), Event))
        return out

    def delete_stream_events(
        self, stream_id: str, versions: Collection[int] | None = None
    ) -> int:
        stream_key = _stream_key(stream_id)
        wanted: frozenset[int] | None = None
        if versions is not None:
            if isinstance(versions, str | bytes) or not all(
                type(v) is int and v >= 1 for v in versions
            ):
                raise InvalidInputError(
                    f"versions must be stream versions (integers from 1), not {versions!r}"
                )
            wanted = frozenset(versions)
            if not wanted:
                return 0
        prefix = stream_key + b"\x00"

        def op(txn: Any) -> int:
            doomed: list[tuple[bytes, bytes]] = []
            remaining = 0
            cursor = txn.cursor(db=self._db["streams"])
            if cursor.set_range(prefix):
                for key, seq in cursor:
                    if not key.startswith(prefix):
                        break
                    if wanted is None or int.from_bytes(key[-8:], "big") in wanted:
                        doomed.append((bytes(key), bytes(seq)))
                    else:
                        remaining += 1
            if not doomed:
                return 0
            gone = {seq for _, seq in doomed}
            log = txn.cursor(db=self._db["events"])
            newest = bytes(log.key()) if log.last() else b""
            for key, seq in doomed:
                txn.delete(key, db=self._db["streams"])
                event = decode_record(txn.get(seq, db=self._db["events"]), Event)
                txn.delete(event.id.encode(), db=self._db["event_ids"])
                txn.delete(name_key(event.name) + b"\x00" + seq, db=self._db["event_names"])
                if seq == newest:
                    # The newest event numbers the next one: a tombstone keeps its
                    # position, so no reader that passed it ever sees the number reused.
                    tombstone = Event(id=event.id, name=DELETED_EVENT, data=None, ts=event.ts)
                    tombstone = attrs.evolve(tombstone, seq=event.seq)
                    txn.put(seq, encode_record(tombstone), db=self._db["events"])
                else:
                    txn.delete(seq, db=self._db["events"])
            keys = txn.cursor(db=self._db["stream_keys"])
            stale = []
            if keys.set_range(prefix):
                for key, seq in keys:
                    if not key.startswith(prefix):
                        break
                    if bytes(seq) in gone:
                        stale.append(bytes(key))
            for key in stale:
                txn.delete(key, db=self._db["stream_keys"])
            if remaining == 0:
                # Nothing left: the stream is as new, and its next append is version 1.
                txn.delete(stream_key, db=self._db["stream_heads"])
            return len(doomed)

        return self._write(op)

    # -- projections ---------------------------------------------------------------------

    def register_projections(self, specs: Sequence[ProjectionSpec]) -> None:
        checked = []
        for spec in specs:
            if not isinstance(spec.name, str) or not spec.name or len(spec.name.encode()) > 200:
                raise InvalidInputError(f"a projection name must be 1 to 200 bytes: {spec.name!r}")
            initial = to_json_value(
                spec.initial_state, f"projection {spec.name!r} initial_state", "initial_state"
            )
            checked.append((_projection_key(spec.name), attrs.evolve(spec, initial_state=initial)))

        def op(txn: Any) -> None:
            for key, spec in checked:
                raw = txn.get(key, db=self._db["projections"])
                shape = (tuple(spec.events), spec.partitioned, spec.initial_state)
                if raw is None:
                    status = ProjectionStatus(
                        name=spec.name,
                        events=shape[0],
                        partitioned=spec.partitioned,
                        initial_state=spec.initial_state,
                    )
                else:
                    old = decode_record(raw, ProjectionStatus)
                    status = attrs.evolve(
                        old,
                        events=shape[0],
                        partitioned=spec.partitioned,
                        initial_state=spec.initial_state,
                    )
                    # State folded under another definition no longer matches this one.
                    if (old.events, old.partitioned, old.initial_state) != shape and (
                        old.position > 0
                    ):
                        status = attrs.evolve(
                            status, rebuild_requested=max(old.rebuild_requested, old.rebuilt) + 1
                        )
                value = encode_record(status)
                if raw != value:
                    txn.put(key, value, db=self._db["projections"])

        self._write(op)
        self._notify()

    def _projection_in(self, txn: Any, name: str) -> ProjectionStatus:
        key = _projection_key(name)
        raw = txn.get(key, db=self._db["projections"])
        if raw is None:
            known = [k.decode() for k, _ in txn.cursor(db=self._db["projections"])]
            raise ProjectionNotFoundError(name, known)
        status = decode_record(raw, ProjectionStatus)
        lease_raw = txn.get(key, db=self._db["projection_leases"])
        if lease_raw is not None:
            lease = decode_record(lease_raw, ProjectionLease)
            status = attrs.evolve(status, runner=lease.worker, runner_expires_at=lease.expires_at)
        return status

    def list_projections(self) -> list[ProjectionStatus]:
        with self._txn() as txn:
            names = [k.decode() for k, _ in txn.cursor(db=self._db["projections"])]
            return [self._projection_in(txn, name) for name in names]

    def projection_status(self, name: str) -> ProjectionStatus:
        with self._txn() as txn:
            return self._projection_in(txn, name)

    def get_projection(
        self, name: str, *, partitions: Collection[str] | None = None
    ) -> ProjectionState:
        with self._txn() as txn:
            status = self._projection_in(txn, name)
            prefix = name.encode() + b"\x00"
            db = self._db["projection_parts"]
            state: Any
            if not status.partitioned:
                raw = txn.get(prefix, db=db)
                state = status.initial_state if raw is None else loads(raw)
            elif partitions is None:
                state = {}
                cursor = txn.cursor(db=db)
                if cursor.set_range(prefix):
                    for key, raw in cursor:
                        if not key.startswith(prefix):
                            break
                        state[key[len(prefix) :].decode()] = loads(raw)
            else:
                state = {}
                for part in partitions:
                    if not isinstance(part, str) or "\x00" in part:
                        continue
                    raw = txn.get(prefix + part.encode(), db=db)
                    if raw is not None:
                        state[part] = loads(raw)
        return ProjectionState(
            name=status.name,
            state=state,
            position=status.position,
            updated_at=status.updated_at,
            partitioned=status.partitioned,
        )

    def _projection_free(self, txn: Any, key: bytes, worker: WorkerInfo, now: float) -> bool:
        raw = txn.get(key, db=self._db["projection_leases"])
        if raw is None:
            return True
        lease = decode_record(raw, ProjectionLease)
        return (
            lease.worker.id == worker.id
            or lease.expires_at <= now
            or process_alive(lease.worker) is False
        )

    def lease_projection(self, worker: WorkerInfo, name: str, *, ttl: float) -> bool:
        key = _projection_key(name)
        now = time.time()
        # Polling a projection someone else serves costs a read transaction, not an fsync.
        with self._txn() as txn:
            self._projection_in(txn, name)
            if not self._projection_free(txn, key, worker, now):
                return False
        lease = encode_record(ProjectionLease(name=name, worker=worker, expires_at=now + ttl))

        def op(txn: Any) -> bool:
            if not self._projection_free(txn, key, worker, now):
                return False
            txn.put(key, lease, db=self._db["projection_leases"])
            return True

        return self._write(op)

    def release_projection(self, worker: WorkerInfo, name: str) -> None:
        key = _projection_key(name)

        def op(txn: Any) -> None:
            raw = txn.get(key, db=self._db["projection_leases"])
            if raw is not None and decode_record(raw, ProjectionLease).worker.id == worker.id:
                txn.delete(key, db=self._db["projection_leases"])

        self._write(op)
        self._notify()

    def write_projection(self, worker: WorkerInfo, write: ProjectionWrite) -> ProjectionStatus:
        name = write.name
        key = _projection_key(name)
        if write.to_position < write.from_position:
            raise InvalidInputError(
                f"projection {name!r}: a write cannot move from position "
                f"{write.from_position} back to {write.to_position}"
            )
        encoded = [
            (_partition_key(name, part), dumps(state, f"projection {name!r} state"))
            for part, state in write.partitions.items()
        ]
        prefix = key + b"\x00"
        now = time.time()

        def op(txn: Any) -> ProjectionStatus:
            status = self._projection_in(txn, name)
            if status.runner is None or status.runner.id != worker.id:
                raise LeaseLostError(
                    f"worker {worker.id} does not hold projection {name!r}: another worker "
                    "took it over (or it was never leased); nothing was written"
                )
            if write.rebuild_ticket is None and status.position != write.from_position:
                raise ConcurrencyError(
                    f"projection {name!r} is at position {status.position}, not "
                    f"{write.from_position}: it was written since it was read; read it again",
                    expected=write.from_position,
                    actual=status.position,
                )
            if write.rebuild_ticket is not None and status.position > write.to_position:
                raise ConcurrencyError(
                    f"projection {name!r} is at position {status.position}, past the rebuilt "
                    f"position {write.to_position}; fold the events after it and write again",
                    expected=write.to_position,
                    actual=status.position,
                )
            db = self._db["projection_parts"]
            if write.rebuild_ticket is not None:
                cursor = txn.cursor(db=db)
                if cursor.set_range(prefix):
                    while cursor.key().startswith(prefix):
                        if not cursor.delete():
                            break
            for part_key, value in encoded:
                txn.put(part_key, value, db=db)
            status = attrs.evolve(
                status,
                position=write.to_position,
                updated_at=now,
                generation=status.generation + 1,
                rebuilt=max(status.rebuilt, write.rebuild_ticket or 0),
            )
            stored = attrs.evolve(status, runner=None, runner_expires_at=0.0)
            txn.put(key, encode_record(stored), db=self._db["projections"])
            return status

        status = self._write(op)
        with self._advanced:
            self._advances += 1
            self._advanced.notify_all()
        return status

    def request_projection_rebuild(self, name: str) -> int:
        key = _projection_key(name)

        def op(txn: Any) -> int:
            status = self._projection_in(txn, name)
            ticket = max(status.rebuild_requested, status.rebuilt) + 1
            stored = attrs.evolve(
                status, rebuild_requested=ticket, runner=None, runner_expires_at=0.0
            )
            txn.put(key, encode_record(stored), db=self._db["projections"])
            return ticket

        ticket = self._write(op)
        self._notify()
        return ticket

    def wait_for_projection(self, name: str, position: int, *, timeout: float) -> int:
        key = _projection_key(name)
        deadline = time.monotonic() + timeout
        while True:
            with self._advanced:
                seen = self._advances
            with self._txn() as txn:
                raw = txn.get(key, db=self._db["projections"])
            current = 0 if raw is None else decode_record(raw, ProjectionStatus).position
            remaining = deadline - time.monotonic()
            if current >= position or remaining <= 0:
                return current
            with self._advanced:
                if self._advances == seen:
                    # A runner in another process advances it without signalling us: poll.
                    self._advanced.wait(min(remaining, 0.05))

    # -- reading -------------------------------------------------------------------

    def _steps_in(self, txn: Any, run_id: str) -> list[StepRecord]:
        prefix = run_id.encode() + b"\x00"
        cursor = txn.cursor(db=self._db["steps"])
        out = []
        if cursor.set_range(prefix):
            for key, raw in cursor:
                if not key.startswith(prefix):
                    break
                out.append(_decode_step(raw))
        return out

    def get_run(self, run_id: str) -> Run:
        key = _run_key(run_id)
        with self._txn() as txn:
            raw = txn.get(key, db=self._db["runs"])
        if raw is None:
            raise RunNotFoundError(run_id)
        return decode_record(raw, Run)

    def get_steps(self, run_id: str) -> list[StepRecord]:
        _run_key(run_id)
        with self._txn() as txn:
            return self._steps_in(txn, run_id)

    def get_lease(self, run_id: str) -> Lease | None:
        key = _run_key(run_id)
        with self._txn() as txn:
            raw = txn.get(key, db=self._db["leases"])
        return None if raw is None else decode_record(raw, Lease)

    def list_runs(
        self, *, limit: int = 20, status: str | None = None, agent: str | None = None
    ) -> list[Run]:
        out: list[Run] = []
        with self._txn() as txn:
            cursor = txn.cursor(db=self._db["runs"])
            if not cursor.last():
                return out
            for _, raw in cursor.iterprev():
                run = decode_record(raw, Run)
                if (status is None or run.status == status) and (
                    agent is None or run.agent == agent
                ):
                    out.append(run)
                    if len(out) >= limit:
                        break
        return out

    def prune_runs(
        self,
        *,
        older_than: float,
        statuses: Collection[str] | None = None,
        dry_run: bool = False,
    ) -> PruneResult:
        from ironflow.store._retention import prune

        return prune(self, older_than=older_than, statuses=statuses, dry_run=dry_run)

    def check_valid(self) -> None:
        """Assert the store's indexes agree with its runs (used by tests' invariants)."""
        with self._txn() as txn:
            for key, agent in txn.cursor(db=self._db["ready"]):
                run = decode_record(txn.get(key, db=self._db["runs"]), Run)
                assert run.status in ("pending", "queued"), f"ready run {key!r}: {run.status}"
                assert run.agent.encode() == agent
            for key, _ in txn.cursor(db=self._db["leases"]):
                run = decode_record(txn.get(key, db=self._db["runs"]), Run)
                assert run.status == "running", f"leased run {key!r} has status {run.status}"
            # A suspended run has exactly the timer and wait its suspension names, and
            # every timer and wait belongs to a suspended run.
            expected: dict[str, set[bytes]] = {"timers": set(), "waits": set()}
            for key, raw in txn.cursor(db=self._db["runs"]):
                run = decode_record(raw, Run)
                if run.status in SUSPENDED:
                    assert run.suspension is not None, f"suspended run {key!r} has no suspension"
                    assert txn.get(key, db=self._db["leases"]) is None, f"{key!r} is leased"
                    assert txn.get(key, db=self._db["ready"]) is None, f"{key!r} is ready"
                    timer, wait = index_keys(run.id, run.suspension)
                    for db, index_key in (("timers", timer), ("waits", wait)):
                        if index_key is not None:
                            expected[db].add(index_key)
            for db, keys in expected.items():
                found = {bytes(k) for k, _ in txn.cursor(db=self._db[db])}
                assert found == keys, f"{db}: stray {found - keys}, missing {keys - found}"
            # Each stream's entries are versions up to its head (1..head unless some were
            # deleted), each naming its event in the log; a stream with none has no head.
            heads: dict[bytes, int] = {}
            for key, seq in txn.cursor(db=self._db["streams"]):
                stream, version = key[:-9], int.from_bytes(key[-8:], "big")
                assert version > heads.get(stream, 0), f"stream {stream!r} repeats {version}"
                heads[stream] = version
                event = decode_record(txn.get(seq, db=self._db["events"]), Event)
                assert (event.stream, event.version) == (stream.decode(), version), event
            for key, head in txn.cursor(db=self._db["stream_heads"]):
                assert heads.get(key, 0) >= 1, f"stream {key!r} has a head but no events"
                assert heads[key] <= int.from_bytes(head, "big"), f"stream {key!r} head"
            assert len(heads) == txn.stat(self._db["stream_heads"])["entries"]


# Opening, and every public method, answer a failing data directory (a full disk,
# damage, a lock) with a StoreError naming the directory and the fix, never a bare
# lmdb.Error.
for _name, _method in list(vars(LmdbStore).items()):
    if (_name == "__init__" or not _name.startswith("_")) and inspect.isfunction(_method):
        setattr(LmdbStore, _name, guard(_method))

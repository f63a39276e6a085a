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
import os
import socket
import threading
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import attrs
import lmdb

from ironflow._ids import new_id
from ironflow.errors import (
    InvalidInputError,
    LeaseLostError,
    RunNotFoundError,
    StoreError,
    StoreFormatError,
    StoreLockedError,
)
from ironflow.store._codec import decode_record, encode_record, to_json_value
from ironflow.store._records import (
    FINISHED,
    AgentSpec,
    EmitResult,
    ErrorInfo,
    Event,
    Lease,
    LeasedRun,
    Run,
    StepAck,
    StepRecord,
    WorkerInfo,
)
from ironflow.store._triggers import trigger_matches

__all__ = ["FORMAT_VERSION", "LmdbStore", "process_alive"]

#: Bumped whenever the on-disk layout changes; a store refuses any other version.
FORMAT_VERSION = 1

T = TypeVar("T")

_DBS = ("meta", "events", "event_ids", "runs", "ready", "leases", "steps", "agents", "cancels")
_INITIAL_MAP = 1 << 30


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


def _pid_start(pid: int) -> str:
    """The process start time in clock ticks (field 22 of /proc/PID/stat), or ''."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return ""
    # The command name (field 2) may hold spaces or parens; fields resume after the last ')'.
    return raw[raw.rindex(b")") + 2 :].split()[19].decode()


def process_alive(worker: WorkerInfo) -> bool | None:
    """Whether the worker's process still runs: True, False, or None if it is on another host."""
    if worker.host != socket.gethostname():
        return None
    try:
        os.kill(worker.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, under another user
    # A different start time means the pid was recycled by an unrelated process.
    return not (worker.pid_start and _pid_start(worker.pid) not in ("", worker.pid_start))


def this_worker(worker_id: str | None = None) -> WorkerInfo:
    """The WorkerInfo describing the current process."""
    pid = os.getpid()
    return WorkerInfo(
        id=worker_id or f"{socket.gethostname()}:{pid}:{new_id()[-6:]}",
        host=socket.gethostname(),
        pid=pid,
        pid_start=_pid_start(pid),
    )


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
        for tries in range(64):
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
                if tries == 63:
                    raise
            except BaseException as exc:
                for op in batch:
                    op.error = exc if isinstance(exc, Exception) else StoreError(str(exc))
                    op.done = True
                if not isinstance(exc, Exception):
                    raise
                return
        for op in batch:
            op.done = True


class LmdbStore:
    """The embedded store. Safe to share between threads, and between processes on a host.

    Guarantees: every write method returns after its transaction is fsync'd (unless
    ``sync=False``, meant for throwaway tests); the map grows on demand instead of
    failing when it is full.
    """

    def __init__(self, path: str | os.PathLike[str], *, sync: bool = True) -> None:
        self.path = Path(path)
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
            raise StoreLockedError(
                f"cannot open the data directory {self.path}: {exc}. Check that it is an "
                "Ironflow data directory and that this user may read and write it."
            ) from exc
        # Readers and the map resize exclude each other: LMDB may only resize a map
        # while this process has no transaction open.
        self._resize_lock = threading.Condition()
        self._readers = 0
        self._resizing = False
        self._closed = False
        self._db = {name: self._env.open_db(name.encode()) for name in _DBS}
        self._committer = _GroupCommitter(self)
        self._work = threading.Condition()
        self._check_format()

    # -- plumbing -------------------------------------------------------------------

    @contextlib.contextmanager
    def _txn(self, *, write: bool = False) -> Iterator[Any]:
        if self._closed:
            raise StoreError(f"the store at {self.path} is closed")
        with self._resize_lock:
            while self._resizing:
                self._resize_lock.wait()
            self._readers += 1
        try:
            try:
                txn = self._env.begin(write=write)
            except lmdb.MapResizedError:
                # Another process grew the map; adopt its size.
                self._env.set_mapsize(0)
                txn = self._env.begin(write=write)
            with txn:
                yield txn
        finally:
            with self._resize_lock:
                self._readers -= 1
                self._resize_lock.notify_all()

    def _grow(self) -> None:
        with self._resize_lock:
            self._resizing = True
            # The committer's own transaction has ended; wait for readers to finish.
            while self._readers > 0:
                self._resize_lock.wait()
            try:
                self._env.set_mapsize(self._env.info()["map_size"] * 2)
            finally:
                self._resizing = False
                self._resize_lock.notify_all()

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
            for key, value in encoded:
                if txn.get(key, db=self._db["agents"]) != value:
                    txn.put(key, value, db=self._db["agents"])

        self._write(op)

    def agents(self) -> list[AgentSpec]:
        with self._txn() as txn:
            return [decode_record(v, AgentSpec) for _, v in txn.cursor(db=self._db["agents"])]

    def emit(self, name: str, data: Any, *, id: str | None = None) -> EmitResult:
        if not isinstance(name, str) or not name or len(name) > 200:
            raise InvalidInputError(f"an event name must be 1 to 200 characters, not {name!r}")
        if id is not None and (not isinstance(id, str) or not id or len(id.encode()) > 200):
            raise InvalidInputError(f"an event id must be a string of 1 to 200 bytes, not {id!r}")
        data = to_json_value(data, f"event {name!r} data", "data")
        now = time.time()

        def op(txn: Any) -> EmitResult:
            return self._emit_in(txn, name, data, id, now)

        result = self._write(op)
        if result.run_ids:
            self._notify()
        return result

    def _emit_in(self, txn: Any, name: str, data: Any, id: str | None, now: float) -> EmitResult:
        """Append an event and create its runs inside the caller's write transaction."""
        if id is not None:
            seen = txn.get(id.encode(), db=self._db["event_ids"])
            if seen is not None:
                prior = decode_record(seen, EmitResult)
                return attrs.evolve(prior, created=False)
        cursor = txn.cursor(db=self._db["events"])
        seq = int.from_bytes(cursor.key(), "big") + 1 if cursor.last() else 1
        event = Event(id=id or new_id("evt_"), name=name, data=data, ts=now, seq=seq)
        run_ids = []
        for _, raw in txn.cursor(db=self._db["agents"]):
            spec = decode_record(raw, AgentSpec)
            if any(trigger_matches(t, name) for t in spec.triggers):
                run = Run(
                    id=new_id("run_"),
                    agent=spec.id,
                    status="pending",
                    event=event,
                    created_at=now,
                    updated_at=now,
                )
                txn.put(run.id.encode(), encode_record(run), db=self._db["runs"])
                txn.put(run.id.encode(), spec.id.encode(), db=self._db["ready"])
                run_ids.append(run.id)
        result = EmitResult(event_id=event.id, run_ids=tuple(run_ids), created=True, seq=seq)
        txn.put(_u64(seq), encode_record(event), db=self._db["events"])
        txn.put(event.id.encode(), encode_record(result), db=self._db["event_ids"])
        return result

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
        for key, agent in txn.cursor(db=self._db["ready"]):
            if agent in wanted:
                found.append(key.decode())
                if len(found) >= limit:
                    return found
        for key, raw in txn.cursor(db=self._db["leases"]):
            lease = decode_record(raw, Lease)
            if lease.worker.id == worker.id:
                continue
            if lease.expires_at > now and process_alive(lease.worker) is not False:
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
        # An idle poll costs a read transaction, not an fsync'd write.
        with self._txn() as txn:
            if not self._candidates(txn, worker, agents, limit, now):
                return []

        def op(txn: Any) -> list[LeasedRun]:
            leased = []
            for run_id in self._candidates(txn, worker, agents, limit, now):
                key = run_id.encode()
                run = decode_record(txn.get(key, db=self._db["runs"]), Run)
                run = attrs.evolve(run, status="running", attempt=run.attempt + 1, updated_at=now)
                lease = Lease(run_id=run_id, worker=worker, expires_at=now + ttl)
                txn.put(key, encode_record(run), db=self._db["runs"])
                txn.delete(key, db=self._db["ready"])
                txn.put(key, encode_record(lease), db=self._db["leases"])
                leased.append(
                    LeasedRun(run=run, steps=tuple(self._steps_in(txn, run_id)), lease=lease)
                )
            return leased

        return self._write(op)

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

    def _check_holder(self, txn: Any, worker: WorkerInfo, run_id: str) -> None:
        raw = txn.get(run_id.encode(), db=self._db["leases"])
        if raw is None or decode_record(raw, Lease).worker.id != worker.id:
            raise LeaseLostError(
                f"worker {worker.id} no longer holds run {run_id}: its lease expired and "
                "another worker took the run over (raise the lease TTL if steps block for long)"
            )

    # -- steps and run completion ----------------------------------------------------

    def record_step(self, worker: WorkerInfo, step: StepRecord) -> StepAck:
        key = _step_key(step.run_id, step.position)
        value = encode_record(step)

        def op(txn: Any) -> StepAck:
            self._check_holder(txn, worker, step.run_id)
            txn.put(key, value, db=self._db["steps"], overwrite=False)
            return StepAck(txn.get(step.run_id.encode(), db=self._db["cancels"]) is not None)

        return self._write(op)

    def finish_run(
        self,
        worker: WorkerInfo,
        run_id: str,
        *,
        status: str,
        output: Any = None,
        error: ErrorInfo | None = None,
    ) -> Run:
        if status not in FINISHED:
            raise InvalidInputError(
                f"finish_run: status must be one of {sorted(FINISHED)}, not {status!r}"
            )
        output = to_json_value(output, f"run {run_id} output", "output")

        def op(txn: Any) -> Run:
            self._check_holder(txn, worker, run_id)
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
            return run

        run = self._write(op)
        self._notify()
        return run

    def release_run(self, worker: WorkerInfo, run_id: str) -> None:
        def op(txn: Any) -> None:
            self._check_holder(txn, worker, run_id)
            key = run_id.encode()
            run = decode_record(txn.get(key, db=self._db["runs"]), Run)
            run = attrs.evolve(run, status="pending", updated_at=time.time())
            txn.put(key, encode_record(run), db=self._db["runs"])
            txn.delete(key, db=self._db["leases"])
            txn.put(key, run.agent.encode(), db=self._db["ready"])

        self._write(op)
        self._notify()

    def request_cancel(self, run_id: str) -> Run:
        key = _run_key(run_id)

        def op(txn: Any) -> Run:
            raw = txn.get(key, db=self._db["runs"])
            if raw is None:
                raise RunNotFoundError(run_id)
            run = decode_record(raw, Run)
            if run.status in FINISHED:
                return run
            now = time.time()
            if run.status == "pending":
                run = attrs.evolve(run, status="cancelled", cancel_requested=True, updated_at=now)
                txn.delete(key, db=self._db["ready"])
            else:
                run = attrs.evolve(run, cancel_requested=True, updated_at=now)
                txn.put(key, b"1", db=self._db["cancels"])
            txn.put(key, encode_record(run), db=self._db["runs"])
            return run

        return self._write(op)

    # -- reading -------------------------------------------------------------------

    def _steps_in(self, txn: Any, run_id: str) -> list[StepRecord]:
        prefix = run_id.encode() + b"\x00"
        cursor = txn.cursor(db=self._db["steps"])
        out = []
        if cursor.set_range(prefix):
            for key, raw in cursor:
                if not key.startswith(prefix):
                    break
                out.append(decode_record(raw, StepRecord))
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

    def check_valid(self) -> None:
        """Assert the store's indexes agree with its runs (used by tests' invariants)."""
        with self._txn() as txn:
            for key, agent in txn.cursor(db=self._db["ready"]):
                run = decode_record(txn.get(key, db=self._db["runs"]), Run)
                assert run.status == "pending", f"ready run {key!r} has status {run.status}"
                assert run.agent.encode() == agent
            for key, _ in txn.cursor(db=self._db["leases"]):
                run = decode_record(txn.get(key, db=self._db["runs"]), Run)
                assert run.status == "running", f"leased run {key!r} has status {run.status}"

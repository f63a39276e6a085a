"""LmdbStore: the embedded store, the state machine over one LMDB environment.

Why LMDB: a commit is one fsync'd copy-on-write of a few pages, readers never block
the writer, and several processes on a host share one environment safely through its
lock file. Our cost per step is then close to the disk's own commit cost.

Why group commit: concurrent runs in one process hand their writes to whichever
thread is committing next, so sixteen runs recording steps together pay for one
fsync, not sixteen, and each writer still returns only after its write is on disk.
Each op of a batch runs in its own nested transaction, so one that raises after
writing part of its work leaves nothing, and the others still commit.

This module is storage only: each table of ``_backend.TABLES`` is a named LMDB
database; every rule is the state machine's (``_machine.py``).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import attrs
import lmdb

from ironflow.errors import StoreCorruptedError, StoreError, StoreFormatError, StoreLockedError
from ironflow.store._backend import TABLES, OneByOne, prefix_end
from ironflow.store._faults import check_ours, storage_error
from ironflow.store._machine import StoreMachine
from ironflow.store._wake import SocketWakeups, Wakeups

__all__ = ["FORMAT_VERSION", "LmdbBackend", "LmdbStore"]

#: Bumped whenever the on-disk layout changes; a store refuses any other version.
FORMAT_VERSION = 1

T = TypeVar("T")

_INITIAL_MAP = 1 << 30

#: How long a committing thread waits for more writers when the last commit was shared.
_GATHER_S = 50e-6


class _LmdbTxn(OneByOne):
    """A transaction of the backend interface over an ``lmdb.Transaction``."""

    __slots__ = ("_dbs", "_txn")

    def __init__(self, txn: Any, dbs: dict[str, Any]) -> None:
        self._txn = txn
        self._dbs = dbs

    def get(self, table: str, key: bytes) -> bytes | None:
        value: bytes | None = self._txn.get(key, db=self._dbs[table])
        return value

    def scan(
        self,
        table: str,
        *,
        prefix: bytes = b"",
        start: bytes | None = None,
        reverse: bool = False,
    ) -> Iterator[tuple[bytes, bytes]]:
        # Not a generator itself: most scans have no prefix, and then LMDB's own
        # iterator is returned as it is, with no Python frame per key.
        cursor = self._txn.cursor(db=self._dbs[table])
        if not reverse:
            if not cursor.set_range(prefix if start is None or start < prefix else start):
                return iter(())
            rows: Iterator[tuple[bytes, bytes]] = cursor.iternext()
        else:
            end = prefix_end(prefix)
            if start is not None and start < prefix:
                return iter(())
            bound = start if start is not None and (end is None or start < end) else end
            if bound is None:
                found = cursor.last()
            elif cursor.set_range(bound):
                # On the first key >= bound: step back unless it is the (inclusive) start.
                found = (bound == start and cursor.key() == start) or cursor.prev()
            else:
                found = cursor.last()
            if not found:
                return iter(())
            rows = cursor.iterprev()
        return _within(rows, prefix) if prefix else rows

    def count(self, table: str) -> int:
        entries: int = self._txn.stat(self._dbs[table])["entries"]
        return entries

    def put(self, table: str, key: bytes, value: bytes) -> None:
        self._txn.put(key, value, db=self._dbs[table])

    def insert(self, table: str, key: bytes, value: bytes) -> bool:
        done: bool = self._txn.put(key, value, db=self._dbs[table], overwrite=False)
        return done

    def delete(self, table: str, key: bytes) -> bool:
        done: bool = self._txn.delete(key, db=self._dbs[table])
        return done

    def claim(
        self,
        table: str,
        *,
        accept: Callable[[bytes, bytes], bool],
        limit: int,
        also: Sequence[str] = (),
    ) -> list[tuple[bytes, bytes]]:
        # One writer at a time: what this transaction sees is its alone until it ends.
        taken: list[tuple[bytes, bytes]] = []
        if limit > 0:
            for key, value in self.scan(table):
                if accept(key, value):
                    taken.append((key, value))
                    if len(taken) >= limit:
                        break
        return taken


def _within(rows: Iterator[tuple[bytes, bytes]], prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
    for key, value in rows:
        if not key.startswith(prefix):
            return
        yield key, value


@attrs.define
class _Op:
    fn: Callable[[_LmdbTxn], Any]
    done: bool = False
    result: Any = None
    error: BaseException | None = None


class _OpFailed(Exception):
    """Aborts a transaction holding a single op that raised: it must leave nothing."""


class _GroupCommitter:
    """Leader-based group commit: one thread commits everyone's queued writes at once.

    An op alone in its batch runs in the transaction itself; in a batch of several,
    each runs in a nested transaction. Either way an op that raises leaves nothing of
    its own, and the others still commit (the issue 12 guarantee).
    """

    def __init__(self, backend: LmdbBackend) -> None:
        self._backend = backend
        # Entered as the plain lock it is (``with self._lock``): a Condition's own
        # ``with`` adds two Python calls to every write.
        self._lock = threading.Lock()
        self._cv = threading.Condition(self._lock)
        self._queue: list[_Op] = []
        self._leading = False
        #: How many writes the last commit carried: above 1, writers are overlapping.
        self._last_batch = 1
        #: While a leader gathers: how many queued writes end its wait early.
        self._gathering = 0

    def submit(self, fn: Callable[[_LmdbTxn], T]) -> T:
        op = _Op(fn)
        with self._lock:
            self._queue.append(op)
            if self._gathering and len(self._queue) >= self._gathering:
                self._cv.notify_all()
            while self._leading and not op.done:
                self._cv.wait()
            if not op.done:
                self._leading = True
                if len(self._queue) < self._last_batch:
                    # The last commit carried several writers' ops: those now between
                    # two steps are a few tens of µs from writing again. Waiting that
                    # long for them costs less than the fsync each would pay alone.
                    self._gathering = self._last_batch
                    self._cv.wait(_GATHER_S)
                    self._gathering = 0
                batch, self._queue = self._queue, []
                self._last_batch = len(batch)
        if not op.done:
            try:
                self._commit(batch)
            finally:
                with self._lock:
                    self._leading = False
                    # Who waits: the writers whose ops it carried, and those queued since
                    # (one to lead next). A lone writer wakes no one.
                    if len(batch) > 1 or self._queue:
                        self._cv.notify_all()
        if op.error is not None:
            raise op.error
        return op.result  # type: ignore[no-any-return]

    def _apply(self, txn: Any, batch: list[_Op]) -> None:
        dbs = self._backend.dbs
        if len(batch) == 1:
            op = batch[0]
            try:
                op.result, op.error = op.fn(_LmdbTxn(txn, dbs)), None
            except lmdb.MapFullError:
                raise
            except Exception as exc:
                op.result, op.error = None, exc
                raise _OpFailed from exc
            return
        env = self._backend.env
        for op in batch:
            child = env.begin(write=True, parent=txn)
            try:
                op.result, op.error = op.fn(_LmdbTxn(child, dbs)), None
            except BaseException as exc:
                child.abort()
                if isinstance(exc, lmdb.MapFullError) or not isinstance(exc, Exception):
                    raise
                op.result, op.error = None, exc
            else:
                child.commit()

    def _commit(self, batch: list[_Op]) -> None:
        watch = self._backend.commit_observer
        started = time.perf_counter() if watch is not None else 0.0
        try:
            for _ in range(64):
                txn = self._backend._begin(write=True)
                try:
                    with txn:
                        self._apply(txn, batch)
                    break
                except _OpFailed:
                    break  # the one op of the batch failed; its transaction was aborted
                except lmdb.MapFullError:
                    pass
                finally:
                    self._backend._end()
                self._backend.grow()  # its transaction has ended: the map may be resized
            else:
                raise StoreError(
                    f"the data directory {self._backend.path} is full even after growing "
                    "its map 64 times"
                )
        except BaseException as exc:
            # The transaction did not commit: every op in the batch failed, and each
            # waiting thread must hear so rather than read a result that was never written.
            failure: BaseException = exc
            if not isinstance(exc, Exception):
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


class LmdbBackend:
    """The backend interface over one LMDB environment: a named database per table."""

    def __init__(self, path: Path, *, sync: bool = True) -> None:
        self.path = path
        self.where = f"the data directory {path}"
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreLockedError(
                f"cannot create the data directory {self.path}: {exc.strerror}. "
                "Pick another with --data-dir or IRONFLOW_DATA_DIR."
            ) from exc
        data_file = self.path / "data.mdb"
        try:
            size = data_file.stat().st_size if data_file.exists() else 0
            self.env = lmdb.open(
                str(self.path),
                map_size=max(_INITIAL_MAP, size * 2),
                max_dbs=len(TABLES) + 8,
                max_readers=1024,
                sync=sync,
                metasync=sync,
                readahead=False,
            )
        except lmdb.Error as exc:
            raise storage_error(self.path, exc) from exc
        except OSError as exc:
            raise storage_error(self.path, exc) from exc
        # Readers and the map resize exclude each other: LMDB may only resize a map
        # while this process has no transaction open.
        self._resize_mutex = threading.Lock()
        self._resize_lock = threading.Condition(self._resize_mutex)
        self._readers = 0
        self._resizing = False
        self._closed = False
        #: Told each commit's seconds (from the transaction's start to its fsync) and how
        #: many writes it carried; for metrics. None: nothing is timed.
        self.commit_observer: Callable[[float, int], None] | None = None
        self._committer = _GroupCommitter(self)
        #: Waiters in every process on this directory, woken through ``wake/`` in it.
        self.wakeups: Wakeups = SocketWakeups(self.path / "wake")
        try:
            check_ours(self.env, self.path, TABLES)
            self.dbs = {name: self.env.open_db(name.encode()) for name in TABLES}
            self._check_format()
        except BaseException as exc:
            # A refused directory must not stay open: the caller may open another.
            self._closed = True
            self.env.close()
            if isinstance(exc, lmdb.Error):
                raise storage_error(self.path, exc) from exc
            raise

    # -- transactions ---------------------------------------------------------------

    @contextlib.contextmanager
    def txn(self, *, write: bool = False) -> Iterator[Any]:
        """An ``lmdb.Transaction``, adopting a map another process grew first."""
        txn = self._begin(write)
        try:
            with txn:
                yield txn
        finally:
            self._end()

    # Not one context manager: a generator's frames and the lock's notifications cost a
    # write about a third of its time outside LMDB (every step pays them).

    def _begin(self, write: bool) -> Any:
        """Begin an ``lmdb.Transaction`` (adopting a map another process grew first);
        from here until :meth:`_end` it holds off a resize."""
        if self._closed:
            raise StoreError(f"the store at {self.path} is closed")
        for _ in range(8):
            with self._resize_mutex:
                while self._resizing:
                    self._resize_lock.wait()
                self._readers += 1
            try:
                return self.env.begin(write=write)
            except lmdb.MapResizedError:
                self._end()
            except lmdb.Error as exc:
                self._end()
                raise StoreError(f"cannot read the data directory {self.path}: {exc}") from exc
            except BaseException:
                self._end()
                raise
            # Another process grew the map. LMDB allows adopting its size only while this
            # process has no transaction open, so do it as exclusively as a resize.
            self.resize(0)
        raise StoreError(f"the data directory {self.path} keeps being resized; try again")

    def _end(self) -> None:
        """A transaction begun by :meth:`_begin` has ended."""
        with self._resize_mutex:
            self._readers -= 1
            if self._resizing:
                self._resize_lock.notify_all()  # the resize waits for no reader left

    def resize(self, size: int) -> None:
        """Set the map size (0: adopt the size on disk) with no transaction open here."""
        with self._resize_lock:
            while self._resizing:
                self._resize_lock.wait()
            self._resizing = True
            try:
                while self._readers > 0:
                    self._resize_lock.wait()
                self.env.set_mapsize(size)
            finally:
                self._resizing = False
                self._resize_lock.notify_all()

    def grow(self) -> None:
        # The committer's own transaction has ended when this is called.
        self.resize(self.env.info()["map_size"] * 2)

    @contextlib.contextmanager
    def read(self) -> Iterator[_LmdbTxn]:
        txn = self._begin(write=False)
        try:
            with txn:
                yield _LmdbTxn(txn, self.dbs)
        except (lmdb.Error, StoreCorruptedError) as exc:
            translated = self._translated(exc)
            if translated is exc:
                raise
            raise translated from exc
        finally:
            self._end()

    def write(self, op: Callable[[_LmdbTxn], T]) -> T:
        try:
            return self._committer.submit(op)
        except (lmdb.Error, StoreCorruptedError) as exc:
            translated = self._translated(exc)
            if translated is exc:
                raise
            raise translated from exc

    def _translated(self, exc: BaseException) -> BaseException:
        """LMDB's errors and unreadable records become StoreErrors naming the directory."""
        if isinstance(exc, lmdb.Error):
            return storage_error(self.path, exc)
        if str(self.path) in str(exc):
            return exc
        return StoreCorruptedError(
            f"the data directory {self.path} is damaged: {exc}. Restore it from a "
            "backup, or point --data-dir at a new directory"
        )

    def _check_format(self) -> None:
        def op(txn: _LmdbTxn) -> int:
            raw = txn.get("meta", b"format_version")
            if raw is None:
                txn.put("meta", b"format_version", str(FORMAT_VERSION).encode())
                return FORMAT_VERSION
            return int(raw)

        try:
            version = self._committer.submit(op)
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

    def changes(self) -> int:
        return int(self.env.info()["last_txnid"])

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.wakeups.close()
            self.env.close()


class LmdbStore(StoreMachine):
    """The embedded store. Safe to share between threads, and between processes on a host.

    Guarantees: every write method returns after its transaction is fsync'd (unless
    ``sync=False``, meant for throwaway tests); each applies whole or leaves nothing;
    the map grows on demand instead of failing when it is full.

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
        self.backend = LmdbBackend(self.path, sync=sync)
        super().__init__(self.backend, clock=clock)

    def __enter__(self) -> LmdbStore:
        return self

    @property
    def commit_observer(self) -> Callable[[float, int], None] | None:
        """Told each commit's seconds (from the transaction's start to its fsync) and how
        many writes it carried; for metrics. None: nothing is timed."""
        return self.backend.commit_observer

    @commit_observer.setter
    def commit_observer(self, observer: Callable[[float, int], None] | None) -> None:
        self.backend.commit_observer = observer

    def __repr__(self) -> str:
        return f"LmdbStore({str(self.path)!r})"

"""MemoryStore: the state machine over plain dicts, the oracle of the agreement test.

It holds nothing on disk and forgets everything when dropped, so it is for tests: a
fast store for unit tests of agents and workers, and the reference every other backend
is compared with (``tests/store/test_agreement.py``). Every rule is the state
machine's own, so it behaves exactly as the other stores do.

The backend keeps each table as a dict and a sorted list of its keys. One lock makes
every transaction run alone (a reader sees no write half-done), and an undo log makes
a write that raises leave nothing behind.
"""

from __future__ import annotations

import bisect
import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

from ironflow.errors import StoreError
from ironflow.store._backend import TABLES, OneByOne, prefix_end
from ironflow.store._machine import StoreMachine
from ironflow.store._wake import LocalWakeups, Wakeups

__all__ = ["MemoryBackend", "MemoryStore"]

T = TypeVar("T")


class _Table:
    __slots__ = ("data", "keys")

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}
        self.keys: list[bytes] = []  # sorted


class _MemoryTxn(OneByOne):
    """A transaction over the tables; writable only inside :meth:`MemoryBackend.write`."""

    __slots__ = ("_tables", "_undo")

    def __init__(
        self, tables: dict[str, _Table], undo: list[tuple[str, bytes, bytes | None]] | None
    ):
        self._tables = tables
        self._undo = undo

    def get(self, table: str, key: bytes) -> bytes | None:
        return self._tables[table].data.get(key)

    def scan(
        self,
        table: str,
        *,
        prefix: bytes = b"",
        start: bytes | None = None,
        reverse: bool = False,
    ) -> Iterator[tuple[bytes, bytes]]:
        t = self._tables[table]
        keys = t.keys
        end = prefix_end(prefix)
        lo = bisect.bisect_left(keys, prefix)
        hi = len(keys) if end is None else bisect.bisect_left(keys, end)
        if start is not None:
            if reverse:
                hi = min(hi, bisect.bisect_right(keys, start))
            else:
                lo = max(lo, bisect.bisect_left(keys, start))
        # A copy of the range: the caller may stop anywhere, and writes to other
        # tables meanwhile do not disturb it.
        chosen = keys[lo:hi]
        if reverse:
            chosen.reverse()
        for key in chosen:
            value = t.data.get(key)
            if value is not None:
                yield key, value

    def count(self, table: str) -> int:
        return len(self._tables[table].data)

    def _log(self) -> list[tuple[str, bytes, bytes | None]]:
        if self._undo is None:
            raise StoreError("a read transaction of the MemoryStore cannot write")
        return self._undo

    def put(self, table: str, key: bytes, value: bytes) -> None:
        undo = self._log()
        t = self._tables[table]
        old = t.data.get(key)
        if old is None:
            bisect.insort(t.keys, bytes(key))
        undo.append((table, key, old))
        t.data[bytes(key)] = bytes(value)

    def insert(self, table: str, key: bytes, value: bytes) -> bool:
        if key in self._tables[table].data:
            self._log()
            return False
        self.put(table, key, value)
        return True

    def delete(self, table: str, key: bytes) -> bool:
        undo = self._log()
        t = self._tables[table]
        old = t.data.pop(key, None)
        if old is None:
            return False
        del t.keys[bisect.bisect_left(t.keys, key)]
        undo.append((table, key, old))
        return True

    def claim(
        self,
        table: str,
        *,
        accept: Callable[[bytes, bytes], bool],
        limit: int,
        also: Sequence[str] = (),
    ) -> list[tuple[bytes, bytes]]:
        self._log()
        taken: list[tuple[bytes, bytes]] = []
        if limit <= 0:
            return taken
        for key, value in self.scan(table):
            if accept(key, value):
                taken.append((key, value))
                if len(taken) >= limit:
                    break
        return taken

    def rollback(self) -> None:
        """Undo every write of this transaction, newest first."""
        undo = self._log()
        while undo:
            table, key, old = undo.pop()
            t = self._tables[table]
            if old is None:
                if t.data.pop(key, None) is not None:
                    del t.keys[bisect.bisect_left(t.keys, key)]
            else:
                if key not in t.data:
                    bisect.insort(t.keys, key)
                t.data[key] = old


class MemoryBackend:
    """Tables as dicts, one transaction at a time; a write that raises leaves nothing."""

    where = "memory"

    def __init__(self) -> None:
        self._tables = {name: _Table() for name in TABLES}
        self._lock = threading.RLock()
        self._closed = False
        self._commits = 0
        #: One process holds the data, so waiters are woken in this process only.
        self.wakeups: Wakeups = LocalWakeups()

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("the MemoryStore is closed")

    @contextlib.contextmanager
    def read(self) -> Iterator[_MemoryTxn]:
        with self._lock:
            self._check_open()
            yield _MemoryTxn(self._tables, None)

    def write(self, op: Callable[[_MemoryTxn], T]) -> T:
        with self._lock:
            self._check_open()
            txn = _MemoryTxn(self._tables, [])
            try:
                result = op(txn)
            except BaseException:
                txn.rollback()
                raise
            self._commits += 1
            return result

    def changes(self) -> int:
        return self._commits

    def close(self) -> None:
        self._closed = True
        self.wakeups.close()


class MemoryStore(StoreMachine):
    """A :class:`~ironflow.store.Store` in memory: every rule of the other stores, no disk.

    For tests: fast, and the reference the other backends are checked against. Safe to
    share between threads of one process; nothing survives the process.

    ``clock`` is the time source of durable timers (sleeps, wait timeouts, retry
    backoff, debounce, cron), as for :class:`~ironflow.store.LmdbStore`.
    """

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        super().__init__(MemoryBackend(), clock=clock)

    def __repr__(self) -> str:
        return "MemoryStore()"

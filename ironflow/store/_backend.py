"""The narrow transactional interface a storage backend provides to the run state machine.

Every rule of a run's life (``_machine.py`` and the modules it uses) is written once,
over this interface. A backend supplies storage and transactions, never a rule: LMDB
(``_lmdb.py``), plain dicts (``_memory.py``, the oracle of the agreement test), and a
SQL database next (issue 20). What a backend must provide:

**Tables.** :data:`TABLES` names every keyspace. Each maps ``bytes`` keys to ``bytes``
values, ordered by key as unsigned bytes (``memcmp`` order, which is also PostgreSQL's
``bytea`` order). Keys are at most 511 bytes (LMDB's limit); values are any size. A
SQL backend may keep one table per keyspace, or one ``(space, key, value)`` table with
the primary key ``(space, key)``: every read below is then an index range scan.

**Transactions.** :meth:`Backend.read` opens a consistent snapshot (a reader never sees
part of a write). :meth:`Backend.write` runs ``op(txn)`` in a write transaction and
returns its result only once the transaction is durable. Two guarantees make the
state machine correct, whatever the backend:

- *Atomic per op.* ``op`` applies whole or not at all: if it raises, nothing it wrote
  is kept and the exception propagates. A backend that commits several callers' ops
  together (LMDB's group commit) must give each op its own nested transaction or
  savepoint, so one op's failure never commits half of it nor undoes another's.
- *Serializable.* Concurrent write transactions behave as if run one after another.
  LMDB and the memory backend have one writer at a time; a SQL backend runs write
  transactions at ``SERIALIZABLE`` and retries on a serialization failure. So ``op``
  may be called more than once: it must have no effect outside ``txn`` (the machine's
  ops only read, write and compute).

**Scans.** :meth:`ReadTxn.scan` walks one table in key order, forwards or in reverse,
over the keys with a prefix, from a start key. It is lazy, so a caller that stops
early reads no more (a SQL backend fetches in pages: ``WHERE key >= $start ORDER BY
key LIMIT n``). A caller must not write to a table while iterating a scan of it: it
collects the keys first.

**Wake-ups.** :attr:`Backend.wakeups` tells waiters (an idle worker, an emitter
waiting for its run, a server's long polls) in every process sharing the data that a
commit may have made work: the machine posts after each such commit. LMDB uses unix
datagram sockets beside the data (``_wake.SocketWakeups``); PostgreSQL sends
``NOTIFY`` with the commit and a ``LISTEN`` thread posts to its local wake-ups.
A lost wake-up costs a waiter its poll interval, never correctness.

**Claims.** :meth:`WriteTxn.claim` takes "the next N ready items" of a queue-like
table (``ready``, and ``leases`` for orphan takeover): it walks the table in key
order, offers each row to ``accept``, and returns up to ``limit`` accepted rows, which
stay this transaction's until it ends. LMDB and memory have one writer, so it is a
scan; a SQL backend selects with ``FOR UPDATE SKIP LOCKED``, so two servers leasing at
once take different runs instead of queueing on the same rows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import NamedTuple, Protocol, TypeVar

from ironflow.store._wake import Wakeups

__all__ = [
    "TABLES",
    "Backend",
    "Claiming",
    "OneByOne",
    "ReadTxn",
    "Scan",
    "WriteTxn",
    "prefix_end",
]

T = TypeVar("T")

#: Every keyspace, with what its keys and values are (``\\0`` separates key parts;
#: integers are big-endian, so byte order is numeric order).
TABLES: tuple[str, ...] = (
    "meta",  # b"format_version" -> b"1"
    "events",  # seq (u64) -> Event
    "event_ids",  # event id -> EmitResult of its emission
    "runs",  # run id (time-ordered, so a reverse scan is newest first) -> Run
    "ready",  # run id -> agent id: pending (and queued) runs, oldest first
    "leases",  # run id -> Lease
    "steps",  # run id \0 position (u32) -> StepRecord
    "agents",  # agent id -> AgentSpec
    "cancels",  # run id -> b"1": a cancel requested while the run runs
    "streams",  # stream id \0 version (u64) -> seq (u64)
    "stream_heads",  # stream id -> version (u64)
    "stream_keys",  # stream id \0 idempotency key -> seq (u64)
    "projections",  # projection name -> ProjectionStatus
    "projection_parts",  # name \0 partition -> state JSON
    "projection_leases",  # name -> ProjectionLease
    "timers",  # wake-up time (u64 µs) + run id -> b"" (see _waits.py)
    "waits",  # e \0 event name \0 run id, or c \0 child id \0 run id -> b""
    "spawns",  # parent id \0 step id -> child run id
    "event_names",  # event name \0 seq (u64) -> b""
    "slots",  # agent \0 key \0 run id -> b"": unfinished runs of a limited agent
    "debounces",  # agent \0 key -> debounce state JSON
    "cancel_keys",  # pattern \0 agent \0 key \0 run id -> b""
    "crons",  # agent \0 index -> cron state JSON
    "paused",  # run id -> b"": a pause requested
)


def prefix_end(prefix: bytes) -> bytes | None:
    """The first key after every key that starts with ``prefix`` (None: no such key)."""
    end = bytearray(prefix)
    while end and end[-1] == 0xFF:
        end.pop()
    if not end:
        return None
    end[-1] += 1
    return bytes(end)


class Scan(NamedTuple):
    """A scan a rule is about to make (:meth:`ReadTxn.prefetch`): a table's keys with a
    prefix, forwards or in reverse, from the first (or last) one."""

    table: str
    prefix: bytes = b""
    reverse: bool = False


class Claiming(NamedTuple):
    """A claim a rule is about to make (:meth:`ReadTxn.prefetch`, in a write
    transaction): up to ``limit`` rows of ``table``, most likely the first in key order
    whose value is one of ``values``, then the ``also`` tables' rows under the keys
    taken. Only a guess at what
    :meth:`WriteTxn.claim`'s ``accept`` takes: the claim decides."""

    table: str
    values: tuple[bytes, ...]
    limit: int
    also: tuple[str, ...] = ()


class ReadTxn(Protocol):
    """A consistent snapshot of every table."""

    def get(self, table: str, key: bytes) -> bytes | None:
        """The value stored under ``key``, or None."""

    def scan(
        self,
        table: str,
        *,
        prefix: bytes = b"",
        start: bytes | None = None,
        reverse: bool = False,
    ) -> Iterator[tuple[bytes, bytes]]:
        """``(key, value)`` pairs of the keys starting with ``prefix``, in key order.

        Forwards from the first key ``>= start`` (default: the first with the prefix);
        with ``reverse``, backwards from the last key ``<= start`` (default: the last
        with the prefix).
        """

    def count(self, table: str) -> int:
        """How many keys the table holds."""

    def get_many(self, keys: Sequence[tuple[str, bytes]]) -> list[bytes | None]:
        """The value under each ``(table, key)``, in order (None where absent): the reads
        a rule needs together, in one request where the backend is across a network
        (PostgreSQL answers them with one query; LMDB and memory read each)."""

    def last_key(self, table: str, prefix: bytes = b"") -> bytes | None:
        """The last key starting with ``prefix`` (None: no such key), the first key of a
        reverse scan, without its value: a networked backend fetches one key, not a page
        of rows (the event log's head, read by every emit)."""

    def prefetch(
        self,
        *,
        gets: Sequence[tuple[str, bytes]] = (),
        scans: Sequence[Scan] = (),
        lasts: Sequence[tuple[str, bytes]] = (),
        claims: Sequence[Claiming] = (),
    ) -> None:
        """A hint: the rule is about to read these keys, make these scans and ask for the
        last key of these ``(table, prefix)``, whatever they find, and (a write
        transaction only) make these claims. A backend across a network reads them all
        with one request and answers the reads they cover from what it read
        (PostgreSQL: a scan's first page, a ``get`` of a key in a range read whole, a
        ``last_key``; the rows a claim would take, locked, with its ``also`` rows: a
        claim that takes those costs no request of its own); LMDB and memory do nothing.
        Never changes an answer: only how many requests the answers cost."""


class WriteTxn(ReadTxn, Protocol):
    """A snapshot that can also write; see the module docstring for its guarantees."""

    def put(self, table: str, key: bytes, value: bytes) -> None:
        """Store ``value`` under ``key``, replacing what was there."""

    def insert(self, table: str, key: bytes, value: bytes) -> bool:
        """Store ``value`` under ``key`` only if the key is absent; return whether it was."""

    def add(self, table: str, key: bytes, value: bytes) -> None:
        """:meth:`insert` for a caller that needs no answer: a backend across a network
        sends it with what follows (the commit) instead of waiting for it. Its effect is
        seen by every later read of this transaction."""

    def delete(self, table: str, key: bytes) -> bool:
        """Remove ``key``; return whether it was there."""

    def discard(self, table: str, key: bytes) -> None:
        """:meth:`delete` for a caller that needs no answer, sent as :meth:`add` is."""

    def claim(
        self,
        table: str,
        *,
        accept: Callable[[bytes, bytes], bool],
        limit: int,
        also: Sequence[str] = (),
    ) -> list[tuple[bytes, bytes]]:
        """Up to ``limit`` rows, in key order, that ``accept`` takes; see the module.
        ``also``: tables whose rows under the keys taken the caller reads next, a hint
        (as :meth:`ReadTxn.prefetch`): a networked backend reads them with the claim."""


class OneByOne:
    """The batch methods of :class:`ReadTxn` and :class:`WriteTxn` for a backend whose
    every read and write is local (LMDB, memory): each is the plain call, one by one."""

    __slots__ = ()

    def get_many(self: ReadTxn, keys: Sequence[tuple[str, bytes]]) -> list[bytes | None]:
        return [self.get(table, key) for table, key in keys]

    def last_key(self: ReadTxn, table: str, prefix: bytes = b"") -> bytes | None:
        for key, _ in self.scan(table, prefix=prefix, reverse=True):
            return key
        return None

    def prefetch(
        self,
        *,
        gets: Sequence[tuple[str, bytes]] = (),
        scans: Sequence[Scan] = (),
        lasts: Sequence[tuple[str, bytes]] = (),
        claims: Sequence[Claiming] = (),
    ) -> None:
        return None

    def add(self: WriteTxn, table: str, key: bytes, value: bytes) -> None:
        self.insert(table, key, value)

    def discard(self: WriteTxn, table: str, key: bytes) -> None:
        self.delete(table, key)


class Backend(Protocol):
    """Storage and transactions for a :class:`~ironflow.store._machine.StoreMachine`."""

    #: Where the data lives, for messages: ``the data directory /x``, ``memory``.
    where: str
    #: Posted after a commit that may have made work; waited on by idle callers.
    wakeups: Wakeups

    def read(self) -> AbstractContextManager[ReadTxn]:
        """A read transaction: a snapshot no concurrent write changes."""

    def write(self, op: Callable[[WriteTxn], T]) -> T:
        """Run ``op`` in a write transaction; return its result once durable.

        ``op`` applies whole or leaves nothing, and may be called more than once.
        """

    def changes(self) -> int:
        """A number that grows with every committed write, by any process sharing the data.

        Lets a reader (the dashboard's live view) tell cheaply whether anything changed.
        """

    def close(self) -> None:
        """Release the backend's resources. Idempotent."""

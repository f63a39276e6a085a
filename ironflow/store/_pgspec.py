"""Speculative writes on PostgreSQL: an op run on remembered rows, checked as it commits.

Recording a step reads the run's lease (which tells its cancel and pause requests,
``_runs.py``; beside a lease written before leases told them, the ``cancels`` and
``paused`` rows too) and must know it before it decides anything; asked of the server,
that is a round trip before the one that commits. Yet the store itself wrote or read
those rows a moment ago, and they rarely change under it. So a :class:`PostgresStore`
remembers, for a few tables (:data:`REMEMBERED`), what its own committed write
transactions last read or wrote (:class:`RowCache`, bounded), and runs a speculable op
(``record_step``, ``emit``, a stream append) like this:

1. The op runs unchanged, in this process, on a :class:`SpecTxn`: each read is answered
   from the remembered rows and logged with its answer; each write is queued. A read
   the rows cannot answer (a table not remembered, a key not remembered, a scan from a
   start, a range after the op wrote in it) gives up the speculation
   (:class:`Abandon`), and so does any error the op raises: it was decided on guessed
   rows. The op then runs the normal way.
2. One statement, one round trip, a SERIALIZABLE transaction of its own (autocommit;
   the session's default isolation, set by ``_pgbackend.py``): ``WITH`` the commit
   token's insert and the queued writes, ``SELECT 1 / (every logged row as the op was
   told)::int`` (:meth:`SpecTxn.statement`), with ``pg_notify`` when the writes make
   work. No BEGIN, no COMMIT, no pipeline: the statement is the transaction, and
   psycopg sends it (prepared, after a few) in one write. An op writing one row twice
   is not speculated: the order of two writes in one statement is not defined.
   An op whose one write is a step's insert (no token: below) is sent as that insert
   guarded, no ``WITH``: ``INSERT ... SELECT <the row> WHERE (every logged row as the
   op was told)`` (:meth:`SpecTxn.statement`), a plain INSERT, which inserts its row or
   none. About 11 µs of the server's CPU a step less than the ``WITH`` form, and 48
   bytes of WAL (``ON CONFLICT``'s speculative insertion logs a record more), measured
   (docs/benchmarks.md).
3. A division by zero (``22012``, :data:`STALE`) means a remembered row was stale: a
   cancel or a pause requested (each rewrites the lease), the lease taken over or
   extended by another store; so does a guarded insert that inserted nothing (its
   answer's count), or whose row was there already (a unique violation, ``23505``: a
   position recorded already, which the normal way answers by writing nothing). The
   statement is rolled back whole, or wrote nothing (the connection stays usable), and
   the op runs again the normal way at once, which refreshes the rows. A serialization
   failure is retried and a lost answer resolved by the token, as for any write, or by
   the row itself when the op wrote only a step (below).

Why it is sound: inside one SERIALIZABLE transaction, the guard reads exactly the rows
the op read and finds the values the op was given, and the writes are what the op
computed from those values; so what commits is what running the op in that transaction
would have committed, and SERIALIZABLE orders it with every other transaction as
usual. The guard reads before any of the writes (one statement: its reads, a guarded
insert's WHERE too, see the transaction's snapshot, not the statement's own writes), as
the op read before it wrote. The remembered rows are only a guess of what the op will
read, never trusted: a wrong guess costs one more round trip, never a wrong answer. So
rows that are usually absent (:data:`GUESS_ABSENT`: cancel and pause requests) are
guessed absent when not remembered. No rule moves into SQL: the machine's code decides everything,
SQL only checks the rows it read.

**Ranges and last keys.** An emit reads more than rows: every agent (a scan of the
whole table), the runs waiting for its event's name and, for an agent with a
concurrency limit, the key's slots (scans of a prefix), and the log's head (the last
key of ``events``). A store remembers these too (:data:`RANGED`: each range whole as
its committed writes last read or left it, at most ``RANGE_ROWS`` rows; each last
key), and the guard checks them in the same statement: a range by its rows compared
whole (``string_agg`` of each key and value after its length, :func:`_blob`), an empty
one by ``NOT EXISTS``, a last key by ``ORDER BY k DESC LIMIT 1``. SERIALIZABLE takes
predicate locks on what those reads scanned, so a row inserted into a range by a
transaction committing at the same time (another emitter taking the slot, or the next
position of the log) is a conflict, as in the normal way. Waits and slots are usually
none (:data:`GUESS_EMPTY`): a range not remembered is guessed empty; a new event's id
is guessed absent. A wait for the name, a slot in line (its run must be read), a
debounce or a cancel-on match reads what is not remembered: the normal way. An emit's
statement keeps its commit token: it writes several rows and wakes the workers.

**Stream appends** are emits that also read the stream's head (remembered: usually
the one this store wrote, a LangGraph thread's saver being its one writer) and their
idempotency key (guessed absent). Two appends in one op (a node's writes and its
checkpoint) move the head twice and read the log's head after the first wrote there:
a second ``put`` of a row replaces the first's value where it was queued (one write,
the last value, as the op left the row), and a last key read after the op's own writes
under it is the last of them (the guard checks the one read before them).

The commit token, NOTIFY on wake, retries and
fencing are the normal path's (``_pgbackend.py``).

**A step is its own commit token.** The token (a row of ``ironflow_commits`` per write
transaction) is there to tell, after a lost answer, whether a transaction committed.
A statement whose only write is a step's insert (:meth:`SpecTxn.evidence`: one
``add`` to :data:`SELF_EVIDENT`) skips it, and a lost answer is resolved by looking
for that row (``_pgcommits.landed``): there with the bytes we sent means committed, absent
or other bytes means run the op again the normal way. Why that is sound:

- A step's bytes name the worker and the lease attempt it was executed under (and its
  times), and ``record_step``'s guard, in the same transaction as the insert, checks
  that the run's lease is that worker's in that attempt. A lease attempt is granted
  once per run, to one worker. So a row holding our bytes was inserted by a
  transaction that committed while our lease held: ours, or one of the same step
  record sent by the same worker under the same lease (a retried call). Either way
  "committed" is true of what the caller asked: this step, exactly, recorded under its
  lease, and nothing else was to be written (the insert is the statement's only write,
  and a step wakes nobody: no NOTIFY). The answer's cancel and pause flags are the
  ones the op computed; a request stays until the run ends, so the next step reports
  one again if it was missed.
- A takeover cannot fake the answer: the new holder's attempt is another, so its
  record of the same position is other bytes (the steps PostgreSQL records itself,
  a sleep's or a child's end, name no worker: other bytes too).
- Absent (after waiting for a statement of ours still committing), nothing of ours
  committed. Other bytes: ours did not write them (or found them there and wrote
  nothing). Either way the op runs again the normal way, which reads the lease
  afresh: refused after a takeover, and over a step already there it writes nothing
  ("a position already recorded stays as it is"), so running it again is safe
  whatever happened to the first. Unlike a token, a step is not pruned after ten
  minutes, and even a step deleted since (its run finished and pruned) only makes the
  op run again, which finds no lease: so there is no time limit on the look.

The saving: the token's insert costs every step about 18 µs of the server's time and a
row to prune (docs/benchmarks.md). Every other write keeps its token.
"""

from __future__ import annotations

import collections
import functools
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import attrs

from ironflow.store._backend import Claiming, Scan, WriteTxn, prefix_end
from ironflow.store._pgcommits import Evidence
from ironflow.store._pgschema import RUN_FIRST
from ironflow.store._pgsql import MARK_COMMIT, NOTIFY_CALL, SQL, write_params, write_sql
from ironflow.store._pgtxn import (
    RANGE_ROWS,
    UNKNOWN,
    Noted,
    Notes,
    PgTxn,
    Rows,
    wakes_on,
)

__all__ = [
    "GUESS_ABSENT",
    "GUESS_EMPTY",
    "RANGED",
    "REMEMBERED",
    "SELF_EVIDENT",
    "STALE",
    "Abandon",
    "Learned",
    "Odds",
    "RowCache",
    "SpecTxn",
    "noting",
    "speculate",
]

T = TypeVar("T")

#: The tables whose rows a store remembers from its own committed writes.
REMEMBERED = frozenset({"leases", "cancels", "paused", "stream_heads"})
#: The tables whose rows are rare (a cancel or pause request) or new (an event's id):
#: a key not remembered is guessed absent, and the guard checks the guess as any other.
GUESS_ABSENT = frozenset({"cancels", "paused", "event_ids", "stream_keys"})
#: The tables whose ranges (every row under a prefix, as an emit scans the agents, the
#: runs waiting for its event's name and a concurrency key's slots) and last keys (the
#: event log's head) a store remembers from its own committed writes.
RANGED = frozenset({"agents", "waits", "slots", "events"})
#: Of those, the tables whose ranges are usually empty (no run waits for an event of
#: that name; no run of that concurrency key is in line): guessed empty when not
#: remembered.
GUESS_EMPTY = frozenset({"waits", "slots"})
assert not RANGED & RUN_FIRST, "a guard reads a range by k alone"
#: How many rows a store remembers (each at most a lease's few hundred bytes): the
#: runs its workers hold at once, many times over. The oldest is forgotten first.
CACHE_ROWS = 4096
#: How many ranges and last keys (each at most ``RANGE_ROWS`` rows).
CACHE_RANGES = 1024
#: The SQLSTATEs of a speculative statement that wrote nothing for the normal way to
#: answer: a guard that found a row changed (division by zero); a guarded insert whose
#: row is there already (unique violation; see the module).
STALE = frozenset({"22012", "23505"})
#: The tables whose row, as an op inserts it, tells whether the statement committed:
#: a step names the worker and lease attempt its insert's guard checks (see the
#: module). A statement whose only write is such an insert carries no commit token.
#: Sound only while every speculable op whose one write is a row of these tables names
#: in that row the lease its guard checks: today only ``record_step`` (a new speculable
#: op writing a step alone, under another guard, must keep its token).
SELF_EVIDENT = frozenset({"steps"})


@attrs.define
class Learned:
    """What a committed write transaction leaves a store's remembered rows
    (:class:`RowCache`): each as it stood when the transaction committed."""

    #: Rows of :data:`REMEMBERED` tables read or written: (table, key) -> value.
    rows: Notes = attrs.Factory(dict)
    #: Ranges of :data:`RANGED` tables read whole: (table, prefix) -> their rows.
    ranges: dict[tuple[str, bytes], Rows] = attrs.Factory(dict)
    #: Last keys read: (table, prefix) -> the last key (None: the range is empty).
    lasts: dict[tuple[str, bytes], bytes | None] = attrs.Factory(dict)
    #: Keys written in ranged tables: what was remembered of the ranges holding them
    #: is forgotten (before the above is learned).
    wrote: list[tuple[str, bytes]] = attrs.Factory(list)

    @classmethod
    def of(cls, txn: PgTxn) -> Learned:
        """What a transaction of the normal way (:func:`noting`) noted."""
        ranges, lasts = txn.noted_ranges()
        return cls(txn.notes or {}, ranges, lasts, txn.wrote)


def noting(cur: Any, token: bytes) -> PgTxn:
    """A write transaction of the normal way on ``cur``, with its commit ``token``,
    noting what the remembered tables' rows and ranges are when it commits."""
    return PgTxn(cur, REMEMBERED, (MARK_COMMIT, (token,)), RANGED)


#: Consecutive stale guesses after which an op's next calls stop speculating: 2**n - 1
#: of them after the n+1th, at most ``2**MAX_BACKOFF - 1``.
MAX_BACKOFF = 6


class Odds:
    """Whether speculating an op is worth its statement, per kind of op (``emit``,
    ``append``, ``record_step``). A stale guess costs a round trip and a statement rolled back on
    the server; one now and then is the price of the hits, but a store whose guesses
    of an op keep failing (emitters on several servers: each one's head of the log is
    stale whenever another emitted since) sends the op's next calls the normal way:
    none after one stale guess, then 1, 3, 7... after each further one in a row, and
    every call speculates again after a hit. Shared by a store's threads; a race makes
    a count a little off, never an answer wrong (the guard decides that)."""

    def __init__(self) -> None:
        self._streak: dict[str, int] = {}
        self._skip: dict[str, int] = {}

    def worth(self, kind: str) -> bool:
        left = self._skip.get(kind, 0)
        if left > 0:
            self._skip[kind] = left - 1
            return False
        return True

    def stale(self, kind: str) -> None:
        streak = self._streak.get(kind, 0)
        self._streak[kind] = min(streak + 1, MAX_BACKOFF)
        self._skip[kind] = 2**streak - 1

    def hit(self, kind: str) -> None:
        self._streak[kind] = 0


class Abandon(Exception):
    """The op read what the remembered rows cannot answer: run it the normal way."""


class RowCache:
    """Remembered rows of :data:`REMEMBERED` tables, at most ``size``, and ranges and
    last keys of :data:`RANGED` tables, at most ``ranges``; oldest forgotten first.
    Shared by a store's threads; a value here is a guess, checked by the guard."""

    def __init__(self, size: int = CACHE_ROWS, ranges: int = CACHE_RANGES) -> None:
        self.size = size
        self.ranges = ranges
        self._rows: collections.OrderedDict[tuple[str, bytes], bytes | None] = (
            collections.OrderedDict()
        )
        #: (table, prefix) -> the range's rows and their guard blob (:func:`_blob`).
        self._ranges: collections.OrderedDict[tuple[str, bytes], tuple[Rows, bytes]] = (
            collections.OrderedDict()
        )
        self._lasts: collections.OrderedDict[tuple[str, bytes], bytes | None] = (
            collections.OrderedDict()
        )
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._rows)

    def get(self, table: str, key: bytes) -> Noted:
        """The remembered value (None: absent), or UNKNOWN."""
        return self._rows.get((table, key), UNKNOWN)

    def range(self, table: str, prefix: bytes) -> tuple[Rows, bytes] | None:
        """The remembered rows under ``prefix`` with their blob, or None: not known."""
        return self._ranges.get((table, prefix))

    def last(self, table: str, prefix: bytes) -> Noted:
        """The remembered last key under ``prefix`` (None: none), or UNKNOWN."""
        return self._lasts.get((table, prefix), UNKNOWN)

    def learn(self, learned: Learned) -> None:
        """What a committed transaction read or wrote last, newest remembered."""
        if not (learned.rows or learned.wrote or learned.ranges or learned.lasts):
            return
        rows = self._rows
        with self._lock:
            for key, value in learned.rows.items():
                if value is UNKNOWN:
                    rows.pop(key, None)
                else:
                    rows[key] = value
                    rows.move_to_end(key)
            while len(rows) > self.size:
                rows.popitem(last=False)
            for table, written in learned.wrote:
                for prefix in _prefixes(written):
                    self._ranges.pop((table, prefix), None)
                    self._lasts.pop((table, prefix), None)
            for at, found in learned.ranges.items():
                if len(found) > RANGE_ROWS:
                    continue
                known = self._ranges.get(at)
                self._ranges[at] = known if known and known[0] == found else (found, _blob(found))
                self._ranges.move_to_end(at)
            for at, last in learned.lasts.items():
                self._lasts[at] = last
                self._lasts.move_to_end(at)
            for kept in (self._ranges, self._lasts):
                while len(kept) > self.ranges:
                    kept.popitem(last=False)

    def forget(self, keys: Iterator[tuple[str, bytes]]) -> None:
        with self._lock:
            for key in keys:
                self._rows.pop(key, None)


def _prefixes(key: bytes) -> Iterator[bytes]:
    """The prefixes of ``key`` a remembered range may have: none, and each part of it
    up to a ``\\0`` (the keys' separator, ``_keys.py``). A range under another prefix
    is not forgotten when this store writes in it: its guard finds it changed."""
    yield b""
    at = key.find(b"\x00")
    while at >= 0:
        yield key[: at + 1]
        at = key.find(b"\x00", at + 1)


def _blob(rows: Rows) -> bytes:
    """Rows as the guard aggregates them (:func:`_guard_sql`): each key and value after
    its length, four bytes big-endian (``int4send(length(...))``)."""
    return b"".join(
        b"%s%s%s%s" % (len(k).to_bytes(4, "big"), k, len(v).to_bytes(4, "big"), v) for k, v in rows
    )


class SpecTxn:
    """A write transaction answered from a :class:`RowCache`: reads logged, writes
    queued (see the module). Implements the backend's WriteTxn."""

    __slots__ = ("_cache", "_overlay", "lasts", "ranges", "reads", "wakes", "writes")

    def __init__(self, cache: RowCache) -> None:
        self._cache = cache
        #: Each row read from the cache, with the value the op was given.
        self.reads: dict[tuple[str, bytes], bytes | None] = {}
        #: Each range read, (table, prefix) -> the rows given and their blob.
        self.ranges: dict[tuple[str, bytes], tuple[Rows, bytes]] = {}
        #: Each last key read, (table, prefix) -> the key given (None: none).
        self.lasts: dict[tuple[str, bytes], bytes | None] = {}
        #: The queued writes: (kind, table, key, value), kind put, add or discard.
        self.writes: list[tuple[str, str, bytes, bytes | None]] = []
        #: What the op's own writes left (UNKNOWN: an add over a row it never read).
        self._overlay: Notes = {}
        self.wakes = False

    # -- reads ---------------------------------------------------------------------------

    def get(self, table: str, key: bytes) -> bytes | None:
        row = (table, key)
        if row in self._overlay:
            mine = self._overlay[row]
            if mine is UNKNOWN:
                raise Abandon(table)
            return mine
        if row in self.reads:
            return self.reads[row]
        if table not in REMEMBERED and table not in GUESS_ABSENT:
            raise Abandon(table)
        value = self._cache.get(table, key)
        if value is UNKNOWN:
            if table not in GUESS_ABSENT:
                raise Abandon(table)
            value = None
        self.reads[row] = value
        return value

    def get_many(self, keys: Sequence[tuple[str, bytes]]) -> list[bytes | None]:
        return [self.get(table, key) for table, key in keys]

    def prefetch(
        self,
        *,
        gets: Sequence[tuple[str, bytes]] = (),
        scans: Sequence[Scan] = (),
        lasts: Sequence[tuple[str, bytes]] = (),
        claims: Sequence[Claiming] = (),
    ) -> None:
        return None  # a hint; a scan or a claim itself gives up

    def _wrote_under(self, table: str, prefix: bytes) -> bool:
        return any(t == table and k.startswith(prefix) for _, t, k, _ in self.writes)

    def last_key(self, table: str, prefix: bytes = b"") -> bytes | None:
        at = (table, prefix)
        last: bytes | None
        if at in self.lasts:
            last = self.lasts[at]
        else:
            if table not in RANGED:
                raise Abandon(table)
            known = self._cache.last(table, prefix)
            if known is UNKNOWN:
                raise Abandon(table)
            last = self.lasts[at] = known  # as the guard finds it: before the op's writes
        # After the op's own writes there (the second of two appends reads the log's
        # head after the first wrote it): the last of them, or give up after a delete.
        for kind, t, k, _ in self.writes:
            if t == table and k.startswith(prefix):
                if kind == "discard":
                    raise Abandon(table)
                if last is None or k > last:
                    last = k
        return last

    def scan(
        self,
        table: str,
        *,
        prefix: bytes = b"",
        start: bytes | None = None,
        reverse: bool = False,
    ) -> Iterator[tuple[bytes, bytes]]:
        """A range read whole, from the cache (a scan from a ``start``: given up)."""
        if start is not None or table not in RANGED or self._wrote_under(table, prefix):
            raise Abandon(table)
        at = (table, prefix)
        known = self.ranges.get(at)
        if known is None:
            known = self._cache.range(table, prefix)
            if known is None:
                if table not in GUESS_EMPTY:
                    raise Abandon(table)
                known = ((), b"")
            self.ranges[at] = known
        return iter(reversed(known[0]) if reverse else known[0])

    def count(self, table: str) -> int:
        raise Abandon(table)

    def claim(
        self,
        table: str,
        *,
        accept: Callable[[bytes, bytes], bool],
        limit: int,
        also: Sequence[str] = (),
    ) -> list[tuple[bytes, bytes]]:
        raise Abandon(table)

    # -- writes --------------------------------------------------------------------------

    def _queue(self, kind: str, table: str, key: bytes, value: bytes | None) -> None:
        self.writes.append((kind, table, key, value))
        if wakes_on(table, value):
            self.wakes = True

    def put(self, table: str, key: bytes, value: bytes) -> None:
        row = (table, key)
        if row in self._overlay:
            # A second put of a row (a stream's head, moved by each of two appends):
            # the one write both make, the last value, where the first was queued.
            for i, (kind, t, k, _) in enumerate(self.writes):
                if kind == "put" and t == table and k == key:
                    self.writes[i] = (kind, t, k, value)
                    self._overlay[row] = value
                    return
        self._queue("put", table, key, value)
        self._overlay[row] = value

    def add(self, table: str, key: bytes, value: bytes) -> None:
        self._queue("add", table, key, value)
        row = (table, key)
        # Over a row known absent it is the new value; otherwise whatever was there.
        known = self._overlay.get(row, self.reads.get(row, UNKNOWN))
        if known is None:
            self._overlay[row] = value
        elif known is UNKNOWN:
            self._overlay[row] = UNKNOWN

    def insert(self, table: str, key: bytes, value: bytes) -> bool:
        if self.get(table, key) is not None:
            return False
        self.add(table, key, value)
        return True

    def delete(self, table: str, key: bytes) -> bool:
        if self.get(table, key) is None:
            return False
        self.discard(table, key)
        return True

    def discard(self, table: str, key: bytes) -> None:
        self._queue("discard", table, key, None)
        self._overlay[(table, key)] = None

    # -- the one statement ---------------------------------------------------------------

    def evidence(self) -> Evidence | None:
        """The row that tells whether this op's statement committed, if its only write
        is an insert into a :data:`SELF_EVIDENT` table (see the module); else None: its
        statement carries a commit token."""
        if len(self.writes) != 1 or self.wakes:
            return None
        kind, table, key, value = self.writes[0]
        if kind != "add" or table not in SELF_EVIDENT or value is None:
            return None
        return table, key, value

    def statement(self, token: bytes | None) -> tuple[bytes, tuple[Any, ...], bool]:
        """The token's insert (None: no token, see :meth:`evidence`), the writes and the
        guard, as one statement: a transaction of its own (autocommit, the session's
        default isolation: SERIALIZABLE); and whether it is a guarded insert (no token,
        the :meth:`evidence` insert alone), which is stale unless it inserted one row."""
        params: list[Any] = [] if token is None else [token]
        for kind, table, key, value in self.writes:
            params.extend(write_params(kind, table, key, value))
        reads: list[tuple[str, str, bool, bool]] = []
        for (table, key), value in self.reads.items():
            sql = SQL[table]
            params.extend(sql.row(key) if value is None else sql.row(key, value))
            reads.append((_GET, table, value is None, False))
        given: list[tuple[str, tuple[str, bytes], bytes | None]]
        given = [(_RANGE, at, blob) for at, (_, blob) in self.ranges.items()]
        given += [(_LAST, at, last) for at, last in self.lasts.items()]
        for kind, (table, prefix), value in given:
            end = prefix_end(prefix)
            params.append(prefix)
            if end is not None:
                params.append(end)
            # A range's guard compares its blob; an empty one, or no last key: none.
            if value:
                params.append(value)
            reads.append((kind, table, not value, end is not None))
        writes = tuple((kind, table) for kind, table, _, _ in self.writes)
        guarded = token is None and self.evidence() is not None
        text = _guard_sql(writes, tuple(reads), self.wakes, token is not None, guarded)
        return text, tuple(params), guarded

    def learned(self) -> Learned:
        """What the committed transaction read and wrote of the remembered tables."""
        notes: Notes = {row: value for row, value in self.reads.items() if row[0] in REMEMBERED}
        for row, value in self._overlay.items():
            if row[0] in REMEMBERED:
                notes[row] = value
        wrote = [(t, k, kind, v) for kind, t, k, v in self.writes if t in RANGED]
        ranges: dict[tuple[str, bytes], Rows] = {}
        for (table, prefix), (rows, _) in self.ranges.items():
            after = dict(rows)
            for t, k, kind, v in wrote:
                if t == table and k.startswith(prefix):
                    if kind == "discard":
                        after.pop(k, None)
                    elif v is not None and (kind == "put" or k not in after):
                        after[k] = v
            ranges[table, prefix] = tuple(sorted(after.items()))
        lasts: dict[tuple[str, bytes], bytes | None] = {}
        for (table, prefix), last in self.lasts.items():
            for t, k, kind, _ in wrote:
                if t == table and k.startswith(prefix):
                    if kind != "discard" and (last is None or k > last):
                        last = k
                    elif kind == "discard" and k == last:
                        break  # the one before it is not known: not remembered
            else:
                lasts[table, prefix] = last
        return Learned(notes, ranges, lasts, [(t, k) for t, k, _, _ in wrote])


#: The kinds of read a guard checks: a row, a range read whole, a range's last key.
_GET, _RANGE, _LAST = "get", "range", "last"


@functools.lru_cache(maxsize=256)
def _guard_sql(
    writes: tuple[tuple[str, str], ...],
    reads: tuple[tuple[str, str, bool, bool], ...],
    wakes: bool,
    token: bool,
    guarded: bool = False,
) -> bytes:
    """``WITH`` the token's insert (if ``token``) and each write, ``SELECT 1 / (every
    read as the op was told)::int``: a row changed divides by zero, and the whole
    statement fails. The divisor reads the tables, so the planner cannot fold it to a
    constant. The reads see the snapshot the statement began with, not its own writes:
    read before written, as the op did. A transaction that made work sends its NOTIFY
    (delivered on commit). ``guarded``: the one write, an ``add``, as a plain insert
    of its row where every read is as the op was told (its WHERE reads before it
    inserts).

    Each read is ``(kind, table, none, bounded)``: ``none`` when the op was told the
    row absent, the range empty or without a last key; ``bounded`` when the range
    (``k >= prefix``) has an end (``AND k < end``). A range's rows are compared whole,
    aggregated as :func:`_blob` encodes them (never NULL there: the op was told some);
    a last key by ``IS NOT DISTINCT FROM``. None of these is NULL, which would make
    the division NULL, not an error."""
    parts = [b"t AS (%s)" % MARK_COMMIT] if token else []
    for i, (kind, table) in enumerate(writes):
        parts.append(b"w%d AS (%s)" % (i, write_sql(kind, table)))
    checks = []
    for kind, table, none, bounded in reads:
        sql = SQL[table]
        t = sql.table.encode()
        if kind == _GET:
            found = b"SELECT FROM %s WHERE %s" % (t, sql.at.encode())
            same = b"NOT EXISTS (%s)" if none else b"EXISTS (%s AND v = %%s)"
            checks.append(same % found)
            continue
        span = b"k >= %s AND k < %s" if bounded else b"k >= %s"
        if none:
            checks.append(b"NOT EXISTS (SELECT FROM %s WHERE %s)" % (t, span))
        elif kind == _RANGE:
            rows = b"int4send(length(k)) || k || int4send(length(v)) || v, ''::bytea ORDER BY k"
            checks.append(
                b"(SELECT string_agg(%s) FROM %s WHERE %s) IS NOT DISTINCT FROM %%s"
                % (rows, t, span)
            )
        else:
            checks.append(
                b"(SELECT k FROM %s WHERE %s ORDER BY k DESC LIMIT 1) IS NOT DISTINCT FROM %%s"
                % (t, span)
            )
    divisor = b" AND ".join(checks) if checks else b"true"
    if guarded:
        [(_, table)] = writes
        return SQL[table].insert_where + divisor
    notify = b", " + NOTIFY_CALL if wakes else b""
    return b"WITH " + b", ".join(parts) + b" SELECT 1 / (" + divisor + b")::int" + notify


def speculate(cache: RowCache, op: Callable[[WriteTxn], T]) -> tuple[SpecTxn, T] | None:
    """``op`` run on the remembered rows: its transaction and result, or None when it
    read what they cannot answer, wrote one row twice, or raised (an error decided on
    guessed rows is not the op's answer: the normal path gives the real one)."""
    txn = SpecTxn(cache)
    try:
        result = op(txn)
    except Exception:
        return None
    if len({(table, key) for _, table, key, _ in txn.writes}) < len(txn.writes):
        return None  # two writes to one row: their order in one statement is undefined
    return txn, result

"""The backend interface's transactions on one PostgreSQL connection.

``_pgbackend.py`` owns the connections and the transactions' lives (pooling, pipeline
mode, retries, commit), ``_pgsql.py`` the statements' text; this module maps each
read and write of a transaction (``_backend.py``) onto the tables of ``_pgschema.py``,
with as few round trips as the interface allows:

- ``get_many`` and ``prefetch`` answer several reads with one query, and what a
  prefetch read is kept for the rest of the transaction: a scan over a range it covers,
  or a ``get`` of a key in that range, is answered without asking the server again.
  The snapshot does not move within a transaction, and the transaction's own writes are
  applied to what is kept, so it stays what the server would answer.
- ``last_key`` fetches one key (``ORDER BY k DESC LIMIT 1``), not a page of rows with
  their values, and is kept as a prefetch's reads are.
- ``put``, ``add`` and ``discard`` are queued, and sent as one statement (data-modifying
  ``WITH`` parts, each a distinct row, so their order does not matter) with the commit,
  or before a read whose range holds a queued row (a second write to a queued row
  replaces it by the one write both make together): nobody waits for their answer, and
  each statement costs the client a trip through psycopg's pipeline (about 25 µs of
  CPU, measured) and the server a parse and plan. A read of other rows answers the same
  before or after them: one snapshot.
- ``claim`` locks all its rows with one ``FOR UPDATE SKIP LOCKED`` query. A claim the
  rule announced (``prefetch``'s ``claims``) is made in the prefetch's query: the rows
  it guesses, locked, and its ``also`` rows of them; a claim that then takes only rows
  locked so is answered without asking the server, any other is made as usual.
"""

from __future__ import annotations

import bisect
import enum
import functools
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Final, Generic, Literal, TypeVar

import attrs

from ironflow.store._backend import Claiming, ReadTxn, Scan, prefix_end
from ironflow.store._pgsql import (
    GET,
    LAST,
    REVERSE,
    SCAN,
    SQL,
    WHOLE,
    batch_sql,
    write_params,
    writes_sql,
)

__all__ = [
    "RANGE_ROWS",
    "UNKNOWN",
    "WAKES",
    "Noted",
    "Notes",
    "PgTxn",
    "ReadAfter",
    "Rows",
    "wakes_on",
]

#: Writes to these tables make work for someone: their commit wakes the listeners.
WAKES = frozenset({"ready", "timers", "events", "projections", "projection_leases"})


class _Unknown(enum.Enum):
    """A row written without its value being learned (``add`` over a row never read, an
    insert that found a row): what a cache of rows must forget, not remember."""

    UNKNOWN = "unknown"


UNKNOWN: Final = _Unknown.UNKNOWN
#: What a transaction learned of some tables' rows: (table, key) -> the value it last
#: read or wrote (None: absent), or UNKNOWN. Kept for ``_pgspec.py``'s remembered rows.
Noted = bytes | None | Literal[_Unknown.UNKNOWN]
Notes = dict[tuple[str, bytes], Noted]
#: A range's rows, as read (key order).
Rows = tuple[tuple[bytes, bytes], ...]
#: A range of more rows than this is not noted (its guard would re-read them all).
RANGE_ROWS = 256


def wakes_on(table: str, value: bytes | None) -> bool:
    """Whether writing ``value`` (None: deleting) to ``table`` makes work for someone:
    a lease gone (finish, release, cancel) also frees a concurrency slot."""
    return table in WAKES or (value is None and table == "leases")


#: The first page of a scan is small (most scans stop early), later ones grow.
_FIRST_PAGE, _LAST_PAGE = 16, 1024


def _after(key: bytes) -> bytes:
    """The first key after ``key`` (bytes order: ``key`` followed by a zero byte)."""
    return key + b"\x00"


class _Cover:
    """Every row of one table in ``[lo, hi)`` (``hi`` None: to the end), as read."""

    __slots__ = ("hi", "keys", "lo", "values")

    def __init__(self, lo: bytes, hi: bytes | None, rows: list[tuple[bytes, bytes]]) -> None:
        rows.sort()
        self.lo, self.hi = lo, hi
        self.keys = [k for k, _ in rows]
        self.values = [v for _, v in rows]

    def holds(self, key: bytes) -> bool:
        return self.lo <= key and (self.hi is None or key < self.hi)

    def wrote(self, key: bytes, value: bytes | None, *, replace: bool) -> None:
        """The transaction wrote ``key`` (None: deleted it); ``replace`` False: only if
        absent (``INSERT ... ON CONFLICT DO NOTHING``)."""
        i = bisect.bisect_left(self.keys, key)
        if i < len(self.keys) and self.keys[i] == key:
            if value is None:
                del self.keys[i], self.values[i]
            elif replace:
                self.values[i] = value
        elif value is not None:
            self.keys.insert(i, key)
            self.values.insert(i, value)


def _range(scan: Scan, start: bytes | None) -> tuple[bytes, bytes | None] | None:
    """The key range ``[lo, hi)`` a scan walks (None: empty)."""
    prefix = scan.prefix
    end = prefix_end(prefix)
    if not scan.reverse:
        lo = prefix if start is None or start < prefix else start
        if end is not None and lo >= end:
            return None
        return lo, end
    if start is None:
        return prefix, end
    if start < prefix:
        return None
    # ``<= start`` when the start lies inside the prefix's range, else ``< end``.
    return prefix, _after(start) if end is None or start < end else end


U = TypeVar("U")


@attrs.frozen
class ReadAfter(Generic[U]):
    """A read made once a write transaction committed (``PostgresBackend.write_then_read``):
    ``scans`` read whole (:meth:`PgTxn.send_whole`), then ``answer`` made from them."""

    scans: Sequence[Scan]
    answer: Callable[[ReadTxn], U]


class PgTxn:
    """A transaction of the backend interface on one connection."""

    __slots__ = (
        "_covers", "_cur", "_first", "_held", "_lasts", "_noted", "_queued", "_ranged",
        "_ranges", "_writes", "notes", "wakes", "wrote",
    )  # fmt: skip

    def __init__(
        self,
        cur: Any,
        noted: frozenset[str] = frozenset(),
        first: tuple[bytes, tuple[Any, ...]] | None = None,
        ranged: frozenset[str] = frozenset(),
    ) -> None:
        self._cur = cur
        self.wakes = False
        #: Tables whose ranges read whole (a scan by prefix) and last keys are noted,
        #: as are the keys written in them (:meth:`noted_ranges`).
        self._ranged = ranged
        self._ranges: set[tuple[str, bytes]] = set()
        self.wrote: list[tuple[str, bytes]] = []
        #: Writes made so far: a scan with a write in its middle is not noted.
        self._writes = 0
        #: A write of no table the op reads (the commit token's), sent with the queued.
        self._first = first
        #: The writes not sent yet, by row: (kind, value); see the module.
        self._queued: dict[tuple[str, bytes], tuple[str, bytes | None]] = {}
        #: What it read and wrote last of the ``noted`` tables' rows (None: no table).
        self.notes: Notes | None = {} if noted else None
        self._noted = noted
        #: Per table, the key ranges read whole by a prefetch or get_many (see module).
        self._covers: dict[str, list[_Cover]] = {}
        #: The last key of ``(table, prefix)`` as read, with this transaction's writes.
        self._lasts: dict[tuple[str, bytes], bytes | None] = {}
        #: Per table, the keys an announced claim locked (``prefetch``'s ``claims``).
        self._held: dict[str, frozenset[bytes]] = {}

    def _one(self, query: bytes, params: tuple[Any, ...]) -> Any:
        self._cur.execute(query, params)
        return self._cur.fetchone()

    def _serving(self, table: str, lo: bytes, hi: bytes | None, reverse: bool) -> _Cover | None:
        """The cover holding the start of a scan of ``[lo, hi)``: its first key forwards,
        the keys just below ``hi`` backwards."""
        for cover in self._covers.get(table, ()):
            if not reverse:
                if cover.holds(lo):
                    return cover
            elif hi is None:
                if cover.hi is None:
                    return cover
            elif cover.lo < hi and (cover.hi is None or hi <= cover.hi):
                return cover
        return None

    def _cover(self, table: str, key: bytes) -> _Cover | None:
        for cover in self._covers.get(table, ()):
            if cover.holds(key):
                return cover
        return None

    # -- reads ---------------------------------------------------------------------------

    def get(self, table: str, key: bytes) -> bytes | None:
        cover = self._cover(table, key)
        if cover is not None:
            i = bisect.bisect_left(cover.keys, key)
            found = i < len(cover.keys) and cover.keys[i] == key
            value = cover.values[i] if found else None
        else:
            self._sent_before(table, key, _after(key))
            sql = SQL[table]
            row = self._one(sql.get, sql.row(key))
            value = None if row is None else bytes(row[0])
        if self.notes is not None and table in self._noted:
            self.notes[(table, key)] = value
        return value

    def get_many(self, keys: Sequence[tuple[str, bytes]]) -> list[bytes | None]:
        self.prefetch(gets=keys)
        return [self.get(table, key) for table, key in keys]

    def last_key(self, table: str, prefix: bytes = b"") -> bytes | None:
        if (table, prefix) not in self._lasts:
            lo, hi = _range(Scan(table, prefix, reverse=True), None) or (prefix, None)
            if self._serving(table, lo, hi, True) is not None:
                # A reverse scan's page read it already.
                for key, _ in self.scan(table, prefix=prefix, reverse=True):
                    return key
                return None
            self.prefetch(lasts=((table, prefix),))
        return self._lasts[table, prefix]

    def prefetch(
        self,
        *,
        gets: Sequence[tuple[str, bytes]] = (),
        scans: Sequence[Scan] = (),
        lasts: Sequence[tuple[str, bytes]] = (),
        claims: Sequence[Claiming] = (),
    ) -> None:
        reads: list[tuple[str, str, str]] = []
        params: list[Any] = []
        ranges: list[tuple[str, bytes, bytes | None]] = []
        for table, key in gets:
            if self._cover(table, key) is None:
                reads.append((table, GET, ""))
                params.extend(SQL[table].row(key))
                ranges.append((table, key, _after(key)))
        for scan in scans:
            span = _range(scan, None)
            if span is None or self._serving(scan.table, *span, scan.reverse) is not None:
                continue
            lo, hi = span
            # An unbounded range is bounded by a key past every key (keys are < 512 bytes).
            form, bounds = SQL[scan.table].span(lo, hi if hi is not None else _PAST_ALL)
            reads.append((scan.table, REVERSE if scan.reverse else SCAN, form))
            params.extend((*bounds, _FIRST_PAGE))
            ranges.append((scan.table, lo, hi))
        for table, prefix in lasts:
            if (table, prefix) in self._lasts:
                continue
            hi = prefix_end(prefix)
            form, bounds = SQL[table].span(prefix, hi if hi is not None else _PAST_ALL)
            reads.append((table, LAST, form))
            params.extend(bounds)
            ranges.append((table, prefix, hi))
        # Once per table: a claim announced again (a lease after a finish) is the same.
        claiming = [c for c in claims if c.limit > 0 and c.values and c.table not in self._held]
        if claiming:
            # Their rows and ``also`` rows are not known before the answer: anything
            # queued there goes first, so what is read and locked is this transaction's.
            for claim in claiming:
                for table in (claim.table, *claim.also):
                    self._sent_before(table, b"", None)
            params[:0] = [p for c in claiming for p in (list(c.values), c.limit)]
        if reads or claiming:
            self._send(reads, params, ranges, claiming)
            self._receive(reads, ranges, claiming)

    def send_whole(self, scans: Sequence[Scan]) -> Callable[[], None]:
        """Send one query for every row of each scan's range, not waiting for its
        answer; return what takes the answer in once it is there (in pipeline mode:
        after a sync, or the pipeline's end), after which those ranges are read whole,
        as a prefetch's, and answered here. ``_pgbackend`` sends it after a commit."""
        reads: list[tuple[str, str, str]] = []
        params: list[Any] = []
        ranges: list[tuple[str, bytes, bytes | None]] = []
        for scan in scans:
            span = _range(scan, None)
            if span is None:
                continue
            lo, hi = span
            form, bounds = SQL[scan.table].span(lo, hi if hi is not None else _PAST_ALL)
            reads.append((scan.table, WHOLE, form))
            params.extend(bounds)
            ranges.append((scan.table, lo, hi))
        if not reads:
            return lambda: None
        self._send(reads, params, ranges)
        return functools.partial(self._receive, reads, ranges)

    def _send(
        self,
        reads: list[tuple[str, str, str]],
        params: list[Any],
        ranges: list[tuple[str, bytes, bytes | None]],
        claims: Sequence[Claiming] = (),
    ) -> None:
        if self._queued:
            for table, lo, hi in ranges:
                self._sent_before(table, lo, hi)
        shapes = tuple((c.table, c.also) for c in claims)
        self._cur.execute(batch_sql(tuple(reads), shapes), tuple(params))

    def _receive(
        self,
        reads: list[tuple[str, str, str]],
        ranges: list[tuple[str, bytes, bytes | None]],
        claims: Sequence[Claiming] = (),
    ) -> None:
        found: list[list[tuple[bytes, bytes]]] = [
            [] for _ in range(len(reads) + sum(1 + len(c.also) for c in claims))
        ]
        for i, k, v in self._cur.fetchall():
            found[i].append((bytes(k), b"" if v is None else bytes(v)))
        tag = len(reads)
        for claim in claims:
            held = self._held[claim.table] = frozenset(k for k, _ in found[tag])
            for other in claim.also:
                tag += 1
                under: dict[bytes, list[tuple[bytes, bytes]]] = {k: [] for k in held}
                for k, v in found[tag]:
                    under[k].append((k, v))
                # Each key's row, or its absence, as a get of it would have read it.
                for k, row in under.items():
                    if self._cover(other, k) is None:
                        self._covers.setdefault(other, []).append(_Cover(k, _after(k), row))
            tag += 1
        for (table, lo, hi), rows, (_, kind, _) in zip(
            ranges, found[: len(reads)], reads, strict=True
        ):
            if kind == LAST:
                self._lasts[table, lo] = rows[0][0] if rows else None
                continue
            if kind in (SCAN, REVERSE) and len(rows) >= _FIRST_PAGE:
                # A full page: only the part of the range up to its last row is known.
                if kind == REVERSE:
                    lo = min(k for k, _ in rows)
                else:
                    hi = _after(max(k for k, _ in rows))
            self._covers.setdefault(table, []).append(_Cover(lo, hi, rows))

    def ended(self) -> None:
        """The transaction has ended (its connection may serve another): from here on
        a read that what it read cannot answer is an error, never sent."""
        self._cur = _ENDED

    def scan(
        self,
        table: str,
        *,
        prefix: bytes = b"",
        start: bytes | None = None,
        reverse: bool = False,
    ) -> Iterator[tuple[bytes, bytes]]:
        if start is None and table in self._ranged:
            return self._noting(table, prefix, reverse)
        return self._scan(table, prefix, start, reverse)

    def _noting(self, table: str, prefix: bytes, reverse: bool) -> Iterator[tuple[bytes, bytes]]:
        """A scan of a ranged table's prefix, noted once read to its end with no write
        in between (and kept as a prefetch's reads are, if no prefetch covered it)."""
        writes = self._writes
        rows = []
        for row in self._scan(table, prefix, None, reverse):
            rows.append(row)
            yield row
        span = _range(Scan(table, prefix), None)
        if span is None or self._writes != writes or len(rows) > RANGE_ROWS:
            return
        if self._whole(table, *span) is None:
            self._covers.setdefault(table, []).append(_Cover(*span, rows))
        self._ranges.add((table, prefix))

    def _whole(self, table: str, lo: bytes, hi: bytes | None) -> _Cover | None:
        """A cover holding all of ``[lo, hi)``."""
        for cover in self._covers.get(table, ()):
            if cover.lo <= lo and (cover.hi is None or (hi is not None and hi <= cover.hi)):
                return cover
        return None

    def noted_ranges(
        self,
    ) -> tuple[dict[tuple[str, bytes], Rows], dict[tuple[str, bytes], bytes | None]]:
        """The ranges (table, prefix) read whole and the last keys read of the ranged
        tables, as this transaction's writes left them."""
        ranges: dict[tuple[str, bytes], Rows] = {}
        for table, prefix in self._ranges:
            lo, hi = _range(Scan(table, prefix), None) or (prefix, prefix)
            cover = self._whole(table, lo, hi)
            if cover is not None:
                i = bisect.bisect_left(cover.keys, lo)
                j = len(cover.keys) if hi is None else bisect.bisect_left(cover.keys, hi)
                ranges[table, prefix] = tuple(zip(cover.keys[i:j], cover.values[i:j], strict=True))
        return ranges, {at: key for at, key in self._lasts.items() if at[0] in self._ranged}

    def _scan(
        self, table: str, prefix: bytes, start: bytes | None, reverse: bool
    ) -> Iterator[tuple[bytes, bytes]]:
        span = _range(Scan(table, prefix, reverse), start)
        if span is None:
            return
        lo, hi = span
        # What a prefetch read of this range is served from it; the rest from the server.
        cover = self._serving(table, lo, hi, reverse)
        if cover is not None:
            bottom = bisect.bisect_left(cover.keys, lo)
            top = len(cover.keys) if hi is None else bisect.bisect_left(cover.keys, hi)
            if not reverse:
                for i in range(bottom, top):
                    yield cover.keys[i], cover.values[i]
                if cover.hi is None or (hi is not None and hi <= cover.hi):
                    return
                lo = cover.hi
            else:
                for i in range(top - 1, bottom - 1, -1):
                    yield cover.keys[i], cover.values[i]
                if cover.lo <= lo:
                    return
                hi = cover.lo
        yield from self._pages(table, lo, hi, reverse)

    def _pages(
        self, table: str, lo: bytes, hi: bytes | None, reverse: bool
    ) -> Iterator[tuple[bytes, bytes]]:
        """The rows of ``[lo, hi)`` from the server, a page at a time."""
        sql = SQL[table]
        size = _FIRST_PAGE
        while True:
            form, bounds = sql.span(lo, hi)
            self._sent_before(table, lo, hi)
            self._cur.execute(sql.page(form, reverse=reverse), (*bounds, size))
            rows = self._cur.fetchall()
            for k, v in rows:
                yield bytes(k), bytes(v)
            if len(rows) < size:
                return
            # The next page starts past the last key seen.
            if reverse:
                hi = bytes(rows[-1][0])
            else:
                lo = _after(bytes(rows[-1][0]))
            size = min(size * 2, _LAST_PAGE)

    def count(self, table: str) -> int:
        self._sent_before(table, b"", None)
        row = self._one(SQL[table].count, ())
        return int(row[0])

    # -- writes --------------------------------------------------------------------------

    def _wrote(self, table: str, key: bytes, value: bytes | None, *, replace: bool = True) -> None:
        self._writes += 1
        if table in self._ranged:
            self.wrote.append((table, key))
        # What was read of the table is kept true: the write is applied to it too.
        for cover in self._covers.get(table, ()):
            if cover.holds(key):
                cover.wrote(key, value, replace=replace)
        if self._lasts:
            self._wrote_last(table, key, value is not None)
        if wakes_on(table, value):
            self.wakes = True
        notes = self.notes
        if notes is not None and table in self._noted:
            row = (table, key)
            if replace or value is None or notes.get(row, UNKNOWN) is None:
                notes[row] = value
            elif row not in notes:
                notes[row] = UNKNOWN  # added over a row it never read: value unknown

    def _wrote_last(self, table: str, key: bytes, present: bool) -> None:
        """A write to ``key`` (``present``: put, else deleted) moves the last keys kept."""
        for space, prefix in list(self._lasts):
            if space != table or not key.startswith(prefix):
                continue
            last = self._lasts[space, prefix]
            if present:
                if last is None or key > last:
                    self._lasts[space, prefix] = key
            elif key == last:
                # The one before it is not known here: the next last_key asks.
                del self._lasts[space, prefix]

    def _queue(self, kind: str, table: str, key: bytes, value: bytes | None) -> None:
        row = (table, key)
        before = self._queued.get(row)
        # One statement may hold one write of a row (which part of a WITH wins is not
        # defined): two become the one write that leaves what both would (several appends
        # to a stream in one transaction each move its head). Only an add needs a rule:
        # after a put or an add the row is there and it does nothing; after a discard the
        # row is gone and it inserts.
        if before is not None and kind == "add":
            if before[0] != "discard":
                return
            kind = "put"
        self._queued[row] = (kind, value)

    def _sent_before(self, table: str, lo: bytes, hi: bytes | None) -> None:
        """Send the queued writes if one is in ``[lo, hi)`` of ``table`` (hi None: to the
        end), before a statement that reads or writes there."""
        for space, key in self._queued:
            if space == table and lo <= key and (hi is None or key < hi):
                self.flush()
                return

    def flush(self, *, notify: bool = False) -> None:
        """Send the queued writes (and ``first``, and a NOTIFY if ``notify``) now, as one
        statement, unanswered. The backend calls it before COMMIT."""
        queued, first = self._queued, self._first
        if not queued and first is None and not notify:
            return
        self._queued, self._first = {}, None
        shape = tuple((kind, table) for (table, _), (kind, _) in queued.items())
        params: list[Any] = [] if first is None else list(first[1])
        for (table, key), (kind, value) in queued.items():
            params.extend(write_params(kind, table, key, value))
        self._cur.execute(writes_sql(None if first is None else first[0], shape, notify), params)

    def put(self, table: str, key: bytes, value: bytes) -> None:
        self._queue("put", table, key, value)
        self._wrote(table, key, value)

    def insert(self, table: str, key: bytes, value: bytes) -> bool:
        sql = SQL[table]
        self._sent_before(table, key, _after(key))
        done = self._one(sql.insert, sql.row(key, value)) is not None
        if done:
            self._wrote(table, key, value)
        else:
            self._there(table, key)
        return done

    def add(self, table: str, key: bytes, value: bytes) -> None:
        # Not waited for: queued (see the module).
        self._queue("add", table, key, value)
        self._wrote(table, key, value, replace=False)

    def delete(self, table: str, key: bytes) -> bool:
        sql = SQL[table]
        self._sent_before(table, key, _after(key))
        done = self._one(sql.delete, sql.row(key)) is not None
        if done:
            self._wrote(table, key, None)
        elif self.notes is not None and table in self._noted:
            self.notes[(table, key)] = None
        return done

    def _there(self, table: str, key: bytes) -> None:
        """An insert found ``key``: there, with a value unknown unless read before."""
        notes = self.notes
        if notes is not None and table in self._noted and notes.get((table, key)) is None:
            notes[(table, key)] = UNKNOWN

    def discard(self, table: str, key: bytes) -> None:
        # Not waited for, as ``add``.
        self._queue("discard", table, key, None)
        self._wrote(table, key, None)

    def claim(
        self,
        table: str,
        *,
        accept: Callable[[bytes, bytes], bool],
        limit: int,
        also: Sequence[str] = (),
    ) -> list[tuple[bytes, bytes]]:
        """Accepted rows in key order, each locked ``FOR UPDATE SKIP LOCKED`` (one query
        for them all): a row another transaction is taking is passed over, not waited for.
        The ``also`` tables' rows of every key offered are read in the same round trip
        (pipelined: a query of their own, answered with the claim's)."""
        if limit <= 0:
            return []
        # A few more than asked: some may be locked by another leaser.
        accepted = list(self._accepted(table, accept, limit * 4))
        if not accepted:
            return []
        held = self._held.get(table)
        if held is not None and all(key in held for key, _ in accepted[:limit]):
            # Locked already by the claim announced (``prefetch``): exactly what the
            # query below would take (the first rows offered no one else holds), and
            # their ``also`` rows were read with them.
            return accepted[:limit]
        keys = [key for key, _ in accepted]
        if self._queued:
            for key in keys:
                self._sent_before(table, key, _after(key))
        sql = SQL[table]
        # Its own cursor: the prefetch below is sent on this one before either answer
        # is read, and a pipelined cursor keeps only its last query's rows.
        claiming = self._cur.connection.cursor(binary=True)
        claiming.execute(sql.claim, sql.claim_params(keys, limit))
        if also:
            self.prefetch(gets=[(other, key) for key in keys for other in also])
        return [(bytes(k), bytes(v)) for k, v in claiming.fetchall()]

    def _accepted(
        self, table: str, accept: Callable[[bytes, bytes], bool], most: int
    ) -> Iterator[tuple[bytes, bytes]]:
        found = 0
        for key, value in self.scan(table):
            if accept(key, value):
                yield key, value
                found += 1
                if found >= most:
                    return


#: A key past every key (keys are at most 511 bytes), bounding a range with no end.
_PAST_ALL = b"\xff" * 512


class _Ended:
    """The cursor of a transaction that ended: nothing more can be read in it."""

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a read in a PostgreSQL transaction that has ended")


_ENDED = _Ended()

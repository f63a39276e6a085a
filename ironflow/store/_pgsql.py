"""The SQL a PostgreSQL transaction sends: each table's statements, a batch of reads
(and the claims announced with them) as one query, the queued writes as one statement,
the commit token and the wake-up; what every pooled session sets, and the leasers'
lock taken and given back.

Text only, built once per shape and cached: ``_pgtxn.py`` runs it on a connection
(what is read, kept and written when), ``_pgspec.py`` builds its guarded statements
from it, ``_pgcommits.py`` looks up tokens with it, ``_pgbackend.py`` sets up sessions and
leases with it. The tables are ``_pgschema.py``'s.
"""

from __future__ import annotations

import functools
import os
import time
from typing import Any

from ironflow.store._backend import TABLES
from ironflow.store._pgschema import RUN_FIRST, RUN_OF, table_name

__all__ = [
    "BEGIN_ORDERED_READ",
    "CHANNEL",
    "GET",
    "LAST",
    "LEASE_KEY",
    "LEASE_UNLOCK",
    "MARK_COMMIT",
    "NOTIFY_CALL",
    "REVERSE",
    "SCAN",
    "SESSION",
    "SQL",
    "WHOLE",
    "batch_sql",
    "lease_lock",
    "new_token",
    "write_params",
    "write_sql",
    "writes_sql",
]

#: The channel of wake-ups (``NOTIFY``, ``LISTEN``).
CHANNEL = "ironflow_work"

#: The leasers' lock's key (a session advisory lock; migrations use another key).
LEASE_KEY = "hashtext('ironflow lease')"
#: Releases every session advisory lock of the connection: the leasers' lock if this
#: session holds it, nothing (and no warning, unlike pg_advisory_unlock) if it does not.
LEASE_UNLOCK = b"SELECT pg_advisory_unlock_all()"
#: What each pooled session sets. ``synchronous_commit``: durable before a write
#: returns, whatever the server's default says. ``default_transaction_isolation``: a
#: statement sent alone (a speculative write, ``_pgspec.py``) is a SERIALIZABLE
#: transaction of its own; every other transaction says its level in its BEGIN. TCP
#: keepalives and a user timeout on the server's side of the connection: a client host
#: that vanishes (a partition, not a kill, which closes the socket at once) is noticed
#: in about 25 s, and its session, with the leasers' lock it may hold, dropped (the
#: OS's default is about two hours). Ignored on a unix socket. ``application_name``:
#: the session's own name, by which a lost answer's session is ended before its write
#: is looked for (``_pgcommits.end_session``), and ``ironflow store migrate`` sees it.
SESSION = (
    b"SELECT set_config('synchronous_commit', 'on', false),"
    b" set_config('default_transaction_isolation', 'serializable', false),"
    b" set_config('tcp_keepalives_idle', '10', false),"
    b" set_config('tcp_keepalives_interval', '5', false),"
    b" set_config('tcp_keepalives_count', '3', false),"
    b" set_config('tcp_user_timeout', '25000', false),"
    b" set_config('application_name', %s, false)"
)


def lease_lock(wait: float) -> bytes:
    """Take the leasers' lock, waiting at most ``wait`` seconds; never an error: a lock
    not obtained in time leaves the session without it (``lock_timeout`` raises
    lock_not_available, caught here, so the pipeline it runs in goes on)."""
    ms = max(1, round(wait * 1000))
    return (
        "DO $$BEGIN"
        f" SET LOCAL lock_timeout = '{ms}ms';"
        f" PERFORM pg_advisory_lock({LEASE_KEY});"
        " EXCEPTION WHEN lock_not_available THEN NULL;"
        " END$$"
    ).encode()


#: A read ordered after the writes it must see (``PostgresBackend.read_serializable``).
BEGIN_ORDERED_READ = b"BEGIN ISOLATION LEVEL SERIALIZABLE READ ONLY"


class _Sql:
    """The statements of one table, built once."""

    __slots__ = (
        "add",
        "at",
        "claim",
        "count",
        "delete",
        "discard",
        "first",
        "get",
        "insert",
        "insert_where",
        "put",
        "run_of",
        "table",
    )

    def __init__(self, space: str) -> None:
        t = table_name(space)
        self.table = t
        self.run_of = RUN_OF.get(space)
        #: How to read the run id from a key of a table scanned by its primary key
        #: (``_pgschema.RUN_FIRST``: no index on ``k``); None for the others.
        self.first = self.run_of if space in RUN_FIRST else None
        #: A row is found by its primary key: ``row(key)`` gives the parameters.
        self.at = "k = %s" if self.run_of is None else "run = %s AND k = %s"
        self.get = f"SELECT v FROM {t} WHERE {self.at}".encode()
        self.count = f"SELECT count(*) FROM {t}".encode()
        # Every key's run named too, for the primary key (each key names its run: the
        # rows are exactly those of the keys).
        runs = "" if self.first is None else "run = ANY(%s) AND "
        self.claim = (
            f"SELECT k, v FROM {t} WHERE {runs}k = ANY(%s) ORDER BY k LIMIT %s"
            " FOR UPDATE SKIP LOCKED"
        ).encode()
        if self.run_of is not None:
            names, marks, conflict = "(run, k, v)", "%s, %s, %s", "(run, k)"
        else:
            names, marks, conflict = "(k, v)", "%s, %s", "(k)"
        cols = f"{names} VALUES ({marks})"
        #: A plain insert of one row if a condition holds (``_pgspec``: a guarded insert):
        #: the condition follows.
        self.insert_where = f"INSERT INTO {t} {names} SELECT {marks} WHERE ".encode()
        self.discard = f"DELETE FROM {t} WHERE {self.at}".encode()
        self.put = (
            f"INSERT INTO {t} {cols} ON CONFLICT {conflict} DO UPDATE SET v = EXCLUDED.v"
        ).encode()
        self.add = f"INSERT INTO {t} {cols} ON CONFLICT DO NOTHING".encode()
        # The answer in a row, not a row count: a pipelined statement's count is not
        # known until its results are read, and fetching a row reads them.
        self.insert = self.add + b" RETURNING 1"
        self.delete = self.discard + b" RETURNING 1"

    def row(self, key: bytes, *rest: bytes) -> tuple[bytes, ...]:
        return (key, *rest) if self.run_of is None else (self.run_of(key), key, *rest)

    def claim_params(self, keys: list[bytes], limit: int) -> tuple[Any, ...]:
        if self.first is None:
            return keys, limit
        return [self.first(key) for key in keys], keys, limit

    def span(self, lo: bytes, hi: bytes | None) -> tuple[str, tuple[bytes, ...]]:
        """How rows of ``[lo, hi)`` (``hi`` None: to the end) are read: the form of
        :meth:`page` and :meth:`last`, and its bounds' parameters.

        A table scanned by its primary key bounds the run too, so the scan starts at
        ``lo``: one run's range names its run; a range across runs bounds them (a key
        at least ``lo`` has a run id at least ``lo``'s, a key below ``hi`` one at most
        ``hi``'s: ``_pgschema.RUN_FIRST`` says why)."""
        first = self.first
        if first is None:
            return (_FROM, (lo,)) if hi is None else (_RANGE, (lo, hi))
        run = first(lo)
        if hi is not None and len(run) < len(lo) and hi <= run + b"\x01":
            return _RUN, (run, lo, hi)  # lo is in the run's keys, hi at most past them
        if hi is None:
            return _RUNS_FROM, (run, lo)
        return _RUNS, (run, first(hi), lo, hi)

    def page(self, form: str, *, reverse: bool, tag: int | None = None) -> bytes:
        """Rows of a :meth:`span`, in key order, at most a limit (the last parameter)."""
        cols = "k, v" if tag is None else f"{tag}, k, v"
        return f"SELECT {cols} FROM {self.table} {_WHERE[form, reverse]} LIMIT %s".encode()

    def whole(self, form: str, tag: int) -> bytes:
        """A batch's rows of a :meth:`span`, every one (no limit)."""
        return f"SELECT {tag}, k, v FROM {self.table} {_WHERE[form, False]}".encode()

    def last(self, form: str, tag: int) -> bytes:
        """A batch's row of the last key of a :meth:`span`, with no value (NULL)."""
        return (
            f"SELECT {tag}, k, NULL::bytea FROM {self.table} {_WHERE[form, True]} LIMIT 1"
        ).encode()


#: The forms of a range read (``_Sql.span``): from ``lo``, or ``[lo, hi)``, by ``k``;
#: by the primary key, one run's ``[lo, hi)``, or across runs from ``lo`` or ``[lo, hi)``.
_FROM, _RANGE, _RUN, _RUNS_FROM, _RUNS = "from", "range", "run", "runs from", "runs"
_WHERE = {
    (form, reverse): f"WHERE {where} ORDER BY {order.format(' DESC' if reverse else '')}"
    for form, where, order in (
        (_FROM, "k >= %s", "k{0}"),
        (_RANGE, "k >= %s AND k < %s", "k{0}"),
        (_RUN, "run = %s AND k >= %s AND k < %s", "k{0}"),
        (_RUNS_FROM, "run >= %s AND k >= %s", "run{0}, k{0}"),
        (_RUNS, "run >= %s AND run <= %s AND k >= %s AND k < %s", "run{0}, k{0}"),
    )
    for reverse in (False, True)
}


#: Each table's statements (``_pgspec.py`` builds its writes from them too).
SQL = {space: _Sql(space) for space in TABLES}


#: The kinds of read a batch makes: a get, a scan's first page either way, a last key,
#: a whole range (every row, no page).
GET, SCAN, REVERSE, LAST, WHOLE = "get", "scan", "reverse", "last", "whole"


def _same_row(table: str, alias: str, of: str) -> str:
    """``alias``, a row of ``table``, is the one of key ``of.k`` (a claim's tables: keyed
    by the key alone, or run-scoped with the key as the run id)."""
    if RUN_OF.get(table) is None:
        return f"{alias}.k = {of}.k"
    return f"{alias}.run = {of}.k AND {alias}.k = {of}.k"


@functools.lru_cache(maxsize=256)
def batch_sql(
    reads: tuple[tuple[str, str, str], ...],
    claims: tuple[tuple[str, tuple[str, ...]], ...] = (),
) -> bytes:
    """One query for several reads, each ``(table, kind, form)`` (form: a range's, of
    ``_Sql.span``): ``(i, k, v)`` for each row found (a get is a scan of one key's
    range with no limit; a last key's ``v`` is NULL); then, for each claim ``(table,
    also)``, the rows it locks (the first, a limit, whose value is in an array: its two
    parameters, before the reads'), then its ``also`` tables' rows under their keys,
    each tagged after the last."""
    parts = []
    for i, (table, kind, form) in enumerate(reads):
        sql = SQL[table]
        if kind == GET:
            parts.append(
                b"SELECT %d, k, v FROM %s WHERE %s" % (i, sql.table.encode(), sql.at.encode())
            )
        elif kind == LAST:
            parts.append(b"(" + sql.last(form, i) + b")")
        elif kind == WHOLE:
            parts.append(b"(" + sql.whole(form, i) + b")")
        else:
            parts.append(b"(" + sql.page(form, reverse=kind == REVERSE, tag=i) + b")")
    ctes, tag = [], len(reads)
    for i, (table, also) in enumerate(claims):
        ctes.append(
            f"c{i} AS (SELECT k, v FROM {table_name(table)} WHERE v = ANY(%s)"
            " ORDER BY k LIMIT %s FOR UPDATE SKIP LOCKED)"
        )
        parts.append(b"SELECT %d, k, v FROM c%d" % (tag, i))
        for other in also:
            tag += 1
            on = _same_row(other, "t", f"c{i}")
            parts.append(
                f"SELECT {tag}, t.k, t.v FROM {table_name(other)} t JOIN c{i} ON {on}".encode()
            )
        tag += 1
    with_ = f"WITH {', '.join(ctes)} ".encode() if ctes else b""
    return with_ + b" UNION ALL ".join(parts)


def write_sql(kind: str, table: str) -> bytes:
    """The statement of a queued write: ``put``, ``add`` or ``discard``."""
    sql = SQL[table]
    return sql.put if kind == "put" else sql.add if kind == "add" else sql.discard


def write_params(kind: str, table: str, key: bytes, value: bytes | None) -> tuple[bytes, ...]:
    sql = SQL[table]
    return sql.row(key) if value is None or kind == "discard" else sql.row(key, value)


#: The commit token's insert: one per write transaction (``_pgbackend.py`` says why).
MARK_COMMIT = b"INSERT INTO ironflow_commits (token) VALUES (%s)"


def new_token() -> bytes:
    """A commit token: the clock's nanoseconds, then 64 random bits (unique: two tokens
    alike would need one nanosecond and the same 64 bits). Ordered by time, so its
    insert lands on the right edge of ``ironflow_commits``' index, the page the last
    one touched, not on a random page of the ten minutes of tokens kept (fewer pages
    dirtied and split, fewer full-page images in the WAL after a checkpoint)."""
    return time.time_ns().to_bytes(8, "big") + os.urandom(8)


#: The wake-up, as a call: NOTIFY delivered only if the transaction commits.
NOTIFY_CALL = f"pg_notify('{CHANNEL}', '')".encode()
#: A NOTIFY as a query, to end a statement of writes.
_NOTIFY = b"SELECT " + NOTIFY_CALL


@functools.lru_cache(maxsize=256)
def writes_sql(first: bytes | None, writes: tuple[tuple[str, str], ...], notify: bool) -> bytes:
    """One statement for ``first`` (a write of no table, the commit token's), these
    writes to distinct rows and, if ``notify``, the NOTIFY: ``WITH`` parts, the last
    one the statement itself."""
    parts = [write_sql(kind, table) for kind, table in writes]
    if first is not None:
        parts.insert(0, first)
    if notify:
        parts.append(_NOTIFY)
    *before, last = parts
    if not before:
        return last
    ctes = b", ".join(b"w%d AS (%s)" % (i, part) for i, part in enumerate(before))
    return b"WITH " + ctes + b" " + last

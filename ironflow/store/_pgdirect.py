"""One statement of bytea parameters, sent straight through libpq: the speculative
step's hot path (``_pgspec.py``), prepared once per statement and connection.

A psycopg cursor's ``execute`` costs about 35 µs of client CPU more than the statement
itself on this host (fsync off, the step's statement: 85 µs a call through a cursor,
49 through here, interleaved; docs/benchmarks.md): a cursor built, the query's ``%s``
converted, each parameter dumped through the adapters, the prepared-statement cache's
bookkeeping, the results' machinery. The speculative statement needs none of it: its
parameters are all ``bytes`` (sent as ``bytea`` in binary, as psycopg sends them), its
answer is one row nobody reads, its shapes are few. So :class:`Direct` sends it with
libpq's own calls (psycopg's ``pgconn``), waits with the connection's ``wait`` (Ctrl-C
still cancels the query, as in a cursor) and raises a failure as psycopg's exception
for its SQLSTATE (``psycopg.errors.error_from_result``): the callers' handling of a
lost connection, a serialization failure or a stale guard is the same as a cursor's.

Prepared as psycopg prepares: a statement runs unnamed its first few times on a
connection (parsed and planned each time, one round trip), then is prepared under a
name of its own (one more round trip, once) and runs by that name. The names are not
psycopg's (``_pg3_...``), so its cache never deallocates one alone; but psycopg
deallocates every statement of a session when it sees a ROLLBACK (``DEALLOCATE ALL``,
``_pgbackend._end_failed``), so a name the server no longer knows (SQLSTATE 26000,
refused before anything ran) is forgotten and the statement sent again.
"""

from __future__ import annotations

import functools
import hashlib
import threading
import weakref
from collections.abc import Sequence
from typing import Any

__all__ = ["Direct"]

#: The type of every parameter (``bytea``) and their format (binary), as psycopg sends
#: ``bytes``.
_BYTEA, _BINARY = 17, 1
#: After how many unnamed runs on a connection a statement is prepared (psycopg's
#: ``prepare_threshold``, for the same reason: a statement run once or twice is not
#: worth the extra round trip).
PREPARE_AFTER = 5
#: A prepared statement's name no longer known to the server.
_NO_SUCH_STATEMENT = "26000"


@functools.lru_cache(maxsize=256)
def _numbered(sql: bytes) -> tuple[bytes, bytes, int]:
    """``sql`` with its ``%s`` as ``$1``, ``$2``...: its name for PREPARE (from its
    text, so every connection and process names it alike), the text, the count."""
    parts = sql.split(b"%s")
    text = parts[0] + b"".join(b"$%d%s" % (i, part) for i, part in enumerate(parts[1:], 1))
    name = b"ironflow_" + hashlib.blake2b(text, digest_size=10).hexdigest().encode()
    return name, text, len(parts) - 1


class Direct:
    """Sends statements through libpq on the connections it is given, and remembers
    what each connection prepared (forgotten with the connection)."""

    def __init__(self, psycopg: Any) -> None:
        from psycopg import generators, pq

        self._psycopg = psycopg
        self._execute = generators.execute
        self._ok = (pq.ExecStatus.TUPLES_OK, pq.ExecStatus.COMMAND_OK)
        #: Per connection: each statement's unnamed runs so far, or PREPARE_AFTER once
        #: it is prepared.
        self._runs: weakref.WeakKeyDictionary[Any, dict[bytes, int]] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def prepared(self, conn: Any) -> int:
        """How many statements ``conn`` has prepared here (for tests)."""
        return sum(1 for n in self._runs.get(conn, {}).values() if n >= PREPARE_AFTER)

    def run(self, conn: Any, sql: bytes, params: Sequence[bytes]) -> int | None:
        """Run ``sql`` (``%s`` placeholders, every parameter ``bytes``) on ``conn`` (idle,
        autocommit, used by this thread alone): the rows it returned or wrote (its
        command tag's count; its rows themselves are not read). Raises as a psycopg
        cursor would."""
        name, text, count = _numbered(sql)
        if count != len(params):
            raise ValueError(f"{count} placeholders for {len(params)} parameters")
        runs = self._runs.get(conn)
        if runs is None:
            with self._lock:
                runs = self._runs.setdefault(conn, {})
        try:
            return self._send(conn, runs, name, text, params)
        except self._psycopg.Error as exc:
            if runs.get(name, 0) < PREPARE_AFTER or exc.sqlstate != _NO_SUCH_STATEMENT:
                raise
            # Deallocated by a ROLLBACK psycopg saw (see the module): nothing ran.
            runs.clear()
            return self._send(conn, runs, name, text, params)

    def _send(
        self, conn: Any, runs: dict[bytes, int], name: bytes, text: bytes, params: Sequence[bytes]
    ) -> int | None:
        pgconn = conn.pgconn
        types = (_BYTEA,) * len(params)
        formats = (_BINARY,) * len(params)
        done = runs.get(name, 0)
        with conn.lock:
            if done == PREPARE_AFTER - 1:
                pgconn.send_prepare(name, text, types)
                self._check(conn, conn.wait(self._execute(pgconn)))
                runs[name] = done = PREPARE_AFTER
            if done >= PREPARE_AFTER:
                pgconn.send_query_prepared(name, params, formats, _BINARY)
            else:
                runs[name] = done + 1
                pgconn.send_query_params(text, params, types, formats, _BINARY)
            results = conn.wait(self._execute(pgconn))
            self._check(conn, results)
            rows: int | None = results[-1].command_tuples if results else None
            return rows

    def _check(self, conn: Any, results: Sequence[Any]) -> None:
        for result in results:
            if result.status not in self._ok:
                raise self._psycopg.errors.error_from_result(result, encoding=conn.info.encoding)

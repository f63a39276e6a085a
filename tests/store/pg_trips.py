"""Round trips to PostgreSQL, counted in libpq's trace of the protocol."""

from __future__ import annotations

import contextlib
import itertools
import os
import tempfile
from collections.abc import Iterator
from typing import Any

from ironflow.store import PostgresStore
from ironflow.store._pgbackend import PostgresBackend


@contextlib.contextmanager
def round_trips(store: PostgresStore | PostgresBackend) -> Iterator[list[int]]:
    """Counts the round trips of the store's connections inside the block, in libpq's
    trace of the protocol: each turn from messages sent (F) to messages answered (B).

    Only turns whose last message sent asks for the answers (a Sync or a Flush) count:
    an answer read while the client is still sending was not waited for. Nor does the
    Sync queued right after the leasers' lock (``_pgbackend._queue_sync``: not waited
    for, by design): its answer often arrives before the client sends the lease's next
    statement, and libpq reads it then, which the trace cannot tell from a wait. One may still
    be counted twice (a busy host descheduled the client right after a Sync inside a
    pipeline), so a test takes the fewest of a few calls, not one call's count.
    """
    backend = store.backend if isinstance(store, PostgresStore) else store
    pool: Any = backend._pool
    traced: list[Any] = []
    getconn = pool.getconn
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "trace")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT)

        def tracing(*args: Any, **kwargs: Any) -> Any:
            conn = getconn(*args, **kwargs)
            conn.pgconn.trace(fd)
            traced.append(conn)
            return conn

        pool.getconn = tracing
        counted: list[int] = []
        try:
            yield counted
        finally:
            del pool.getconn
            for conn in traced:
                if not conn.closed:
                    conn.pgconn.untrace()
            os.close(fd)
        with open(path) as f:
            # (side, message): F the client's, B the server's.
            sent = [
                (cols[1], cols[3].strip(), cols[4] if len(cols) > 4 else "")
                for cols in (line.split("\t") for line in f)
            ]
        counted.append(
            sum(
                1
                for before, (side, message), (then, _) in _triples(sent)
                if side == "F" and then == "B" and message in _WAITS and before != _LOCK
            )
        )


#: The messages after which the client waits for answers: a Sync (its transaction's end)
#: or a Flush (psycopg's fetch in pipeline mode). An answer that arrives after another
#: message was read by libpq while sending, not waited for.
_WAITS = frozenset({"Sync", "Flush"})


#: A statement taking the leasers' lock, as the trace shows its Parse (its text quoted).
_LOCK = "lock"


def _triples(
    sent: list[tuple[str, str, str]],
) -> Iterator[tuple[str, tuple[str, str], tuple[str, str]]]:
    """Each message with the next, and what the client's last statement before it was:
    ``_LOCK`` if it took the leasers' lock, else ""."""
    last = ""
    for (side, message, text), (then, answer, _) in itertools.pairwise(sent):
        if side == "F" and message == "Parse":
            last = _LOCK if "pg_advisory_lock(" in text else ""
        yield last, (side, message), (then, answer)

"""Round trips to PostgreSQL, counted in libpq's trace of the protocol."""

from __future__ import annotations

import contextlib
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

    A turn is never missed, but one may be counted twice: an answer that arrives while
    the client is still sending (a busy host descheduled it) splits a turn in two. So a
    test takes the fewest of a few calls, not one call's count.
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
            sides = [line.split("\t")[1] for line in f]
        counted.append(sum(1 for i in range(1, len(sides)) if sides[i - 1 : i + 1] == ["F", "B"]))

"""Serialization conflicts on PostgreSQL: what a write transaction rolled back costs.

Several workers on one database conflict now and then (SERIALIZABLE aborts one of two
transactions that could not have run one after the other); the op runs again. Each
conflict used to close the connection and open a new session, a new server process
with cold catalog caches: with four workers that tripled PostgreSQL's CPU a run
(``python -m bench.pg_contention``). A conflict now rolls back and keeps the session.
"""

from __future__ import annotations

import contextlib

import psycopg
import pytest

from ironflow.store import PostgresStore
from ironflow.store._backend import WriteTxn

_KEY = "hashtext('ironflow lease')"


def _lock_is_free(url: str) -> bool:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(f"SELECT pg_try_advisory_lock({_KEY})".encode()).fetchone()
        assert row is not None
        if row[0]:
            conn.execute(f"SELECT pg_advisory_unlock({_KEY})".encode())
        return bool(row[0])


def _write_skew(url: str) -> None:
    """Another SERIALIZABLE transaction that reads ``b`` and writes ``a``, committed."""
    with psycopg.connect(url, autocommit=True) as conn, conn.transaction():
        conn.execute(b"SET TRANSACTION ISOLATION LEVEL SERIALIZABLE")
        conn.execute(b"SELECT v FROM ironflow_meta WHERE k = 'b'").fetchall()
        conn.execute(b"INSERT INTO ironflow_meta (k, v) VALUES ('a', 'other')")


def _session(txn: WriteTxn) -> int:
    return int(txn._cur.connection.info.backend_pid)  # type: ignore[attr-defined]


@pytest.mark.parametrize("leasing", [False, True], ids=["write", "lease"])
def test_a_conflict_rolls_back_and_keeps_the_session(pg_url: str, leasing: bool) -> None:
    """A transaction that reads ``a`` and writes ``b`` while another read ``b`` and wrote
    ``a`` is rolled back by PostgreSQL and run again, on the same session; the statements
    psycopg prepared before (each runs more than five times) work after it; a lease's
    advisory lock is given back."""
    store = PostgresStore(pg_url, pool_size=1)  # one connection: a new one is a new pid
    backend = store.backend
    backend.lease_lock_wait = 10.0
    try:

        def note(n: int) -> None:
            backend.write(lambda txn: txn.put("meta", b"n%d" % n, b"x"))

        for n in range(6):
            note(n)
        sessions: list[int] = []

        def skewed(txn: WriteTxn) -> str:
            sessions.append(_session(txn))
            txn.get("meta", b"a")
            if len(sessions) == 1:
                _write_skew(pg_url)
            txn.put("meta", b"b", b"mine")
            return "committed"

        with backend.leasing() if leasing else contextlib.nullcontext():
            assert backend.write(skewed) == "committed"
        assert len(sessions) == 2  # rolled back once, then committed
        assert sessions[0] == sessions[1]  # the same session both times
        if leasing:
            assert backend.lease_conflicts == 1
        assert _lock_is_free(pg_url)
        for n in range(6, 12):
            note(n)
        assert store.backend.write(_session) == sessions[0]
    finally:
        store.close()

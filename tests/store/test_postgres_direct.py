"""Statements sent straight through libpq (``store/_pgdirect.py``): they fail as a
psycopg cursor would, so the store's handling of a stale guard, a serialization
failure and a lost connection is unchanged, and they are prepared as psycopg would.
"""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from ironflow.store._pgdirect import PREPARE_AFTER, Direct, _numbered

# A statement failing with the SQLSTATE it is given (bytes, as every parameter here).
_BOOM = b"SELECT ironflow_test_boom(convert_from(%s, 'UTF8'))"


@pytest.fixture
def conn(pg_url: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(pg_url, autocommit=True) as setup:
        setup.execute(
            "CREATE OR REPLACE FUNCTION ironflow_test_boom(code text) RETURNS int AS"
            " $$BEGIN RAISE EXCEPTION 'boom %', code USING ERRCODE = code; END$$"
            " LANGUAGE plpgsql"
        )
    try:
        with psycopg.connect(pg_url, autocommit=True) as c:
            yield c
    finally:
        with psycopg.connect(pg_url, autocommit=True) as cleanup:
            cleanup.execute("DROP FUNCTION ironflow_test_boom(text)")


@pytest.mark.parametrize(
    ("code", "error"),
    [
        ("22012", psycopg.errors.DivisionByZero),
        ("40001", psycopg.errors.SerializationFailure),
        ("40P01", psycopg.errors.DeadlockDetected),
    ],
)
def test_a_failure_is_the_exception_a_cursor_raises_and_the_connection_stays(
    conn: psycopg.Connection, code: str, error: type[Exception]
) -> None:
    direct = Direct(psycopg)
    for _ in range(PREPARE_AFTER + 1):  # unnamed, then prepared: the same either way
        with pytest.raises(error, match=f"boom {code}") as raised:
            direct.run(conn, _BOOM, (code.encode(),))
        assert raised.value.sqlstate == code
        with pytest.raises(error):
            conn.cursor(binary=True).execute(_BOOM, (code.encode(),))
        # Autocommit: the failed statement was its own transaction; the session is idle.
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_a_statement_is_prepared_after_a_few_runs_on_its_connection(
    conn: psycopg.Connection,
) -> None:
    direct = Direct(psycopg)
    sql = b"SELECT length(%s) + length(%s)"
    name = _numbered(sql)[0].decode()

    def prepared() -> list[str]:
        rows = conn.execute("SELECT name FROM pg_prepared_statements").fetchall()
        return [r[0] for r in rows]

    for run in range(1, PREPARE_AFTER + 2):
        direct.run(conn, sql, (b"ab", b"\x00\xff"))
        assert (name in prepared()) == (run >= PREPARE_AFTER), run
    assert direct.prepared(conn) == 1
    with pytest.raises(ValueError, match="2 placeholders for 1 parameters"):
        direct.run(conn, sql, (b"ab",))


def test_a_lost_connection_is_an_operational_error(pg_url: str, conn: psycopg.Connection) -> None:
    direct = Direct(psycopg)
    pid = conn.info.backend_pid
    with psycopg.connect(pg_url, autocommit=True) as other:
        other.execute("SELECT pg_terminate_backend(%s)", (pid,))
    with pytest.raises(psycopg.OperationalError):
        direct.run(conn, b"SELECT length(%s)", (b"x",))
    assert conn.broken

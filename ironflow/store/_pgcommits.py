"""Whether a write committed, asked after its answer was lost: both ways in one place.

A connection that breaks after COMMIT was sent leaves the store not knowing whether
the transaction committed; guessing either way would apply an acknowledged write
twice or report it lost. So every write transaction leaves evidence of itself:

- a commit token (``_pgsql.MARK_COMMIT``), a row of ``ironflow_commits`` written in it
  (:func:`committed`), pruned after ten minutes (:data:`PRUNE_COMMITS`);
- or, for a speculative step, which carries no token, the step's own row
  (:func:`landed`; ``_pgspec.py`` says why that is sound).

Both look the same way: the row is inserted again and rolled back. The insert waits
for a transaction still ending (a broken connection does not stop a COMMIT already on
its way), then conflicts if it committed; a plain read would not wait, and call it lost.

That wait covers a statement that has written its row, not one that has not yet: a
client's connection that breaks (a network fault, a client-side timeout) does not stop
its server process, which PostgreSQL only notices is orphaned when it next reads from
or writes to the socket. A statement still waiting for a lock, or still running, before
its insert would insert and commit *after* the look found nothing, and the op, run
again, would be applied twice (two events, two stream appends). So before looking, the
lost session is made to be gone (:func:`end_session`): each pooled session carries a
name of its own (``application_name``, :func:`session_name`: the store's and a number,
readable in ``pg_stat_activity``); it is terminated by that name and waited for until
no session of that name remains. A terminated backend aborts its transaction (or, in
the middle of its commit, finishes it) before it leaves ``pg_stat_activity``, and
releases its locks with it; so once the name is gone, whatever the statement did is
final, and the look that follows tells it. A server restarted since has no session of
that name: nothing to end. A session that cannot be ended (another role's, which this
one may not signal) or does not go within :data:`END_WAIT` seconds is an error: nothing
is guessed.
"""

from __future__ import annotations

import time
from typing import Any

from ironflow.errors import StoreError
from ironflow.store._pgschema import SESSION_PREFIX
from ironflow.store._pgsql import MARK_COMMIT, SQL

__all__ = [
    "END_WAIT",
    "PRUNE_COMMITS",
    "PRUNE_EVERY",
    "TOKENS_KEPT",
    "Evidence",
    "committed",
    "end_session",
    "landed",
    "session_name",
]

#: Seconds a lost session is waited for to end before its write is looked for.
END_WAIT = 10.0
#: Terminates every session named $1 (but this one), and says which were still there.
_END = (
    b"SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity"
    b" WHERE application_name = %s AND pid <> pg_backend_pid()"
)

#: Tokens are only looked for after a lost answer to COMMIT, by the store that wrote
#: them, once PostgreSQL answers again. Kept ten minutes (server time); a store that
#: could not look within :data:`TOKENS_KEPT` refuses to guess
#: (``PostgresBackend._resolve``).
PRUNE_COMMITS = b"DELETE FROM ironflow_commits WHERE at < now() - interval '10 minutes'"
#: How long after its transaction began a token may still be looked for: a minute
#: short of the ten the prune keeps it, for the difference between the two clocks.
TOKENS_KEPT = 9 * 60.0
#: Seconds between one store's prunes of ``ironflow_commits``.
PRUNE_EVERY = 60.0

#: A row an op inserted: (table, key, value), looked for after a lost answer.
Evidence = tuple[str, bytes, bytes]


def session_name(store: str, n: int | str) -> str:
    """The ``application_name`` of a store's session: the store's id and the session's
    number (or role: ``listen``, ``look``), unique while the store lives."""
    return f"{SESSION_PREFIX}{store} {n}"


def end_session(conn: Any, name: str, *, wait: float = END_WAIT) -> None:
    """Terminate the session named ``name`` (if any is left) and wait until it is gone,
    on ``conn`` (a connection of its own, autocommit); StoreError if it does not go
    within ``wait`` seconds or may not be terminated."""
    deadline = time.monotonic() + wait
    while True:
        try:
            left = conn.execute(_END, (name,), prepare=False).fetchall()
        except Exception as exc:
            if getattr(exc, "sqlstate", None) != "42501":  # insufficient privilege
                raise
            left = [(None, False)]
            why: object = exc
        else:
            why = None
        if not left:
            return
        if time.monotonic() >= deadline:
            raise StoreError(
                f"lost the answer to a write on its session {name!r} and could not end "
                f"that session within {wait:g} s ({why or 'it is still there'}); whether "
                "the write landed is not known until it ends: end it "
                f"(SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
                f"application_name = '{name}'), then check the run or event it was writing"
            )
        time.sleep(0.05)


def committed(conn: Any, token: bytes) -> bool:
    """Whether the transaction that wrote ``token`` committed, asked on ``conn`` (a
    connection of its own)."""
    with conn.transaction(force_rollback=True):
        again = MARK_COMMIT + b" ON CONFLICT DO NOTHING RETURNING 1"
        row = conn.execute(again, (token,)).fetchone()
    return row is None


def landed(conn: Any, evidence: Evidence) -> bool:
    """Whether the row ``evidence`` names is there with its value, on ``conn`` (a
    connection of its own, autocommit, READ COMMITTED): inserted and rolled back as a
    token is, then, if it was there, its value read (a new statement: it sees that
    commit)."""
    table, key, value = evidence
    sql = SQL[table]
    with conn.transaction(force_rollback=True):
        if conn.execute(sql.insert, sql.row(key, value)).fetchone() is not None:
            return False  # absent: inserted here, and rolled back
        row = conn.execute(sql.get, sql.row(key)).fetchone()
    return row is not None and bytes(row[0]) == value

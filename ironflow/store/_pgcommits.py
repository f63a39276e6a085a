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
"""

from __future__ import annotations

from typing import Any

from ironflow.store._pgsql import MARK_COMMIT, SQL

__all__ = ["PRUNE_COMMITS", "PRUNE_EVERY", "TOKENS_KEPT", "Evidence", "committed", "landed"]

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

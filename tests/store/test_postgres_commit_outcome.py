"""A COMMIT whose answer is lost while PostgreSQL crashes: known, never guessed.

After an immediate stop (a crash), PostgreSQL hands out again the transaction ids that
never reached its WAL. A transaction whose COMMIT was lost in the crash has such an id,
so asking ``pg_xact_status`` about it after the restart may describe another, later
transaction that did commit, and report a lost write as done (the PostgreSQL cluster
soak saw it: a step acknowledged, the run went on, and the record was gone).
"""

from __future__ import annotations

import psycopg

from ironflow.store._backend import WriteTxn
from ironflow.store._pgbackend import PostgresBackend
from ironflow.store._postgres import migrate
from tests.support.postgres import EmbeddedPostgres


def test_a_commit_lost_in_a_crash_runs_again_even_when_its_xid_is_reused() -> None:
    """The op reads (so the transaction has begun and been answered), writes, and then
    PostgreSQL crashes before COMMIT; after the restart other transactions commit, taking
    the ids again. The write must be applied: the op runs again, and its row is there."""
    with EmbeddedPostgres(fsync=True) as server:
        url = server.create_database("commit_outcome")
        migrate(url)
        backend = PostgresBackend(url, listen=False, give_up_after=60)
        try:
            calls: list[int] = []

            def op(txn: WriteTxn) -> str:
                calls.append(1)
                txn.get("events", b"anything")  # answered: the transaction has begun
                txn.put("events", b"mine", b"v%d" % len(calls))
                if len(calls) == 1:
                    server.stop("immediate")  # COMMIT is not sent yet: nothing committed
                    server.start()
                    with psycopg.connect(url, autocommit=True) as conn:
                        # Other clients' transactions commit, taking the ids again.
                        conn.execute("CREATE TABLE other (n int)")
                        for n in range(20):
                            conn.execute("INSERT INTO other VALUES (%s)", (n,))
                return "done"

            assert backend.write(op) == "done"
            with backend.read() as txn:
                assert txn.get("events", b"mine") is not None, "acknowledged, not written"
            assert len(calls) == 2
        finally:
            backend.close()

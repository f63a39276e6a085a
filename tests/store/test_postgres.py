"""PostgresStore on a real PostgreSQL server: what the other backends cannot show.

Durable commits whatever the server's default, the schema version check, claims that
skip rows another transaction holds, serializable writes retried, wake-ups through
LISTEN/NOTIFY, and a PostgreSQL that restarts under a store. The state machine itself
is checked on PostgreSQL by the agreement test and the backend contract.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from ironflow._worker._identity import this_worker
from ironflow.errors import StoreError, StoreFormatError
from ironflow.store import AgentSpec, PostgresStore
from ironflow.store._backend import Scan, WriteTxn
from ironflow.store._pgbackend import PostgresBackend
from ironflow.store._pgschema import SCHEMA_VERSION
from ironflow.store._pgtxn import PgTxn, ReadAfter
from ironflow.store._postgres import migrate, safe_url
from ironflow.testing import StandInWorker
from tests.store.pg_trips import round_trips
from tests.support.postgres import EmbeddedPostgres, shared_server


def test_every_write_commits_synchronously_whatever_the_server_default(pg_url: str) -> None:
    """The store turns synchronous_commit on in each session: a write returns durable."""
    with psycopg.connect(pg_url, autocommit=True) as conn:
        db = conn.execute("SELECT current_database()").fetchone()
        assert db is not None
        conn.execute(f"ALTER DATABASE {db[0]} SET synchronous_commit = off".encode())
    try:
        backend = PostgresBackend(pg_url, listen=False)
        try:
            seen = backend.write(
                lambda txn: txn._cur.execute("SHOW synchronous_commit").fetchone()[0]  # type: ignore[attr-defined]
            )
            assert seen == "on"
        finally:
            backend.close()
    finally:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(f"ALTER DATABASE {db[0]} RESET synchronous_commit".encode())


def test_a_database_of_another_schema_version_is_refused_naming_the_command() -> None:
    """No schema, an older or a newer one: refused, saying what to run; migrate fixes it."""
    url = shared_server().create_database()
    with pytest.raises(StoreFormatError, match=f"ironflow store migrate --store {url}"):
        PostgresStore(url)
    assert migrate(url) == (None, SCHEMA_VERSION)
    assert migrate(url) == (SCHEMA_VERSION, SCHEMA_VERSION)  # again: nothing to do
    PostgresStore(url).close()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE ironflow_schema SET version = 0")
        with pytest.raises(StoreFormatError, match="Upgrade it with: ironflow store migrate"):
            PostgresStore(url)
        conn.execute(f"UPDATE ironflow_schema SET version = {SCHEMA_VERSION + 1}")
        with pytest.raises(StoreFormatError, match="upgrade Ironflow"):
            PostgresStore(url)
        with pytest.raises(StoreFormatError, match="never migrate down"):
            migrate(url)


def test_a_password_never_appears_in_messages() -> None:
    assert safe_url("postgresql://u:secret@h:5/db") == "postgresql://u:***@h:5/db"
    assert safe_url("postgresql://u@h/db") == "postgresql://u@h/db"


def test_a_claim_skips_rows_another_transaction_holds(pg_url: str) -> None:
    """Two leasers at once take different rows, and the second does not wait for the first."""
    backend = PostgresBackend(pg_url, listen=False)
    try:
        backend.write(lambda txn: [txn.put("ready", k, b"a") for k in (b"r1", b"r2", b"r3")])
        holding, done = threading.Event(), threading.Event()
        first: list[object] = []

        def hold(txn: WriteTxn) -> None:
            first[:] = txn.claim("ready", accept=lambda k, v: True, limit=1)
            holding.set()
            assert done.wait(30)

        holder = threading.Thread(target=lambda: backend.write(hold))
        holder.start()
        assert holding.wait(30)
        second = backend.write(lambda txn: txn.claim("ready", accept=lambda k, v: True, limit=1))
        done.set()
        holder.join(30)
        assert first == [(b"r1", b"a")] and second == [(b"r2", b"a")]
    finally:
        backend.close()


def test_concurrent_leasers_on_two_stores_take_each_run_once(pg_url: str) -> None:
    stores = [PostgresStore(pg_url), PostgresStore(pg_url)]
    try:
        stores[0].register_agents([AgentSpec("a", ("go",))])
        emitted = {stores[0].emit("go", {"i": i}).run_ids[0] for i in range(40)}
        taken: list[str] = []
        lock = threading.Lock()
        workers = [StandInWorker() for _ in range(4)]

        def lease(n: int) -> None:
            store = stores[n % 2]
            while True:
                got = store.lease_runs(workers[n].info, ["a"], limit=3, ttl=600)
                if not got:
                    return
                with lock:
                    taken.extend(r.run.id for r in got)

        threads = [threading.Thread(target=lease, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        for w in workers:
            w.kill()
        assert sorted(taken) == sorted(emitted)  # every run, none twice
        stores[1].check_valid()
    finally:
        for store in stores:
            store.close()


def test_serialization_failures_are_retried_not_raised(pg_url: str) -> None:
    """Eight threads append to one stream at once: every append lands, versions unbroken."""
    store = PostgresStore(pg_url, pool_size=8)
    try:
        errors: list[BaseException] = []

        def append(n: int) -> None:
            try:
                for i in range(8):
                    store.append_to_stream("s", "e", {"n": n, "i": i})
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=append, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert errors == []
        assert [e.version for e in store.read_stream("s")] == list(range(1, 65))
    finally:
        store.close()


def test_an_emit_in_one_store_wakes_a_waiting_worker_of_another(pg_url: str) -> None:
    """LISTEN/NOTIFY: a worker waiting 30 s for work in another process wakes at once."""
    waiting, emitting = PostgresStore(pg_url), PostgresStore(pg_url)
    try:
        emitting.register_agents([AgentSpec("a", ("go",))])
        waiting.backend.listen()  # as its first wait_for_work does
        time.sleep(0.5)  # let the listener's first wake-up (on connecting) pass
        woke = threading.Event()

        def wait() -> None:
            waiting.wait_for_work(30)
            woke.set()

        thread = threading.Thread(target=wait)
        thread.start()
        time.sleep(0.2)
        assert not woke.is_set()
        emitting.emit("go", {})
        assert woke.wait(10), "the emit did not wake the other store's worker"
        thread.join(30)
    finally:
        waiting.close()
        emitting.close()


def test_a_store_rides_out_a_postgresql_restart(caplog: pytest.LogCaptureFixture) -> None:
    """Immediate stop (a crash) and start of PostgreSQL: calls wait, retry, say so once,
    and nothing acknowledged is lost."""
    with EmbeddedPostgres(fsync=False) as server:
        url = server.create_database("restarts")
        migrate(url)
        store = PostgresStore(url)
        try:
            store.register_agents([AgentSpec("a", ("go",))])
            before = store.emit("go", {"n": 1})
            server.stop("immediate")
            restarter = threading.Timer(1.0, server.start)
            restarter.start()
            with caplog.at_level(logging.WARNING, logger="ironflow.store"):
                after = store.emit("go", {"n": 2})  # waits for the server, then lands
                assert store.get_run(before.run_ids[0]).status == "pending"
            restarter.join(30)
            assert [e.seq for e in store.events()] == [before.seq, after.seq]
            lost = [r for r in caplog.records if "lost the connection" in r.getMessage()]
            assert len(lost) == 1, [r.getMessage() for r in caplog.records]
            me = this_worker()
            assert len(store.lease_runs(me, ["a"], limit=5, ttl=60)) == 2
        finally:
            store.close()


class _LosesCommitAnswer(PostgresBackend):
    """Its connection breaks around COMMIT: after committing, or before."""

    committed_first = True

    def _commit(self, conn: Any) -> None:
        if self.committed_first:
            super()._commit(conn)
        else:
            conn.execute("ROLLBACK")
        self.committed_first = not self.committed_first
        raise psycopg.OperationalError("server closed the connection unexpectedly")


def test_a_lost_answer_to_commit_is_resolved_not_guessed(pg_url: str) -> None:
    """Committed but unanswered: the op's result, not a second run. Not committed: run
    again. Either way the row is written once (its commit token decides)."""
    backend = _LosesCommitAnswer(pg_url, listen=False, give_up_after=30)
    try:
        calls: list[int] = []

        def op(txn: WriteTxn) -> int:
            calls.append(1)
            return int(txn.insert("events", b"k%d" % len(calls), b"v"))

        assert backend.write(op) == 1  # committed, answer lost: not run again
        assert len(calls) == 1
        backend.committed_first = False
        # Rolled back, answer lost: run again, and its second COMMIT lands... and is lost
        # too, after committing: its result comes back once.
        assert backend.write(op) == 1
        assert len(calls) == 3
        with backend.read() as txn:
            assert [k for k, _ in txn.scan("events")] == [b"k1", b"k3"]
    finally:
        backend.close()


def _events_after(op: Callable[[WriteTxn], int]) -> Callable[[int], ReadAfter[list[bytes]]]:
    """A read after ``op``: the keys of the events table, read whole."""

    def then(result: int) -> ReadAfter[list[bytes]]:
        return ReadAfter([Scan("events")], lambda txn: [k for k, _ in txn.scan("events")])

    return then


def test_a_read_after_a_write_sees_it_and_goes_in_its_round_trip(pg_url: str) -> None:
    """write_then_read: the read's transaction begins after the COMMIT (it sees the row),
    and is sent with it: an insert and its read after, two round trips (the insert's
    answer, then COMMIT with the read), not three."""
    backend = PostgresBackend(pg_url, listen=False)
    try:

        def op(txn: WriteTxn) -> int:
            return int(txn.insert("events", b"k1", b"v"))

        counted = []
        for _ in range(3):
            with round_trips(backend) as trips:
                result, keys = backend.write_then_read(op, _events_after(op))
            counted += trips
            assert keys == [b"k1"]
        assert result in (0, 1)
        # The fewest: a busy host may split one turn in two (tests/store/pg_trips.py).
        assert min(counted) == 2, counted
    finally:
        backend.close()


def test_a_read_after_a_commit_whose_answer_was_lost_is_made_after_it(pg_url: str) -> None:
    """Committed, its answer lost: the op is not run again (its token says it landed),
    and the read that was to follow it is made on its own, and sees the write."""
    backend = _LosesCommitAnswer(pg_url, listen=False, give_up_after=30)
    try:
        calls: list[int] = []

        def op(txn: WriteTxn) -> int:
            calls.append(1)
            return int(txn.insert("events", b"k%d" % len(calls), b"v"))

        result, keys = backend.write_then_read(op, _events_after(op))
        assert (result, keys, len(calls)) == (1, [b"k1"], 1)
    finally:
        backend.close()


def test_a_read_after_a_commit_that_fails_is_made_again_not_the_write(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The write committed and the read sent after it failed (here a division by zero;
    a serialization failure is the real case): the write stands and is not run again,
    and the read is made on its own."""
    backend = PostgresBackend(pg_url, listen=False)
    sent_whole = PgTxn.send_whole

    def failing(self: PgTxn, scans: Any) -> Callable[[], None]:
        self._cur.execute(b"SELECT 1 / 0")  # type: ignore[attr-defined]
        return sent_whole(self, scans)

    try:
        calls: list[int] = []

        def op(txn: WriteTxn) -> int:
            calls.append(1)
            return int(txn.insert("events", b"k%d" % len(calls), b"v"))

        monkeypatch.setattr(PgTxn, "send_whole", failing)
        result, keys = backend.write_then_read(op, _events_after(op))
        assert (result, keys, len(calls)) == (1, [b"k1"], 1)
    finally:
        backend.close()


def test_an_error_before_the_commit_is_raised_not_the_read_after_s(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A statement of the write fails (a serialization failure in real life): that error
    is raised (and a conflict retried), not one from the read after the COMMIT, which
    must never run in the aborted transaction (make test saw InFailedSqlTransaction
    raised to a leaser when the read followed a sync)."""
    backend = PostgresBackend(pg_url, listen=False)
    flush = PgTxn.flush

    def failing(self: PgTxn, *, notify: bool = False) -> None:
        flush(self, notify=notify)
        self._cur.execute(b"SELECT 1 / 0")  # type: ignore[attr-defined]

    try:

        def op(txn: WriteTxn) -> int:
            return int(txn.insert("events", b"k1", b"v"))

        monkeypatch.setattr(PgTxn, "flush", failing)
        for _ in range(3):
            with pytest.raises(psycopg.errors.DivisionByZero):
                backend.write_then_read(op, _events_after(op))
        monkeypatch.undo()
        assert backend.write_then_read(op, _events_after(op)) == (1, [b"k1"])
    finally:
        backend.close()


class _AsksXactStatus(PostgresBackend):
    """Counts how often a lost answer to COMMIT is looked up."""

    asked = 0

    def _committed(self, token: bytes) -> bool:
        self.asked += 1
        return super()._committed(token)


def test_a_serialization_failure_at_commit_is_a_retry_not_a_lost_connection(
    pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Write skew: A and B each read what the other writes, then A commits and B's COMMIT
    is answered 40001. PostgreSQL answered (rolled back), so B runs again at once,
    without looking for its commit token and without saying the database was lost."""
    backend = _AsksXactStatus(pg_url, listen=False, give_up_after=30)
    try:
        both_wrote = threading.Barrier(2, timeout=30)
        a_committed = threading.Event()
        runs = {"a": 0, "b": 0}

        def skew(me: str, reads: bytes, writes: bytes) -> Callable[[WriteTxn], None]:
            def op(txn: WriteTxn) -> None:
                runs[me] += 1
                txn.get("events", reads)
                txn.put("events", writes, me.encode())
                if runs[me] == 1:
                    both_wrote.wait()
                    if me == "b":
                        assert a_committed.wait(30)

            return op

        def a() -> None:
            backend.write(skew("a", b"x", b"y"))
            a_committed.set()

        with caplog.at_level(logging.WARNING, logger="ironflow.store"):
            thread = threading.Thread(target=a)
            thread.start()
            backend.write(skew("b", b"y", b"x"))
            thread.join(30)
        assert runs == {"a": 1, "b": 2}, "B's first COMMIT should have failed 40001"
        assert backend.asked == 0
        said = [r.getMessage() for r in caplog.records]
        assert not [m for m in said if "lost the connection" in m], said
        with backend.read() as txn:
            assert dict(txn.scan("events")) == {b"x": b"b", b"y": b"a"}
    finally:
        backend.close()


def _terminate(url: str, pid: int) -> None:
    with psycopg.connect(url, autocommit=True) as other:
        other.execute("SELECT pg_terminate_backend(%s)", (pid,))


def test_a_connection_lost_in_the_middle_of_a_read_is_a_store_error(pg_url: str) -> None:
    """PostgreSQL goes away under a read transaction: the backend raises the store's
    error, never the driver's; the next read reconnects."""
    backend = PostgresBackend(pg_url, listen=False, give_up_after=30)
    try:
        lost = pytest.raises(StoreError, match="lost the connection to the database")
        with lost, backend.read() as txn:
            _terminate(pg_url, txn._cur.connection.info.backend_pid)
            txn.get("events", b"k")
        with backend.read() as txn:
            assert txn.get("events", b"k") is None
    finally:
        backend.close()


class _LosesReads(PostgresBackend):
    """The connection of each of its first ``lose`` read transactions is terminated."""

    lose = 0

    @contextlib.contextmanager
    def read(self) -> Iterator[Any]:
        with super().read() as txn:
            if self.lose > 0:
                self.lose -= 1
                _terminate(self.url, txn._cur.connection.info.backend_pid)
            yield txn


def test_a_read_lost_under_a_store_method_is_run_again_not_raised(
    pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A run read while PostgreSQL drops the connection: the store method reads again
    and answers (a StoreError inside a step would fail the run: a memory wait did, in
    the cluster soak), saying once that the database was lost."""
    store = PostgresStore(pg_url)
    try:
        store.register_agents([AgentSpec("a", ("go",))])
        run_id = store.emit("go", {}).run_ids[0]
        store.backend = store._backend = _LosesReads(pg_url, listen=False)  # type: ignore[misc]
        store.backend.lose = 1
        with caplog.at_level(logging.WARNING, logger="ironflow.store"):
            assert store.get_run(run_id).status == "pending"
        said = [r.getMessage() for r in caplog.records if "lost the connection" in r.getMessage()]
        assert len(said) == 1, said
        assert store.get_steps(run_id) == []
    finally:
        store.close()


def test_every_method_that_reads_is_run_again_when_its_read_is_lost() -> None:
    """A new read method of the machine must be listed in _REREAD (or it would raise)."""
    import inspect

    from ironflow.store import _postgres
    from ironflow.store._machine import StoreMachine

    reading = {
        name
        for name, fn in vars(StoreMachine).items()
        if callable(fn) and not name.startswith("_") and "self._read()" in inspect.getsource(fn)
    }
    assert reading == set(_postgres._REREAD)


def test_the_pool_does_not_repeat_what_the_store_says_once(pg_url: str) -> None:
    """psycopg_pool logs each broken connection it drops and each failed reconnect; the
    store says once that the database is lost and once that it is back."""
    PostgresStore(pg_url).close()
    assert logging.getLogger("psycopg.pool").getEffectiveLevel() >= logging.ERROR


def test_a_broken_pooled_connection_under_changes_is_retried(pg_url: str) -> None:
    """An idle worker's lease look first asks how far the database has written; a pooled
    connection PostgreSQL dropped (a restart) is retried there too, not raised: it killed
    a worker of the 500-run cluster soak."""
    store = PostgresStore(pg_url)
    try:
        before = store.changes()
        with psycopg.connect(pg_url, autocommit=True) as other:
            other.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        assert store.changes() >= before
        assert store.lease_runs(this_worker(), ["a"], limit=1, ttl=60) == []
    finally:
        store.close()


def test_a_commit_is_known_by_its_token_only(pg_url: str) -> None:
    """A committed write's token is found; a token no transaction committed is not."""
    backend = PostgresBackend(pg_url, listen=False, give_up_after=30)
    try:

        def tokens() -> set[bytes]:
            with psycopg.connect(pg_url, autocommit=True) as conn:
                return {bytes(r[0]) for r in conn.execute("SELECT token FROM ironflow_commits")}

        before = tokens()
        backend.write(lambda txn: txn.put("events", b"k", b"v"))
        (mine,) = tokens() - before
        assert backend._committed(mine) is True
        assert backend._committed(os.urandom(16)) is False
    finally:
        backend.close()


def test_commit_tokens_grow_so_their_inserts_land_on_the_index_right_edge() -> None:
    """Each write transaction's token sorts after the one before it: random tokens
    dirtied a random page of the ten minutes' index each write (and, after each
    checkpoint, wrote a full-page image of it to the WAL)."""
    url = shared_server().create_database()
    migrate(url)
    with PostgresStore(url) as store:
        store.register_agents([AgentSpec("a", ("go",))])
        for i in range(10):
            store.emit("go", {"i": i})
        with psycopg.connect(url, autocommit=True) as conn:
            rows = conn.execute("SELECT token FROM ironflow_commits ORDER BY at").fetchall()
    tokens = [bytes(row[0]) for row in rows]
    assert len(tokens) == 11 and tokens == sorted(tokens)


def test_old_commit_tokens_are_pruned_and_recent_ones_kept(pg_url: str) -> None:
    """A prune drops tokens older than ten minutes and keeps the rest; a write prunes at
    most once a minute."""
    backend = PostgresBackend(pg_url, listen=False, give_up_after=30)
    try:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO ironflow_commits (token, at) VALUES"
                " ('\\x01', now() - interval '11 minutes'), ('\\x02', now())"
            )
        backend._prune_at = 0.0
        backend.write(lambda txn: txn.put("events", b"k", b"v"))
        with psycopg.connect(pg_url, autocommit=True) as conn:
            left = {bytes(r[0]) for r in conn.execute("SELECT token FROM ironflow_commits")}
        assert b"\x02" in left and b"\x01" not in left
        assert backend._prune_at > time.monotonic() + 30
    finally:
        backend.close()


@pytest.mark.parametrize("ends", ["commit", "rollback"])
def test_a_commit_still_ending_is_waited_for_not_called_lost(pg_url: str, ends: str) -> None:
    """The client's connection broke, but its COMMIT is still on its way on the server:
    the look for its token waits for that transaction's end, then says how it ended (a
    plain read would say 'not committed' at once, and the op would run twice)."""
    backend = PostgresBackend(pg_url, listen=False, give_up_after=30)
    token = os.urandom(16)
    try:
        with psycopg.connect(pg_url) as holder:
            holder.execute("INSERT INTO ironflow_commits (token) VALUES (%s)", (token,))
            answer: list[bool] = []
            looker = threading.Thread(target=lambda: answer.append(backend._committed(token)))
            looker.start()
            looker.join(0.5)
            assert looker.is_alive(), "answered before the transaction ended"
            getattr(holder, ends)()
            looker.join(30)
        assert answer == [ends == "commit"]
    finally:
        backend.close()


def test_a_commit_whose_token_may_be_pruned_is_not_guessed(pg_url: str) -> None:
    """Too long after the transaction began, its token may be gone: an error that says
    the outcome is unknown, not a guess either way."""
    from ironflow.store._pgbackend import TOKENS_KEPT, _Unknown

    backend = PostgresBackend(pg_url, listen=False, give_up_after=30)
    try:
        late = _Unknown(os.urandom(16), None, time.monotonic() - TOKENS_KEPT - 1)
        with pytest.raises(StoreError, match="outcome is unknown"):
            backend._resolve(late)
        assert backend._resolve(_Unknown(os.urandom(16), None, time.monotonic())) is False
    finally:
        backend.close()

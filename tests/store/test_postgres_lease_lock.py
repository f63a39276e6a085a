"""The leasers' lock on PostgreSQL: leases one at a time, never stalled by its holder.

Leasers on one database want the same oldest runs and, under SERIALIZABLE, abort each
other (issue 20's falling worker curve). A lease waits a bounded time for a session
advisory lock before its BEGIN: with it, leasers do not conflict; a holder that never
lets go only delays a lease by that bound; and no pooled connection is left holding it.
"""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

from ironflow.store import AgentSpec, PostgresStore
from ironflow.store._backend import WriteTxn
from ironflow.testing import StandInWorker

_KEY = "hashtext('ironflow lease')"


def _lock_is_free(url: str) -> bool:
    """Whether another session can take the leasers' lock now (given back at once)."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(f"SELECT pg_try_advisory_lock({_KEY})".encode()).fetchone()
        assert row is not None
        if row[0]:
            conn.execute(f"SELECT pg_advisory_unlock({_KEY})".encode())
        return bool(row[0])


def _wait_gone(url: str, pid: int) -> None:
    """Until the server's backend ``pid`` has exited (at most 30 s)."""
    deadline = time.monotonic() + 30
    with psycopg.connect(url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,))
            found = row.fetchone()
            if found is not None and found[0] == 0:
                return
            time.sleep(0.02)
    raise AssertionError(f"backend {pid} still there after 30 s")


def _empty_the_queue(url: str, *, leasers: int, runs: int, wait: float | None) -> int:
    """``leasers`` threads, each with its own store, lease ``runs`` runs one at a time
    until none is left; every run is taken exactly once. The lease conflicts counted."""
    stores = [PostgresStore(url) for _ in range(leasers)]
    workers = [StandInWorker() for _ in range(leasers)]
    try:
        stores[0].register_agents([AgentSpec("a", ("go",))])
        emitted = {stores[0].emit("go", {"i": i}).run_ids[0] for i in range(runs)}
        for store in stores:
            store.backend.lease_lock_wait = wait
        taken: list[str] = []
        errors: list[BaseException] = []
        lock = threading.Lock()
        go = threading.Barrier(leasers)

        def lease(n: int) -> None:
            try:
                go.wait(30)
                while True:
                    got = stores[n].lease_runs(workers[n].info, ["a"], limit=1, ttl=600)
                    if not got:
                        return
                    with lock:
                        taken.extend(r.run.id for r in got)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=lease, args=(n,)) for n in range(leasers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert errors == []
        assert sorted(taken) == sorted(emitted)  # every run, none twice
        return sum(store.backend.lease_conflicts for store in stores)
    finally:
        for w in workers:
            w.kill()
        for store in stores:
            store.close()


def test_leasers_sharing_a_database_do_not_abort_each_other(pg_url: str) -> None:
    """Four leasers empty a queue of 60 runs: no lease is rolled back by another.

    The wait is long here so that a slow, loaded machine cannot make a lease give up
    on the lock: what is checked is that the lock keeps leases apart. Without it (the
    last lines) the same leasers conflict, which is what issue 20 measured."""
    assert _empty_the_queue(pg_url, leasers=4, runs=60, wait=10.0) == 0
    assert _lock_is_free(pg_url)


def test_without_the_lock_the_same_leasers_do_conflict(pg_url: str) -> None:
    """The check above can fail: with the lock off, leasers abort each other."""
    assert _empty_the_queue(pg_url, leasers=4, runs=60, wait=None) > 0


def test_a_held_lock_delays_a_lease_by_the_bound_and_never_stops_it(
    pg: PostgresStore, pg_url: str
) -> None:
    """Another session takes the leasers' lock and never gives it back (a host gone in
    the middle of a lease): each lease waits its bound, then leases without the lock."""
    pg.register_agents([AgentSpec("a", ("go",))])
    emitted = [pg.emit("go", {"i": i}).run_ids[0] for i in range(2)]
    worker = StandInWorker()
    with psycopg.connect(pg_url, autocommit=True) as holder:
        holder.execute(f"SELECT pg_advisory_lock({_KEY})".encode())
        holder_pid = holder.info.backend_pid
        try:
            for run_id in emitted:
                started = time.monotonic()
                got = pg.lease_runs(worker.info, ["a"], limit=1, ttl=600)
                waited = time.monotonic() - started
                assert [r.run.id for r in got] == [run_id]
                # It did wait for the lock (lock_timeout never fires early) ...
                assert waited >= pg.backend.lease_lock_wait * 0.9  # type: ignore[operator]
                # ... and no longer than the bound and a lease (30 s: a loaded machine).
                assert waited < 30
        finally:
            worker.kill()
    # The holder's session ends after its client closes: wait for it (30 s), so what
    # holds the lock next can only be the store's sessions.
    _wait_gone(pg_url, holder_pid)
    assert _lock_is_free(pg_url)


def test_a_finish_that_leases_the_next_run_takes_the_lock_too(
    pg: PostgresStore, pg_url: str
) -> None:
    """finish_and_lease leases: it waits for the leasers' lock as lease_runs does (without
    it, finishing workers raced for the same ready runs and rolled each other back)."""
    pg.register_agents([AgentSpec("a", ("go",))])
    first, second = (pg.emit("go", {"i": i}).run_ids[0] for i in range(2))
    worker = StandInWorker()
    try:
        (held,) = pg.lease_runs(worker.info, ["a"], limit=1, ttl=600)
        assert held.run.id == first
        with psycopg.connect(pg_url, autocommit=True) as holder:
            holder.execute(f"SELECT pg_advisory_lock({_KEY})".encode())
            holder_pid = holder.info.backend_pid
            started = time.monotonic()
            got = pg.finish_and_lease(
                worker.info,
                first,
                status="completed",
                attempt=held.run.attempt,
                agents=["a"],
                limit=1,
                ttl=600,
            )
            waited = time.monotonic() - started
        assert [r.run.id for r in got] == [second]
        assert waited >= pg.backend.lease_lock_wait * 0.9  # type: ignore[operator]
    finally:
        worker.kill()
    _wait_gone(pg_url, holder_pid)
    assert _lock_is_free(pg_url)


def test_no_pooled_connection_keeps_the_lock_after_a_lease_fails(
    pg: PostgresStore, pg_url: str
) -> None:
    """A lease whose op raises is rolled back and its lock given back; so is one that
    conflicted. The next lease of another session is not kept waiting."""
    pg.backend.lease_lock_wait = 10.0

    def fails(txn: WriteTxn) -> None:
        txn.get("runs", b"r1")
        raise ValueError("the op's own error")

    with pg.backend.leasing(), pytest.raises(ValueError, match="own error"):
        pg.backend.write(fails)
    assert _lock_is_free(pg_url)
    # The same connection again (pool of one in use): leasing still takes and frees it.
    pg.register_agents([AgentSpec("a", ("go",))])
    run_id = pg.emit("go", {}).run_ids[0]
    worker = StandInWorker()
    try:
        got = pg.lease_runs(worker.info, ["a"], limit=1, ttl=600)
        assert [r.run.id for r in got] == [run_id]
    finally:
        worker.kill()
    assert _lock_is_free(pg_url)


def test_each_session_asks_the_server_to_notice_a_vanished_client(pg_url: str) -> None:
    """TCP keepalives and a user timeout on the server's side of each pooled session: a
    leaser whose host vanishes is dropped, and its lock with it, in about 25 s."""
    store = PostgresStore(pg_url)
    try:
        assert pg_url.startswith("postgresql://postgres@127.0.0.1:")  # TCP, not a socket

        def show(txn: WriteTxn) -> list[str]:
            cur = txn._cur  # type: ignore[attr-defined]
            names = ("tcp_keepalives_idle", "tcp_keepalives_interval")
            names += ("tcp_keepalives_count", "tcp_user_timeout", "synchronous_commit")
            return [str(cur.execute(f"SHOW {n}".encode()).fetchone()[0]) for n in names]

        assert store.backend.write(show) == ["10", "5", "3", "25000", "on"]
    finally:
        store.close()

"""Speculative emits on PostgreSQL (``_pgspec.py``): one round trip on the agents, the
waits and the log's head as the store last saw them, and a guard that catches each of
them changed behind its back, whereupon the emit runs the normal way.

Two stores on one database, as two servers would be: what one changes, the other's
remembered rows do not know.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from ironflow.store import AgentSpec, PostgresStore
from ironflow.store._flowspec import ConcurrencyLimit, FlowSpec
from ironflow.store._pgdirect import _numbered
from tests.store.pg_trips import round_trips


@contextlib.contextmanager
def _two_stores(pg_url: str, *specs: AgentSpec) -> Iterator[tuple[PostgresStore, PostgresStore]]:
    a, b = PostgresStore(pg_url), PostgresStore(pg_url)
    try:
        a.register_agents(list(specs) or [AgentSpec("a", ("go",))])
        yield a, b
    finally:
        a.close()
        b.close()


def _fewest_trips(store: PostgresStore, emit: Any, tries: int = 3) -> int:
    """The fewest round trips of a few emits (a loaded host may split one in two)."""
    counts = []
    for _ in range(tries):
        with round_trips(store) as trips:
            emit()
        counts.append(trips[0])
    return min(counts)


def test_an_emit_on_remembered_rows_is_one_round_trip(pg_url: str) -> None:
    with _two_stores(pg_url) as (a, _):
        # The first emit reads the agents, the waits and the log's head: remembered.
        first = a.emit("go", {"i": 0})
        assert a.backend.speculated == 0
        assert _fewest_trips(a, lambda: a.emit("go", {"i": 1})) == 1
        assert a.backend.speculated == 3 and a.backend.stale == 0
        events = a.events()
        assert [e.seq for e in events] == [first.seq + i for i in range(4)]
        runs = a.list_runs(limit=10)
        assert len(runs) == 4 and all(r.status == "pending" for r in runs)
        assert {r.event.id for r in runs} == {e.id for e in events}


def test_an_emit_after_another_store_emitted_is_made_the_normal_way(pg_url: str) -> None:
    """The log's head moved: the guard finds it, and the event takes the next position."""
    with _two_stores(pg_url) as (a, b):
        a.emit("go", {})
        a.emit("go", {})
        assert a.backend.speculated == 1
        other = b.emit("go", {})
        mine = a.emit("go", {})
        assert mine.seq == other.seq + 1
        assert [e.id for e in a.events()][2:] == [other.event_id, mine.event_id]
        assert len(a.list_runs(limit=10)) == 4
        assert a.backend.stale == 1


def test_an_agent_changed_by_another_store_is_seen_by_the_next_emit(pg_url: str) -> None:
    with _two_stores(pg_url) as (a, b):
        a.emit("go", {})
        assert len(a.emit("go", {}).run_ids) == 1 and a.backend.speculated == 1
        # Registered elsewhere: a second agent on "go", and "a" now on "other" only.
        b.register_agents([AgentSpec("a", ("other",)), AgentSpec("b", ("go",))])
        result = a.emit("go", {})
        [run_id] = result.run_ids
        assert a.get_run(run_id).agent == "b"
        assert a.backend.stale == 1
        # Remembered now: speculative again, with the new agents.
        again = a.emit("other", {})
        assert a.backend.speculated == 2 and a.backend.stale == 1
        [run_id] = again.run_ids
        assert a.get_run(run_id).agent == "a"


def test_a_run_waiting_for_the_event_is_not_missed(pg_url: str) -> None:
    """A wait written by another store after this one remembered none for the name."""
    from ironflow.store._records import Suspension
    from ironflow.testing import StandInWorker

    with _two_stores(pg_url) as (a, b), StandInWorker() as worker:
        a.emit("go", {})
        a.emit("approve", {})  # remembered: no run waits for "approve"
        [leased] = b.lease_runs(worker.info, ["a"], limit=1, ttl=600)
        wait = Suspension(
            kind="event", position=0, step_id="w", since=1.0, event="approve", after_seq=2
        )
        assert b.suspend_run(
            worker.info, leased.run.id, wait, attempt=leased.lease.attempt
        ).suspended
        a.emit("approve", {"ok": True})
        [step] = a.get_steps(leased.run.id)
        assert step.output["data"] == {"ok": True}
        assert a.get_run(leased.run.id).status == "pending"
        assert a.backend.stale == 1


def test_an_emit_with_an_id_seen_before_returns_the_first(pg_url: str) -> None:
    """An event id is guessed new; the guard finds it is not, and the normal way answers
    with the first emit's result, creating nothing."""
    with _two_stores(pg_url) as (a, b):
        a.emit("go", {})
        first = b.emit("go", {}, id="once")
        again = a.emit("go", {}, id="once")
        assert (again.created, again.event_id, again.run_ids) == (False, "once", first.run_ids)
        assert len(a.events()) == 2
        assert a.backend.stale == 1


def test_a_concurrency_slot_taken_by_another_store_queues_the_run(pg_url: str) -> None:
    """This store guesses the key's slots empty; another store's emit took the one
    slot: the guard finds it, and the run is queued, not admitted a second time."""
    limited = AgentSpec("c", ("job",), flow=FlowSpec(concurrency=ConcurrencyLimit(1, "user")))
    with _two_stores(pg_url, limited) as (a, b):
        a.emit("job", {"user": "u0"})  # the agents and the log's head remembered
        b.emit("job", {"user": "u1"})
        first = b.emit("job", {"user": "u1"})  # b's second: b knew the head: speculative
        a.emit("job", {"user": "u1"})
        statuses = [r.status for r in a.list_runs(agent="c", limit=10)]
        assert first.run_ids and statuses.count("pending") == 2  # u0's and u1's first
        assert statuses.count("queued") == 2
        assert a.backend.stale >= 1


def test_concurrent_emitters_admit_one_run_per_slot(pg_url: str) -> None:
    """Threads of two stores emit at once for five concurrency keys of limit 1 (and to
    an agent with no key): every event is logged once, at its own position, with its
    runs, and exactly one run of each key is admitted; the rest are queued. Each store
    guesses a key it has not seen free, so some emits are speculative and race."""
    limited = AgentSpec("c", ("job",), flow=FlowSpec(concurrency=ConcurrencyLimit(1, "user")))
    plain = AgentSpec("p", ("job",))
    with _two_stores(pg_url, limited, plain) as (a, b):
        results: list[Any] = []
        errors: list[BaseException] = []
        sent: list[int] = []
        start = threading.Barrier(4)
        for store in (a, b):
            backend: Any = store.backend
            backend.direct.run = _counting(backend.direct.run, sent)

        def emitter(store: PostgresStore, n: int) -> None:
            try:
                start.wait()
                for i in range(n):
                    results.append(store.emit("job", {"user": f"u{i % 5}", "i": i}))
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=emitter, args=(s, 15)) for s in (a, b, a, b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not errors and len(results) == 60
        assert sent, "no emit was speculative"
        events = a.events(limit=1000)
        assert [e.seq for e in events] == list(range(1, 61))
        assert sorted(r.event_id for r in results) == sorted(e.id for e in events)
        runs = [a.get_run(run_id) for r in results for run_id in r.run_ids]
        assert len(runs) == 120 and len({r.id for r in runs}) == 120
        assert all(r.status == "pending" for r in runs if r.agent == "p")
        for user in [f"u{i}" for i in range(5)]:
            mine = [r.status for r in runs if r.agent == "c" and r.event.data["user"] == user]
            assert sorted(mine) == ["pending"] + ["queued"] * 11, user


def _counting(run: Any, sent: list[int]) -> Any:
    def counted(*args: Any) -> Any:
        sent.append(1)
        return run(*args)

    return counted


def test_a_speculative_emit_wakes_a_waiting_worker_of_another_store(pg_url: str) -> None:
    """Its statement sends the NOTIFY (on commit): a worker waiting for work in another
    store wakes at once, not at the end of its 30 s wait."""
    with _two_stores(pg_url) as (emitting, waiting):
        emitting.emit("go", {})  # remembered from here: the next emit is speculative
        waiting.backend.listen()
        time.sleep(0.5)  # the listener's first wake-up (on connecting) passes
        woke = threading.Event()

        def wait() -> None:
            waiting.wait_for_work(30)
            woke.set()

        thread = threading.Thread(target=wait)
        thread.start()
        time.sleep(0.2)
        assert not woke.is_set()
        emitting.emit("go", {})
        assert emitting.backend.speculated == 1
        assert woke.wait(10), "the speculative emit did not wake the other store's worker"
        thread.join(30)


def test_emitters_on_two_stores_taking_turns_stop_guessing(pg_url: str) -> None:
    """Each store's head of the log is stale whenever the other emitted since: after a
    few stale guesses in a row, a store sends most emits the normal way (no statement
    rolled back, no round trip wasted), and speculates again once a guess hits."""
    with _two_stores(pg_url) as (a, b):
        sent: list[int] = []
        backend: Any = a.backend
        backend.direct.run = _counting(backend.direct.run, sent)
        for i in range(40):
            a.emit("go", {"i": i})
            b.emit("go", {"i": i})
        assert [e.seq for e in a.events(limit=100)] == list(range(1, 81))
        # Every one of a's 39 guesses (its first emit knows nothing) was stale; backing
        # off (0, 1, 3, 7, 15 emits after each) leaves 6 of them.
        assert a.backend.speculated == 0 and len(sent) == a.backend.stale <= 8
        # Alone now: once the skips left run out, every guess hits (the emits made the
        # normal way meanwhile remembered the head).
        for i in range(40):
            a.emit("go", {"i": i})
        assert a.backend.speculated >= 8


def test_a_range_read_after_the_op_wrote_there_gives_up() -> None:
    """What the cache remembers is the range before the op's own writes: read again
    after one, it would be stale, so the op runs the normal way. A last key read again
    is the last of the op's writes there (the second of a LangGraph node's two appends
    reads the log's head after the first wrote it); after a delete there, it gives up."""
    from ironflow.store._pgspec import Abandon, Learned, RowCache, SpecTxn

    cache = RowCache()
    cache.learn(
        Learned(ranges={("agents", b""): ((b"a", b"1"),)}, lasts={("events", b""): b"\x01"})
    )
    txn = SpecTxn(cache)
    assert txn.last_key("events") == b"\x01"
    assert list(txn.scan("agents")) == [(b"a", b"1")]
    txn.put("events", b"\x02", b"e")
    txn.put("agents", b"b", b"2")
    assert txn.last_key("events") == b"\x02"
    assert txn.lasts == {("events", b""): b"\x01"}  # what the guard checks: before
    with pytest.raises(Abandon):
        list(txn.scan("agents"))
    # What it leaves the cache: the ranges and head as its writes left them.
    learned = txn.learned()
    assert learned.ranges == {("agents", b""): ((b"a", b"1"), (b"b", b"2"))}
    assert learned.lasts == {("events", b""): b"\x02"}
    txn.discard("events", b"\x01")
    with pytest.raises(Abandon):
        txn.last_key("events")


def _tokens(pg_url: str) -> set[bytes]:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        return {bytes(r[0]) for r in conn.execute("SELECT token FROM ironflow_commits")}


@pytest.mark.parametrize("committed", [True, False])
def test_an_emit_whose_answer_is_lost_is_resolved_by_its_token(
    pg_url: str, committed: bool
) -> None:
    """The speculative statement's connection breaks after the server ran it, or before
    it was sent: its commit token says which. Committed: its result, not a second
    event; not: the normal way logs it. Either way the event is logged once."""
    with _two_stores(pg_url) as (a, _):
        a.emit("go", {})
        backend: Any = a.backend
        run = backend.direct.run
        calls: list[bytes] = []

        def losing(conn: Any, sql: bytes, params: Any) -> None:
            calls.append(sql)
            if committed:
                run(conn, sql, params)
            conn.close()
            raise psycopg.OperationalError("server closed the connection unexpectedly")

        asked: list[bool] = []
        look = backend._committed

        def committed_(token: bytes) -> bool:
            asked.append(look(token))
            return asked[-1]

        backend._committed = committed_
        before = _tokens(pg_url)
        backend.direct.run = losing
        try:
            result = a.emit("go", {"lost": True})
        finally:
            del backend.direct.run
        assert len(calls) == 1 and asked == [committed]
        events = a.events()
        assert [e.seq for e in events] == [1, 2]
        assert events[1].id == result.event_id and events[1].data == {"lost": True}
        [run_id] = result.run_ids
        assert a.get_run(run_id).event.id == result.event_id
        assert len(a.list_runs(limit=10)) == 2
        # One token written either way: the lost statement's, or the normal way's.
        assert len(_tokens(pg_url) - before) == 1


def test_an_emit_whose_statement_still_waits_on_its_lost_session_is_not_applied_twice(
    pg_url: str,
) -> None:
    """The speculative emit's connection breaks on the client while its server process
    still waits (here for a lock another session holds) before inserting anything: the
    look for its token finds none, yet the statement would insert and commit once the
    lock is free. Its session is ended first, so the emit is logged once, by the normal
    way run again, never twice."""
    with _two_stores(pg_url) as (a, _):
        a.emit("go", {})
        backend: Any = a.backend
        sent: list[int] = []

        def held_then_lost(conn: Any, sql: bytes, params: Any) -> None:
            # Sent (unnamed, as its first runs are), and its server process waits on the
            # lock; then the client's side of the connection breaks.
            _, text, _ = _numbered(sql)
            conn.pgconn.send_query_params(text, params, (17,) * len(params), (1,) * len(params), 1)
            while conn.pgconn.flush():
                time.sleep(0.01)
            sent.append(conn.info.backend_pid)
            with psycopg.connect(pg_url, autocommit=True) as look:
                for _ in range(600):
                    waiting = look.execute(
                        "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s",
                        (sent[0],),
                    ).fetchone()
                    if waiting is not None and waiting[0] == "Lock":
                        break
                    time.sleep(0.05)
                else:
                    raise AssertionError("the statement never waited on the lock")
            conn.close()
            raise psycopg.OperationalError("server closed the connection unexpectedly")

        # The op run again the normal way waits until the lost statement is over (it
        # would race it otherwise, and one of the two might lose a serialization failure).
        again, over = threading.Event(), threading.Event()
        attempt = backend._attempt

        def after_the_lost_one(*args: Any) -> Any:
            again.set()
            assert over.wait(30)
            return attempt(*args)

        emitted: list[Any] = []
        with psycopg.connect(pg_url) as holder:
            holder.execute("LOCK TABLE ironflow_events IN SHARE ROW EXCLUSIVE MODE")
            backend.direct.run = held_then_lost
            backend._attempt = after_the_lost_one
            try:
                emitter = threading.Thread(target=lambda: emitted.append(a.emit("go", {"n": 1})))
                emitter.start()
                assert again.wait(30), "the emit was not resolved"
                holder.rollback()  # the lock is free: a surviving lost statement commits
                with psycopg.connect(pg_url, autocommit=True) as look:
                    for _ in range(600):
                        if _gone(look, sent[0]):
                            break
                        time.sleep(0.05)
                    else:
                        raise AssertionError("the lost statement's session never ended")
                over.set()
                emitter.join(30)
            finally:
                over.set()
                del backend.direct.run
                del backend._attempt
        assert len(emitted) == 1
        events = a.events()
        assert [e.data for e in events] == [{}, {"n": 1}], "the lost emit was applied twice"
        assert len(a.list_runs(limit=10)) == 2


def _gone(look: Any, pid: int) -> bool:
    """Whether the session of ``pid`` has ended."""
    row = look.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()
    return row is None

"""What a run's hot calls read on PostgreSQL, and in how many requests.

An emit needs the position of the log's last event; it used to read it with a reverse
scan whose first page fetched 16 whole events, payloads included. A lease read that
page too (for the cron ticks it may fire), though it needs the head only when a tick
fires, and under SERIALIZABLE the read tied every lease to every emit's insert. A
finish that leases the next run read its run, then the look for work, one request
after the other. These tests watch what the client receives from a real PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from ironflow.store import AgentSpec, PostgresStore
from ironflow.store import _pgbackend as pg_module
from ironflow.store import _pgspec as spec_module
from ironflow.store._flowspec import CronTrigger, FlowSpec
from ironflow.store._keys import stream_key
from ironflow.store._pgtxn import PgTxn
from ironflow.testing import StandInWorker

#: In the data of events that start no run: seen by the client only if it read the log.
MARK = "LOGGED-EVENT-PAYLOAD"


def _raw(column: Any) -> bytes:
    if isinstance(column, bytes | bytearray | memoryview):
        return bytes(column)
    return str(column).encode()


class _Recording:
    """A cursor that keeps every row it hands out, a b"?" for each answer waited for, and
    each statement it sends (b"! " and its text)."""

    def __init__(self, cur: Any, rows: list[bytes]) -> None:
        self._cur = cur
        self._rows = rows

    def _kept(self, row: Any, *, waited: bool = True) -> Any:
        if waited:
            self._rows.append(b"?")
        if row is not None:
            self._rows.append(b"|".join(_raw(c) for c in row))
        return row

    def execute(self, query: bytes, params: Any = None) -> Any:
        self._rows.append(b"! " + query)
        return self._cur.execute(query, params)

    def fetchone(self) -> Any:
        return self._kept(self._cur.fetchone())

    def fetchall(self) -> Any:
        rows = self._cur.fetchall()
        self._rows.append(b"?")
        for row in rows:
            self._kept(row, waited=False)
        return rows

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cur, name)


@pytest.fixture
def received(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[bytes]]:
    """Every row the write transactions of PostgresStores receive from now on."""
    rows: list[bytes] = []

    class Recorded(PgTxn):
        __slots__ = ()

        def __init__(self, cur: Any, *args: Any) -> None:
            super().__init__(_Recording(cur, rows), *args)

    monkeypatch.setattr(pg_module, "PgTxn", Recorded)
    monkeypatch.setattr(spec_module, "PgTxn", Recorded)  # the writes' (``noting``)
    yield rows


def _logged(received: list[bytes]) -> list[bytes]:
    return [row for row in received if MARK.encode() in row and not row.startswith(b"! ")]


def _sent(received: list[bytes]) -> list[bytes]:
    return [row[2:] for row in received if row.startswith(b"! ")]


def test_emit_and_lease_read_no_logged_event(pg: PostgresStore, received: list[bytes]) -> None:
    pg.register_agents([AgentSpec(id="a", triggers=("go",))])
    for i in range(20):
        assert pg.emit("noted", {"mark": f"{MARK}-{i}"}).run_ids == ()
    received.clear()
    # A store that remembers nothing emits the normal way (``pg`` would speculate on
    # the head it remembers, reading nothing: ``_pgspec.py``).
    fresh = PostgresStore(pg.url)
    try:
        first = fresh.emit("go", {"i": 1})
        second = fresh.emit("go", {"i": 2})
    finally:
        fresh.close()
    assert (first.seq, second.seq) == (21, 22)  # the head was read right
    assert received  # the recorder saw the transactions
    assert _logged(received) == []
    with StandInWorker() as w:
        [leased] = pg.lease_runs(w.info, ["a"], limit=1, ttl=60)
        assert leased.run.id == first.run_ids[0]
        assert _logged(received) == []
        [chained] = pg.finish_and_lease(
            w.info,
            leased.run.id,
            status="completed",
            attempt=leased.run.attempt,
            agents=["a"],
            limit=1,
            ttl=60,
        )
        assert chained.run.id == second.run_ids[0]
    assert _logged(received) == []


def test_a_cron_tick_fired_by_a_lease_names_the_log_head(
    pg_url: str, received: list[bytes]
) -> None:
    """The head is still read when a tick fires: the tick's event names it."""
    now = [1_800_000_000.0]
    store = PostgresStore(pg_url, clock=lambda: now[0])
    try:
        spec = AgentSpec(id="tick", triggers=(), flow=FlowSpec(crons=(CronTrigger("* * * * *"),)))
        store.register_agents([spec])
        for i in range(3):
            store.emit("noted", {"mark": f"{MARK}-{i}"})
        now[0] += 120
        with StandInWorker() as w:
            [ticked] = store.lease_runs(w.info, ["tick"], limit=1, ttl=60)
        assert ticked.run.event.name == "cron.tick"
        assert ticked.run.event.seq == 3
        assert _logged(received) == []
    finally:
        store.close()


def test_a_finish_reads_the_next_lease_s_look_with_its_run(
    pg: PostgresStore, received: list[bytes]
) -> None:
    """finish_and_lease waits for one answer before its commit: the finished run with
    the look for work and the claim it most likely makes (the oldest ready run, locked,
    with its records), one query. The claimed run's steps are read once the lease
    committed (_leasing.with_steps), sent with its COMMIT, and taken from its answer."""
    pg.register_agents([AgentSpec(id="a", triggers=("go",))])
    for i in range(3):
        pg.emit("go", {"i": i})
    with StandInWorker() as w:
        [leased] = pg.lease_runs(w.info, ["a"], limit=1, ttl=60)
        received.clear()
        [chained] = pg.finish_and_lease(
            w.info,
            leased.run.id,
            status="completed",
            attempt=leased.run.attempt,
            agents=["a"],
            limit=1,
            ttl=60,
        )
        assert received.count(b"?") == 1 + 1
    assert pg.get_run(leased.run.id).status == "completed"
    assert chained.run.status == "running"


def test_a_transaction_s_writes_and_its_token_go_as_one_statement(
    pg: PostgresStore, received: list[bytes]
) -> None:
    """An emit writes its event, its id, its name index, its run and the ready row, and
    the commit token: one statement after its one read, not six (each statement costs the
    client a trip through psycopg's pipeline and the server a parse and plan)."""
    pg.register_agents([AgentSpec(id="a", triggers=("go",)), AgentSpec(id="b", triggers=("go",))])
    received.clear()
    result = pg.emit("go", {"i": 1})
    assert len(result.run_ids) == 2
    sent = _sent(received)
    assert len(sent) == 2, sent
    assert sent[1].startswith(b"WITH ") and b"ironflow_commits" in sent[1]
    # All of it landed, and only once.
    assert {pg.get_run(r).status for r in result.run_ids} == {"pending"}
    assert [e.id for e in pg.events()] == [result.event_id]


def test_a_stream_s_appends_in_one_transaction_go_as_one_statement(
    pg: PostgresStore, received: list[bytes]
) -> None:
    """Several appends to a stream in one transaction (the LangGraph saver's node: its
    writes and its checkpoint) each move the stream's head: the second write of that row
    used to send the queued writes early, a statement more a node."""
    pg.append_to_stream("s", "first", {"i": 0})
    # The normal way (the head this store wrote would make it one speculative statement:
    # test_postgres_spec_append.py).
    pg.backend.rows.forget(iter([("stream_heads", stream_key("s"))]))
    received.clear()
    events = pg.append_many_to_stream("s", [("a", {"i": 1}, "k1"), ("b", {"i": 2}, "k2")])
    assert [e.version for e in events] == [2, 3]
    sent = _sent(received)
    assert len(sent) == 2, sent
    assert sent[1].startswith(b"WITH ") and b"ironflow_commits" in sent[1]
    assert [e.name for e in pg.read_stream("s")] == ["first", "a", "b"]
    # The head the one statement left is the last append's: the next one follows it.
    assert pg.append_to_stream("s", "c", {"i": 3}).version == 4


def _one_by_one(there: bytes | None, writes: tuple[tuple[str, bytes | None], ...]) -> bytes | None:
    """What a row holds after these writes, each a statement of its own."""
    for kind, value in writes:
        if kind == "put" or (kind == "add" and there is None):
            there = value
        elif kind == "discard":
            there = None
    return there


@pytest.mark.parametrize(
    "writes",
    [
        (("put", b"1"), ("put", b"2")),
        (("put", b"1"), ("add", b"2")),
        (("add", b"1"), ("add", b"2")),
        (("add", b"1"), ("put", b"2")),
        (("put", b"1"), ("discard", None)),
        (("add", b"1"), ("discard", None)),
        (("discard", None), ("add", b"2")),
        (("discard", None), ("put", b"2")),
        (("put", b"1"), ("discard", None), ("add", b"3")),
    ],
)
@pytest.mark.parametrize("there", [None, b"0"])
def test_two_writes_of_a_row_in_one_statement_leave_what_both_would(
    pg: PostgresStore,
    received: list[bytes],
    writes: tuple[tuple[str, bytes | None], ...],
    there: bytes | None,
) -> None:
    """Queued writes of one row become one write of the statement, leaving what the
    writes leave one after the other (``add`` does nothing over a row that is there)."""
    key = b"row"

    def setup(txn: Any) -> None:
        if there is None:
            txn.discard("stream_heads", key)
        else:
            txn.put("stream_heads", key, there)

    def op(txn: Any) -> None:
        for kind, value in writes:
            if kind == "discard":
                txn.discard("stream_heads", key)
            else:
                getattr(txn, kind)("stream_heads", key, value)

    pg._write(setup)
    received.clear()
    pg._write(op)
    assert len(_sent(received)) == 1, _sent(received)
    with pg._read() as txn:
        assert txn.get("stream_heads", key) == _one_by_one(there, writes)

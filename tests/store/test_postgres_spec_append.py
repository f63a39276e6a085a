"""Speculative stream appends on PostgreSQL (``_pgspec.py``): a LangGraph node's writes
and checkpoint (``append_many_to_stream``) in one round trip on the stream's head as
this store last wrote it, its idempotency keys guessed new, the agents, the waits and
the log's head as for an emit; a guard catching each of them changed, whereupon the
append runs the normal way.

Two stores on one database, as two savers in two processes would be.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from ironflow.store import AgentSpec, PostgresStore
from tests.store.pg_trips import round_trips

_STREAM = "langgraph/thread/t"


@contextlib.contextmanager
def _two_stores(pg_url: str) -> Iterator[tuple[PostgresStore, PostgresStore]]:
    a, b = PostgresStore(pg_url), PostgresStore(pg_url)
    try:
        a.register_agents([AgentSpec("a", ("go",))])
        yield a, b
    finally:
        a.close()
        b.close()


def _node(store: PostgresStore, i: int, stream: str = _STREAM) -> list[Any]:
    """A node's two appends, as IronflowSaver makes them: its writes, its checkpoint."""
    return store.append_many_to_stream(
        stream,
        [("lg.writes", {"i": i}, f"w{i}"), ("lg.checkpoint", {"i": i}, f"c{i}")],
    )


def _fewest_trips(store: PostgresStore, call: Any, tries: int = 3) -> int:
    """The fewest round trips of a few calls (a loaded host may split one in two)."""
    counts = []
    for _ in range(tries):
        with round_trips(store) as trips:
            call()
        counts.append(trips[0])
    return min(counts)


def test_a_nodes_writes_and_checkpoint_are_one_round_trip(pg_url: str) -> None:
    # The stream's head moves twice in one statement (merged into one write), and the
    # checkpoint takes the log position after the writes' (the log's head read after
    # the op's own write there).
    with _two_stores(pg_url) as (a, _):
        _node(a, 0)  # the normal way: the head, the agents, the log's head remembered
        assert a.backend.speculated == 0
        nodes = iter(range(1, 100))
        assert _fewest_trips(a, lambda: _node(a, next(nodes))) == 1
        assert a.backend.speculated == 3 and a.backend.stale == 0
        events = a.read_stream(_STREAM)
        assert [e.version for e in events] == list(range(1, 9))
        assert [e.data["i"] for e in events] == [0, 0, 1, 1, 2, 2, 3, 3]
        assert [e.seq for e in a.events()] == list(range(1, 9))
        # Each key stored: a repeat of a node appends nothing.
        again = _node(a, 2)
        assert [e.id for e in again] == [e.id for e in events[4:6]]
        assert len(a.read_stream(_STREAM)) == 8


def test_an_append_after_another_store_appended_is_made_the_normal_way(pg_url: str) -> None:
    """The stream's head moved behind this store's back: the guard finds it, and the
    node's events take the versions after the other store's."""
    with _two_stores(pg_url) as (a, b):
        _node(a, 0)
        _node(a, 1)
        assert a.backend.speculated == 1
        b.append_to_stream(_STREAM, "lg.writes", {"i": "b"}, idempotency_key="b")
        mine = _node(a, 2)
        assert [e.version for e in mine] == [6, 7]
        assert [e.data["i"] for e in a.read_stream(_STREAM)] == [0, 0, 1, 1, "b", 2, 2]
        assert a.backend.stale == 1
        # The head is remembered again: the next node is one statement.
        _node(a, 3)
        assert a.backend.speculated == 2 and a.backend.stale == 1


def test_a_key_stored_by_another_store_returns_its_event(pg_url: str) -> None:
    """An idempotency key is guessed new; the guard finds it is not (a repeated call,
    answered by another server the first time), and the normal way answers with the
    event stored, appending nothing."""
    with _two_stores(pg_url) as (a, b):
        _node(a, 0)
        [first] = b.append_many_to_stream(_STREAM, [("lg.writes", {"i": 1}, "w1")])
        mine = _node(a, 1)
        assert mine[0].id == first.id and mine[1].version == 4
        assert len(a.read_stream(_STREAM)) == 4
        assert a.backend.stale == 1


def test_an_append_that_starts_a_run_wakes_nothing_twice_and_loses_nothing(
    pg_url: str,
) -> None:
    """A stream event is an event: one an agent listens for starts its run in the same
    statement, speculative or not."""
    with _two_stores(pg_url) as (a, _):
        a.append_to_stream("s", "go", {"n": 0})
        a.append_to_stream("s", "go", {"n": 1})
        assert a.backend.speculated == 1
        runs = a.list_runs(limit=10)
        assert sorted(r.event.data["n"] for r in runs) == [0, 1]
        assert [e.version for e in a.read_stream("s")] == [1, 2]

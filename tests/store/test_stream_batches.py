"""append_many_to_stream: several appends to one stream in one transaction.

What the LangGraph saver uses for a node's writes and the checkpoint after them, so a
node costs one durable commit, not two. Each append must come out as
``append_to_stream`` would make it alone (versions, log positions, idempotency keys,
triggered runs), the batch must commit once, and a refused batch must write nothing.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from ironflow.errors import IronflowError
from ironflow.store import AgentSpec, LmdbStore, PostgresStore
from ironflow.store._machine import StoreMachine


def _shape(events: list[Any]) -> list[tuple[Any, ...]]:
    return [(e.name, e.data, e.stream, e.version) for e in events]


def test_a_batch_appends_in_order_as_single_appends_would(machine: StoreMachine) -> None:
    machine.register_agents([AgentSpec("on_b", ("b",))])
    first = machine.append_to_stream("s", "a", {"i": 0}, idempotency_key="k0")
    events = machine.append_many_to_stream(
        "s", [("a", {"i": 1}, "k1"), ("b", {"i": 2}, None), ("a", [3], "k3")]
    )
    assert _shape(events) == [
        ("a", {"i": 1}, "s", 2),
        ("b", {"i": 2}, "s", 3),
        ("a", [3], "s", 4),
    ]
    assert [e.seq for e in events] == [first.seq + 1, first.seq + 2, first.seq + 3]
    assert machine.read_stream("s") == [first, *events]
    assert [e.id for e in machine.events()] == [first.id, *(e.id for e in events)]
    # The event named b started its trigger's run, as an append alone would.
    [run] = machine.list_runs()
    assert run.agent == "on_b" and run.event.id == events[1].id
    machine.check_valid()


def test_a_batch_keeps_and_honours_idempotency_keys(machine: StoreMachine) -> None:
    first = machine.append_to_stream("s", "a", {"i": 0}, idempotency_key="k0")
    events = machine.append_many_to_stream(
        "s", [("a", {"i": 0}, "k0"), ("a", {"i": 1}, "k1"), ("a", {"i": 1}, "k1")]
    )
    # k0 was used before, and k1 earlier in the same batch: both answer the first event.
    assert events[0] == first
    assert events[1].version == 2 and events[2] == events[1]
    again = machine.append_many_to_stream("s", [("a", {"i": 1}, "k1"), ("a", {"i": 2}, "k2")])
    assert again[0] == events[1] and again[1].version == 3
    assert machine.append_to_stream("s", "a", {"i": 2}, idempotency_key="k2") == again[1]
    assert [e.version for e in machine.read_stream("s")] == [1, 2, 3]
    machine.check_valid()


def test_a_refused_append_writes_nothing_of_its_batch(machine: StoreMachine) -> None:
    with pytest.raises(IronflowError, match="data"):
        machine.append_many_to_stream("s", [("a", {"i": 1}, "k1"), ("a", {"x": math.nan}, None)])
    assert machine.read_stream("s") == []
    assert machine.append_many_to_stream("s", []) == []
    assert machine.append_to_stream("s", "a", {"i": 1}, idempotency_key="k1").version == 1


def test_a_batch_is_one_commit(tmp_path: Any) -> None:
    with LmdbStore(tmp_path / "data", sync=False) as store:
        commits: list[int] = []
        store.commit_observer = lambda seconds, n: commits.append(n)
        store.append_many_to_stream("s", [("a", {"i": 1}, "k1"), ("b", {"i": 2}, "k2")])
        assert commits == [1]  # two append_to_stream calls: two commits
        assert len(store.read_stream("s")) == 2


def test_a_batch_on_postgresql_is_one_transaction(pg: PostgresStore) -> None:
    commits: list[int] = []
    pg.register_agents([AgentSpec("on_b", ("b",))])
    pg.backend.commit_observer = lambda seconds, n: commits.append(n)
    events = pg.append_many_to_stream("s", [("a", {"i": 1}, "k1"), ("b", {"i": 2}, "k2")])
    assert len(commits) == 1
    assert _shape(events) == [("a", {"i": 1}, "s", 1), ("b", {"i": 2}, "s", 2)]
    assert pg.read_stream("s") == events
    assert [r.event.id for r in pg.list_runs()] == [events[1].id]
    assert pg.append_many_to_stream("s", [("b", {"i": 2}, "k2")]) == [events[1]]
    pg.check_valid()

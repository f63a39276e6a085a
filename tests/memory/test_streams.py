"""Entity streams: versions, optimistic concurrency, idempotent appends, the global log."""

from __future__ import annotations

from pathlib import Path

import pytest

from ironflow.errors import ConcurrencyError, InvalidInputError, NotSerializableError
from ironflow.store import AgentSpec, LmdbStore


def test_versions_count_up_per_stream(store: LmdbStore) -> None:
    """Each stream numbers its own events 1, 2, 3, ...; reads come back in version order."""
    for i in range(3):
        store.append_to_stream("a", "note", {"i": i})
    store.append_to_stream("b", "note", {"i": 9})
    a = store.read_stream("a")
    assert [(e.version, e.data["i"], e.stream) for e in a] == [
        (1, 0, "a"),
        (2, 1, "a"),
        (3, 2, "a"),
    ]
    assert [(e.version, e.stream) for e in store.read_stream("b")] == [(1, "b")]
    assert [e.version for e in store.read_stream("a", from_version=2)] == [2, 3]
    assert [e.version for e in store.read_stream("a", from_version=1, limit=2)] == [1, 2]
    assert store.read_stream("never-written") == []
    store.check_valid()


def test_expected_version_mismatch_raises_and_writes_nothing(store: LmdbStore) -> None:
    """A stale expected_version raises ConcurrencyError naming both versions; nothing is written."""
    assert store.append_to_stream("s", "x", 1, expected_version=0).version == 1
    assert store.append_to_stream("s", "x", 2, expected_version=1).version == 2
    log_before = store.events()
    with pytest.raises(ConcurrencyError) as info:
        store.append_to_stream("s", "x", 3, expected_version=1)
    assert (info.value.expected, info.value.actual) == (1, 2)
    assert "stream 's' is at version 2, not the expected 1" in str(info.value)
    assert store.events() == log_before
    assert [e.data for e in store.read_stream("s")] == [1, 2]
    with pytest.raises(ConcurrencyError):
        store.append_to_stream("new", "x", 1, expected_version=3)
    assert store.read_stream("new") == []


def test_idempotency_key_appends_once(store: LmdbStore) -> None:
    """A repeated idempotency key returns the first event, even with a stale expected_version."""
    first = store.append_to_stream("s", "x", {"n": 1}, idempotency_key="run_1/memory.append")
    again = store.append_to_stream(
        "s", "x", {"n": 1}, idempotency_key="run_1/memory.append", expected_version=0
    )
    assert again == first
    other = store.append_to_stream("s", "x", {"n": 2}, idempotency_key="run_1/memory.append#2")
    assert other.version == 2
    # The key is scoped to its stream.
    assert store.append_to_stream("t", "x", {}, idempotency_key="run_1/memory.append").stream == "t"
    assert [e.version for e in store.read_stream("s")] == [1, 2]
    assert len(store.events()) == 3


def test_appends_enter_the_global_log_and_trigger_runs(store: LmdbStore) -> None:
    """An append is an event of the log (its seq shared with emit) and starts matching runs."""
    store.register_agents([AgentSpec("on-processed", ("doc.*",))])
    store.emit("other.event", {})
    event = store.append_to_stream("agent-memory", "doc.processed", {"docId": "d1"})
    assert event.seq == 2 and event.version == 1
    logged = store.events()
    assert [(e.seq, e.name, e.stream, e.version) for e in logged] == [
        (1, "other.event", None, 0),
        (2, "doc.processed", "agent-memory", 1),
    ]
    runs = store.list_runs(agent="on-processed")
    assert len(runs) == 1
    assert runs[0].status == "pending"
    assert runs[0].event == event


def test_bad_arguments_are_refused(store: LmdbStore) -> None:
    """Unusable ids, names, versions and data raise before anything is written."""
    for bad_id in ("", "a\x00b", "x" * 201):
        with pytest.raises(InvalidInputError):
            store.append_to_stream(bad_id, "x", {})
    with pytest.raises(InvalidInputError):
        store.append_to_stream("s", "", {})
    with pytest.raises(InvalidInputError):
        store.append_to_stream("s", "x", {}, expected_version=-1)
    with pytest.raises(InvalidInputError):
        store.append_to_stream("s", "x", {}, idempotency_key="")
    with pytest.raises(NotSerializableError):
        store.append_to_stream("s", "x", {"f": float("nan")})
    assert store.events() == []


def test_streams_survive_reopening(tmp_path: Path) -> None:
    """Versions and idempotency keys are durable: a new process continues where the last left."""
    with LmdbStore(tmp_path / "d", sync=False) as s:
        s.append_to_stream("s", "x", 1, idempotency_key="k")
    with LmdbStore(tmp_path / "d", sync=False) as s:
        assert s.append_to_stream("s", "x", 1, idempotency_key="k").version == 1
        assert s.append_to_stream("s", "x", 2).version == 2
        s.check_valid()

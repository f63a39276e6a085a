"""Deleting events of an entity stream: what the LangGraph saver's deletes and prunes need.

Run against the embedded store and against it through the server (RemoteStore).
"""

from __future__ import annotations

import pytest

from ironflow.errors import InvalidInputError
from ironflow.store import LmdbStore, Store
from ironflow.store._records import DELETED_EVENT


def test_deletes_chosen_versions_from_stream_and_log(any_store: Store) -> None:
    """The chosen versions leave the stream and the log; the rest stay, versions unchanged."""
    for i in range(4):
        any_store.append_to_stream("s", "note", {"i": i}, idempotency_key=f"k{i}")
    any_store.append_to_stream("other", "note", {"i": 9})
    assert any_store.delete_stream_events("s", [2, 3, 99]) == 2
    assert [(e.version, e.data["i"]) for e in any_store.read_stream("s")] == [(1, 0), (4, 3)]
    assert [e.stream for e in any_store.events()] == ["s", "s", "other"]
    # Versions are never reused while the stream keeps an event.
    assert any_store.append_to_stream("s", "note", {"i": 5}).version == 5
    # A deleted event's idempotency key appends anew; a kept one's still dedupes.
    assert any_store.append_to_stream("s", "note", {"i": 1}, idempotency_key="k1").version == 6
    assert any_store.append_to_stream("s", "note", {}, idempotency_key="k0").version == 1
    if isinstance(any_store, LmdbStore):
        any_store.check_valid()


def test_deleting_every_event_makes_the_stream_new(any_store: Store) -> None:
    """With nothing left the next append is version 1, and the newest log position is kept."""
    any_store.append_to_stream("s", "note", {"i": 0})
    any_store.append_to_stream("s", "note", {"i": 1})
    assert any_store.delete_stream_events("s") == 2
    assert any_store.read_stream("s") == []
    # The newest event of the log numbers the next: a tombstone without data holds it.
    log = any_store.events()
    assert [(e.seq, e.name, e.data, e.stream) for e in log] == [(2, DELETED_EVENT, None, None)]
    assert any_store.append_to_stream("s", "note", {"i": 2}).version == 1
    assert [e.seq for e in any_store.events()] == [2, 3]
    assert any_store.delete_stream_events("never-written") == 0
    assert any_store.delete_stream_events("s", []) == 0
    if isinstance(any_store, LmdbStore):
        any_store.check_valid()


@pytest.mark.parametrize("versions", [[0], [-1], ["1"], [1.0], "12"])
def test_bad_versions_are_refused(any_store: Store, versions: object) -> None:
    any_store.append_to_stream("s", "note", {})
    with pytest.raises(InvalidInputError):
        any_store.delete_stream_events("s", versions)  # type: ignore[arg-type]
    assert len(any_store.read_stream("s")) == 1

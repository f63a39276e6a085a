"""Projections: the decorator, the runner's fold, leases, fencing, partitions, rebuilds."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from ironflow import Event, projection
from ironflow._agent._memory import ProjectionDefinition, projections_in
from ironflow._worker._identity import this_worker
from ironflow._worker._projections import ProjectionRunner, ProjectionService
from ironflow.errors import (
    ConcurrencyError,
    DefinitionError,
    InvalidInputError,
    LeaseLostError,
    ProjectionNotFoundError,
)
from ironflow.server._views import projection_json
from ironflow.store import LmdbStore
from ironflow.store._records import ProjectionWrite
from tests.memory._helpers import RecordingStore, dead_worker


@projection(name="doc-memory", events=["doc.processed"], initial_state={})
def doc_memory(state: dict[str, Any], event: Event) -> dict[str, Any]:
    return {**state, event.data["docId"]: event.data}


@projection(
    name="per-doc",
    events=["doc.*"],
    initial_state=lambda: {"events": []},
    partition_by=lambda e: e.data["docId"],
)
def per_doc(state: dict[str, Any], event: Event) -> dict[str, Any]:
    return {"events": [*state["events"], event.name], "last": event.seq}


def defn(fn: Any) -> ProjectionDefinition:
    return ProjectionDefinition.must_from_fn(fn)


def runner(store: Any, fn: Any, **kw: Any) -> ProjectionRunner:
    store.register_projections([defn(fn).spec()])
    return ProjectionRunner(store, defn(fn), kw.pop("worker", None) or this_worker(), **kw)


# -- the decorator ---------------------------------------------------------------------


def test_decorator_keeps_the_function_and_attaches_a_definition() -> None:
    """@projection leaves a plain callable fold, with its definition found by from_fn."""
    event = Event(id="e", name="doc.processed", data={"docId": "d"}, ts=0.0)
    assert doc_memory({}, event) == {"d": {"docId": "d"}}
    d = defn(doc_memory)
    assert (d.name, d.events, d.partitioned, d.initial()) == (
        "doc-memory",
        ("doc.processed",),
        False,
        {},
    )
    assert defn(per_doc).initial() == {"events": []}
    assert defn(per_doc).initial() is not defn(per_doc).initial()
    assert [p.name for p in projections_in(globals())] == ["doc-memory", "per-doc"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "bad name", "events": ["x"]}, "is not usable"),
        ({"name": "p", "events": []}, "at least one event"),
        ({"name": "p", "events": ["a..b"]}, "empty part"),
        ({"name": "p", "events": ["x"], "initial_state": {1: 2}}, "dict keys must be str"),
        ({"name": "p", "events": ["x"], "partition_by": "docId"}, "partition_by must be"),
    ],
)
def test_decorator_rejects_bad_definitions(kwargs: dict[str, Any], message: str) -> None:
    """Bad names, events, initial states and partition_by fail at decoration, clearly."""
    with pytest.raises(DefinitionError, match=message):
        projection(**kwargs)(lambda state, event: state)


def test_decorator_rejects_async_and_one_argument_folds() -> None:
    """A fold is a plain def of (state, event)."""

    async def async_fold(state: Any, event: Any) -> Any:
        return state

    with pytest.raises(DefinitionError, match="is async"):
        projection(name="p", events=["x"])(async_fold)
    with pytest.raises(DefinitionError, match="two arguments"):
        projection(name="p", events=["x"])(lambda state: state)
    with pytest.raises(DefinitionError, match="not a projection"):
        ProjectionDefinition.must_from_fn(lambda s, e: s)


def test_two_projections_with_one_name_are_refused() -> None:
    """projections_in refuses two different functions claiming the same name."""
    other = projection(name="doc-memory", events=["x"])(lambda s, e: s)
    with pytest.raises(DefinitionError, match="share the name 'doc-memory'"):
        projections_in({"a": doc_memory, "b": other})


# -- folding -----------------------------------------------------------------------------


def test_runner_folds_matching_events_and_moves_past_the_rest(store: LmdbStore) -> None:
    """Only subscribed events change the state; the position still reaches the log's end."""
    r = runner(store, doc_memory)
    assert store.get_projection("doc-memory").state == {}
    store.emit("doc.received", {"docId": "d1"})
    store.append_to_stream("m", "doc.processed", {"docId": "d1", "status": "published"})
    store.emit("unrelated", {})
    r.catch_up()
    state = store.get_projection("doc-memory")
    assert state.state == {"d1": {"docId": "d1", "status": "published"}}
    assert state.position == 3
    assert r.step() == 0 and r.idle
    assert projection_json(state)["state"]["state"] == state.state
    assert projection_json(state)["state"]["position"] == 3


def test_partitioned_writes_touch_only_their_keys(store: LmdbStore) -> None:
    """A batch writes the partitions its events touch and no other."""
    recording = RecordingStore(store)
    r = runner(recording, per_doc)
    for doc in ("a", "b", "c"):
        store.emit("doc.received", {"docId": doc})
    r.catch_up()
    assert set(recording.commits[-1].write.partitions) == {"a", "b", "c"}
    store.emit("doc.published", {"docId": "b"})
    store.emit("other", {"docId": "c"})
    r.catch_up()
    assert set(recording.commits[-1].write.partitions) == {"b"}
    whole = store.get_projection("per-doc")
    assert whole.partitioned
    assert whole.state == {
        "a": {"events": ["doc.received"], "last": 1},
        "b": {"events": ["doc.received", "doc.published"], "last": 4},
        "c": {"events": ["doc.received"], "last": 3},
    }
    assert store.get_projection("per-doc", partitions=["b", "zz"]).state == {"b": whole.state["b"]}


def test_rebuild_equals_incremental(store: LmdbStore) -> None:
    """Rebuilding from the log replaces the state with exactly what incremental folding built."""
    for fn in (doc_memory, per_doc):
        r = runner(store, fn, batch_size=3)
        for i in range(10):
            store.append_to_stream("m", "doc.processed", {"docId": f"d{i % 4}", "i": i})
            if i % 3 == 0:
                r.step()
        r.catch_up()
        incremental = store.get_projection(defn(fn).name)
        ticket = store.request_projection_rebuild(defn(fn).name)
        assert store.projection_status(defn(fn).name).rebuild_pending
        r.catch_up()
        status = store.projection_status(defn(fn).name)
        assert status.rebuilt == ticket and not status.rebuild_pending
        rebuilt = store.get_projection(defn(fn).name)
        assert (rebuilt.state, rebuilt.position) == (incremental.state, incremental.position)


def test_rebuild_drops_partitions_no_longer_produced(store: LmdbStore) -> None:
    """A rebuild replaces the whole state: a stored partition the log does not produce goes."""
    r = runner(store, per_doc)
    store.emit("doc.received", {"docId": "a"})
    r.catch_up()
    assert r.ensure_lease()
    stray = ProjectionWrite("per-doc", 1, 1, {"stray": {"events": []}})
    store.write_projection(r.worker, stray)
    assert set(store.get_projection("per-doc").state) == {"a", "stray"}
    r.rebuild_now()
    assert set(store.get_projection("per-doc").state) == {"a"}


# -- one transaction, fenced ------------------------------------------------------------


def test_writes_are_fenced_by_lease_and_position(store: LmdbStore) -> None:
    """A write from a non-holder, or from a stale position, raises and changes nothing."""
    r = runner(store, doc_memory)
    store.append_to_stream("m", "doc.processed", {"docId": "d1"})
    r.catch_up()
    before = (store.get_projection("doc-memory"), store.projection_status("doc-memory"))
    intruder = this_worker()
    with pytest.raises(LeaseLostError, match="does not hold projection 'doc-memory'"):
        store.write_projection(intruder, ProjectionWrite("doc-memory", 1, 1, {"": {"x": 1}}))
    with pytest.raises(ConcurrencyError, match="at position 1, not 0"):
        store.write_projection(r.worker, ProjectionWrite("doc-memory", 0, 1, {"": {"x": 1}}))
    # A write that fails validation part-way writes none of its partitions.
    bad = ProjectionWrite("doc-memory", 1, 1, {"": {"x": 1}, "a\x00b": {}})
    with pytest.raises(InvalidInputError):
        store.write_projection(r.worker, bad)
    with pytest.raises(InvalidInputError):
        store.write_projection(r.worker, ProjectionWrite("doc-memory", 1, 0, {}))
    assert (store.get_projection("doc-memory"), store.projection_status("doc-memory")) == before


def test_lease_is_exclusive_and_taken_over_from_the_dead(store: LmdbStore) -> None:
    """One live holder at a time; a dead holder's lease is free at once, an expired one too."""
    store.register_projections([defn(doc_memory).spec()])
    alive_a, alive_b = this_worker(), this_worker()
    assert store.lease_projection(alive_a, "doc-memory", ttl=60)
    assert not store.lease_projection(alive_b, "doc-memory", ttl=60)
    assert store.lease_projection(alive_a, "doc-memory", ttl=60)  # renewal
    store.release_projection(alive_a, "doc-memory")
    dead = dead_worker()
    assert store.lease_projection(dead, "doc-memory", ttl=60)
    assert store.lease_projection(alive_b, "doc-memory", ttl=0.0)
    assert store.projection_status("doc-memory").runner == alive_b
    assert store.lease_projection(alive_a, "doc-memory", ttl=60)  # b's lease had expired
    with pytest.raises(ProjectionNotFoundError):
        store.lease_projection(alive_a, "nope", ttl=1)


def test_unknown_projection_names_the_known_ones(store: LmdbStore) -> None:
    """Reading a projection nobody registered says which ones exist and how to register."""
    store.register_projections([defn(doc_memory).spec()])
    with pytest.raises(ProjectionNotFoundError) as info:
        store.get_projection("doc-memroy")
    assert "known projections: doc-memory" in str(info.value)
    assert "@projection(name='doc-memroy'" in str(info.value)


def test_changed_definition_requests_a_rebuild(store: LmdbStore) -> None:
    """Registering a projection again keeps its state, unless its events or shape changed."""
    r = runner(store, doc_memory)
    store.append_to_stream("m", "doc.processed", {"docId": "d1"})
    r.catch_up()
    store.register_projections([defn(doc_memory).spec()])
    status = store.projection_status("doc-memory")
    assert status.position == 1 and not status.rebuild_pending
    changed = projection(name="doc-memory", events=["doc.processed", "doc.deleted"])(lambda s, e: s)
    store.register_projections([defn(changed).spec()])
    assert store.projection_status("doc-memory").rebuild_pending


def test_wait_for_projection(store: LmdbStore) -> None:
    """wait_for_projection returns once the position is reached, or the position after a timeout."""
    r = runner(store, doc_memory)
    store.append_to_stream("m", "doc.processed", {"docId": "d1"})
    assert store.wait_for_projection("doc-memory", 1, timeout=0.05) == 0
    assert store.wait_for_projection("not-registered", 1, timeout=0.01) == 0
    # The timer's catch_up goes on reading after it commits position 1, so the test
    # joins it: otherwise the fixture may close the store under it.
    timer = threading.Timer(0.05, r.catch_up)
    timer.start()
    try:
        assert store.wait_for_projection("doc-memory", 1, timeout=30) == 1
    finally:
        timer.join()


def test_service_retries_a_failing_fold_without_skipping(store: LmdbStore) -> None:
    """A fold that raises leaves the projection at that event; a later retry applies it once."""
    attempts: list[int] = []

    @projection(name="flaky", events=["x"], initial_state=0)
    def flaky(state: int, event: Event) -> int:
        attempts.append(event.seq)
        if len(attempts) == 1:
            raise RuntimeError("transient")
        return state + event.data["n"]

    store.register_projections([defn(flaky).spec()])
    service = ProjectionService(store, [defn(flaky)], this_worker(), poll_interval=0.01)
    store.emit("x", {"n": 5})
    store.emit("x", {"n": 7})
    service.start()
    try:
        assert store.wait_for_projection("flaky", 2, timeout=30) == 2
    finally:
        service.stop()
    assert store.get_projection("flaky").state == 12
    assert attempts == [1, 1, 2]
    assert store.projection_status("flaky").runner is None  # released on stop


def test_one_fold_can_serve_two_projections() -> None:
    """One function decorated twice gives two projections; the second does not replace the first."""

    def count(state: int, event: Event) -> int:
        return state + 1

    first = projection(name="count-a", events=["a"], initial_state=0)(count)
    second = projection(name="count-b", events=["b"], initial_state=0)(count)
    assert defn(first).name == "count-a" and defn(second).name == "count-b"
    assert second(1, Event(id="e", name="b", data=None, ts=0.0)) == 2
    assert [p.name for p in projections_in({"f": first, "s": second})] == ["count-a", "count-b"]


def test_a_runner_kept_out_does_not_ask_for_the_lease_every_round(store: LmdbStore) -> None:
    """While a live worker serves the projection, another runner asks again only after a pause."""
    runner(store, doc_memory).step()
    asked: list[str] = []

    class Counting:
        def lease_projection(self, worker: Any, name: str, *, ttl: float) -> bool:
            asked.append(name)
            return store.lease_projection(worker, name, ttl=ttl)

        def __getattr__(self, name: str) -> Any:
            return getattr(store, name)

    waiting = ProjectionRunner(Counting(), defn(doc_memory), this_worker())  # type: ignore[arg-type]
    assert [waiting.step() for _ in range(5)] == [0] * 5
    assert waiting.idle and not waiting.held
    assert asked == ["doc-memory"]

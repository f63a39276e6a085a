"""The dashboard's read queries: keyset pages of runs and events, filters, search."""

from __future__ import annotations

from ironflow.server._dashboard import user_frame
from ironflow.store import AgentSpec, LmdbStore
from ironflow.store._browse import event_page, run_page, value_matches


def _fill(store: LmdbStore, n: int) -> list[str]:
    store.register_agents([AgentSpec("a", ("e",)), AgentSpec("b", ("f",))])
    ids = []
    for i in range(n):
        result = store.emit("e" if i % 2 else "f", {"doc": f"doc-{i}", "n": i, "tags": ["x"]})
        ids.extend(result.run_ids)
    return ids


def test_pages_walk_every_run_once_newest_first(store: LmdbStore) -> None:
    """Following next_before from the first page visits each run once, newest first."""
    ids = _fill(store, 23)
    seen: list[str] = []
    before = None
    while True:
        page = run_page(store, limit=5, before=before)
        seen.extend(r.id for r in page.runs)
        assert page.total == 23
        if page.next_before is None:
            break
        before = page.next_before
    assert seen == list(reversed(ids))


def test_filters_by_agent_and_status(store: LmdbStore) -> None:
    """Only runs of the agent and status asked for; a status none has gives nothing."""
    _fill(store, 10)
    page = run_page(store, limit=50, agent="a")
    assert len(page.runs) == 5 and {r.agent for r in page.runs} == {"a"}
    assert len(run_page(store, limit=50, status="pending").runs) == 10
    empty = run_page(store, limit=50, status="failed")
    assert empty.runs == () and empty.exhausted and empty.next_before is None


def test_search_by_run_id_and_by_a_value_in_the_event_data(store: LmdbStore) -> None:
    """A run id finds that run; a value finds runs whose event data holds it, not a key."""
    ids = _fill(store, 12)
    assert [r.id for r in run_page(store, query=ids[3]).runs] == [ids[3]]
    found = run_page(store, query="DOC-11").runs  # case-insensitive
    assert [r.event.data["n"] for r in found] == [11]
    assert run_page(store, query="doc").runs  # a substring of a value
    assert run_page(store, query="tags").runs == ()  # a key is not a value
    assert [r.event.data["n"] for r in run_page(store, query="7").runs] == [7]


def test_a_scan_stops_at_its_limit_and_the_next_page_goes_on(store: LmdbStore) -> None:
    """With a scan limit, a rare match further back is reached page by page."""
    ids = _fill(store, 30)
    first = run_page(store, query="doc-0", scan_limit=10)
    assert first.runs == () and not first.exhausted and first.scanned == 10
    before = first.next_before
    found = []
    while before is not None and not found:
        page = run_page(store, query="doc-0", scan_limit=10, before=before)
        found = [r.id for r in page.runs]
        before = page.next_before
    assert found == [ids[0]]


def test_value_matches_numbers_booleans_and_nested_values() -> None:
    """Numbers and booleans match as their JSON text, at any depth."""
    data = {"a": {"b": [1, {"c": True}]}, "d": None}
    assert value_matches(data, "true") and value_matches(data, "1")
    assert not value_matches(data, "null") and not value_matches(data, "a")


def test_events_newest_first_with_the_runs_they_started(store: LmdbStore) -> None:
    """Each logged event carries its runs; an event no agent takes carries none."""
    store.register_agents([AgentSpec("a", ("e",))])
    started = store.emit("e", {"i": 1}).run_ids
    store.emit("nobody", {"i": 2})
    page = event_page(store, limit=1)
    assert [(e.event.name, e.run_ids) for e in page.events] == [("nobody", ())]
    older = event_page(store, limit=1, before=page.next_before)
    assert [(e.event.name, e.run_ids) for e in older.events] == [("e", started)]
    assert older.next_before is None and page.last_seq == 2


def test_user_frame_is_the_innermost_frame_outside_libraries() -> None:
    """The user's own frame is picked, not Ironflow's or the standard library's."""
    import json

    import ironflow

    lib = ironflow.__file__
    stdlib = json.__file__
    tb = (
        "Traceback (most recent call last):\n"
        f'  File "{lib}", line 10, in run\n    handler(ctx)\n'
        '  File "/home/me/app/agent.py", line 42, in ship\n    raise RuntimeError("no")\n'
        f'  File "{stdlib}", line 5, in dumps\n    return x\n'
        "RuntimeError: no\n"
    )
    assert user_frame(tb) == {
        "file": "/home/me/app/agent.py",
        "line": 42,
        "function": "ship",
        "code": 'raise RuntimeError("no")',
    }
    assert user_frame(None) is None

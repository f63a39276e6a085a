"""IronflowSaver beyond the conformance suite: values, allowlist, visibility, prune, graphs."""

from __future__ import annotations

import asyncio
import dataclasses
import operator
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, TypedDict

import pytest

pytest.importorskip("langgraph.checkpoint.base")

from langchain_core.messages import AIMessage, HumanMessage
from langgraph.checkpoint.conformance.test_utils import (
    generate_checkpoint,
    generate_config,
    generate_metadata,
)
from langgraph.graph import END, START, StateGraph

from ironflow import Client
from ironflow.contrib.langgraph import IronflowSaver, _turns
from ironflow.errors import InvalidInputError, NotSerializableError
from ironflow.store import LmdbStore


@dataclasses.dataclass
class Note:
    text: str


@pytest.fixture
def store(tmp_path: Path) -> Iterator[LmdbStore]:
    with LmdbStore(tmp_path / "data", sync=False) as s:
        yield s


def _put(saver: IronflowSaver, thread: str, values: dict[str, Any], parent: Any = None) -> Any:
    config = generate_config(thread)
    if parent is not None:
        config["configurable"]["checkpoint_id"] = parent["configurable"]["checkpoint_id"]
    versions = {k: saver.get_next_version(None, None) for k in values}
    cp = generate_checkpoint(channel_values=values, channel_versions=versions)
    return saver.put(config, cp, generate_metadata(), versions)


def test_an_unstorable_value_fails_naming_its_channel_and_writes_nothing(store: LmdbStore) -> None:
    saver = IronflowSaver(store)
    with pytest.raises(NotSerializableError, match=r"channel 'bad'.*without pickle"):
        _put(saver, "t", {"ok": 1, "bad": object()})
    assert store.read_stream("langgraph/thread/t") == []
    stored = _put(saver, "t", {"ok": 1})
    with pytest.raises(NotSerializableError, match="channel 'w'"):
        saver.put_writes(stored, [("w", lambda: None)], "task-1")
    assert len(store.read_stream("langgraph/thread/t")) == 1


def test_a_type_outside_the_allowlist_is_refused_at_write_and_allowed_by_name(
    store: LmdbStore,
) -> None:
    """A dataclass would not be rebuilt on read: refused when written, with the fix named."""
    strict = IronflowSaver(store)
    with pytest.raises(NotSerializableError) as info:
        _put(strict, "t", {"note": Note("hi")})
    assert f"allowed_modules=[({__name__!r}, 'Note')]" in str(info.value)
    allowing = IronflowSaver(store, allowed_modules=[Note])
    stored = _put(allowing, "t", {"note": Note("hi"), "msgs": [HumanMessage("a"), AIMessage("b")]})
    values = allowing.get_tuple(stored).checkpoint["channel_values"]  # type: ignore[union-attr]
    assert values["note"] == Note("hi")
    assert [m.content for m in values["msgs"]] == ["a", "b"]
    assert type(values["msgs"][1]) is AIMessage


def test_checkpoints_are_ironflow_events_json_where_possible(store: LmdbStore) -> None:
    saver = IronflowSaver(store)
    first = _put(saver, "order-42", {"count": 1, "items": ["a"]})
    saver.put_writes(first, [("count", 2)], "task-1", "path")
    events = store.read_stream("langgraph/thread/order-42")
    assert [e.name for e in events] == ["langgraph.checkpoint", "langgraph.writes"]
    assert events[0].data["blobs"][0][2] == {"json": 1}
    assert events[1].data["writes"] == [[0, "count", {"json": 2}]]
    assert [e.data for e in store.read_stream("langgraph/threads")] == [{"thread": "order-42"}]
    # A repeated call (a retry after a lost reply) appends nothing new.
    saver.put_writes(first, [("count", 2)], "task-1", "path")
    assert len(store.read_stream("langgraph/thread/order-42")) == 2


def test_prune_keeps_values_the_latest_reads_from_deleted_checkpoints(store: LmdbStore) -> None:
    """The latest checkpoint reads channel b from the first one's event: it must survive."""
    saver = IronflowSaver(store)
    thread = "t"
    config = generate_config(thread)
    cp1 = generate_checkpoint(
        channel_values={"a": 1, "b": "kept"}, channel_versions={"a": 1, "b": 1}
    )
    s1 = saver.put(config, cp1, generate_metadata(step=0), {"a": 1, "b": 1})
    config2 = generate_config(thread)
    config2["configurable"]["checkpoint_id"] = s1["configurable"]["checkpoint_id"]
    cp2 = generate_checkpoint(
        channel_values={"a": 2, "b": "kept"}, channel_versions={"a": 2, "b": 1}
    )
    s2 = saver.put(config2, cp2, generate_metadata(step=1), {"a": 2})
    saver.prune([thread])
    assert [t.config for t in saver.list(generate_config(thread))] == [s2]
    assert saver.get_tuple(s2).checkpoint["channel_values"] == {"a": 2, "b": "kept"}  # type: ignore[union-attr]
    names = [e.name for e in store.read_stream("langgraph/thread/t")]
    assert names == ["langgraph.checkpoint", "langgraph.blobs"]
    # A second saver, with nothing cached, reads the same.
    assert IronflowSaver(store).get_tuple(s2).checkpoint["channel_values"]["b"] == "kept"  # type: ignore[union-attr]
    store.check_valid()


def test_a_delete_by_another_saver_is_seen_by_one_that_cached_the_thread(store: LmdbStore) -> None:
    one, two = IronflowSaver(store), IronflowSaver(store)
    stored = _put(one, "t", {"a": 1})
    assert one.get_tuple(stored) is not None
    two.delete_thread("t")
    assert one.get_tuple(generate_config("t")) is None
    again = _put(two, "t", {"a": 5})
    assert one.get_tuple(generate_config("t")).checkpoint["channel_values"] == {"a": 5}  # type: ignore[union-attr]
    assert again["configurable"]["thread_id"] == "t"


def test_opens_the_store_the_cli_would_or_takes_a_client(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("IRONFLOW_URL", raising=False)
    monkeypatch.setenv("IRONFLOW_DATA_DIR", str(tmp_path / "env-dir"))
    with IronflowSaver() as saver:
        _put(saver, "t", {"a": 1})
    with Client(data_dir=tmp_path / "env-dir") as client:
        assert len(client.streams.read("langgraph/thread/t")) == 1
        assert IronflowSaver(client).get_tuple(generate_config("t")) is not None
    with pytest.raises(InvalidInputError, match="Store or Client"):
        IronflowSaver("not a store")
    with pytest.raises(InvalidInputError, match="prune strategy"):
        IronflowSaver(Client(data_dir=tmp_path / "x")).prune(["t"], strategy="some")


class State(TypedDict):
    steps: Annotated[list[str], operator.add]


def _graph(saver: IronflowSaver) -> Any:
    builder = StateGraph(State)
    builder.add_node("one", lambda s: {"steps": ["one"]})
    builder.add_node("two", lambda s: {"steps": ["two"]})
    builder.add_edge(START, "one")
    builder.add_edge("one", "two")
    builder.add_edge("two", END)
    return builder.compile(checkpointer=saver)


def test_a_graph_checkpoints_and_continues_a_thread_sync_and_async(store: LmdbStore) -> None:
    saver = IronflowSaver(store)
    graph = _graph(saver)
    config = {"configurable": {"thread_id": "conv-1"}}
    assert graph.invoke({"steps": ["start"]}, config) == {"steps": ["start", "one", "two"]}
    again = asyncio.run(graph.ainvoke({"steps": ["more"]}, config))
    assert again == {"steps": ["start", "one", "two", "more", "one", "two"]}
    history = list(graph.get_state_history(config))
    assert len(history) == 8
    assert IronflowSaver(store).get_tuple(config).checkpoint["channel_values"]["steps"][-1] == "two"  # type: ignore[union-attr]


def test_a_graph_on_postgresql_never_races_itself_into_a_retry(pg_url: str) -> None:
    # LangGraph saves a task's writes on its executor while the next checkpoint is put:
    # two appends to one stream at once, which on PostgreSQL failed serialization and
    # ran again after a backoff (more than once per append, 12x slower per node).
    from ironflow.store._postgres import PostgresStore, migrate

    migrate(pg_url)
    with PostgresStore(pg_url) as store:
        backend = store.backend
        attempts: list[str] = []
        attempt = backend._attempt

        def counted(*args: Any) -> Any:
            try:
                return attempt(*args)
            except Exception as exc:
                attempts.append(type(exc).__name__)
                raise

        backend._attempt = counted  # type: ignore[method-assign]
        graph = _loop(IronflowSaver(store))
        final = graph.invoke({"n": 0}, {"configurable": {"thread_id": "t"}}, durability="sync")
        assert final["n"] == 30
        assert attempts == []


class _Count(TypedDict):
    n: int


def _loop(saver: IronflowSaver) -> Any:
    """Two nodes taking turns until ``n`` reaches 30: a put_writes beside each put."""
    builder = StateGraph(_Count)
    builder.add_node("agent", lambda s: {"n": s["n"] + 1})
    builder.add_node("tools", lambda s: {"n": s["n"] + 1})
    builder.add_edge(START, "agent")
    builder.add_conditional_edges("agent", lambda s: END if s["n"] >= 30 else "tools")
    builder.add_conditional_edges("tools", lambda s: END if s["n"] >= 30 else "agent")
    return builder.compile(checkpointer=saver)


def test_a_node_s_writes_share_the_commit_of_the_checkpoint_after_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Durable node by node, one commit each: its task's writes wait for the checkpoint
    LangGraph puts after them and both are appended in one transaction (two commits a
    node before). The wait is bounded by a long time here, so the count does not depend
    on how quickly the loaded host runs LangGraph's executor (writes whose checkpoint
    was put first do not wait at all)."""
    monkeypatch.setattr(_turns, "GATHER_S", 30.0)
    with LmdbStore(tmp_path / "data", sync=False) as store:
        saver = IronflowSaver(store)
        graph = _loop(saver)
        config = {"configurable": {"thread_id": "t"}}
        graph.invoke({"n": 28}, config, durability="sync")  # and the thread is listed
        before = len(store.read_stream("langgraph/thread/t"))
        commits: list[int] = []
        store.commit_observer = lambda seconds, n: commits.append(n)
        final = graph.invoke({"n": 0}, config, durability="sync")
        assert final["n"] == 30
        # A checkpoint for the new input, then the input's writes and 30 nodes', each
        # followed by its checkpoint.
        names = [e.name for e in store.read_stream("langgraph/thread/t")[before:]]
        assert names == ["langgraph.checkpoint"] + ["langgraph.writes", "langgraph.checkpoint"] * 31
        # One commit a node, 1 + 2 * 31 before. Not exactly 32: LangGraph's executor may
        # start a node's put before its writes, and those writes then go alone.
        assert 1 + 31 <= len(commits) <= 1 + 31 + 10
        fresh = IronflowSaver(store).get_tuple(config)
        assert fresh is not None and fresh.checkpoint["channel_values"]["n"] == 30
        assert [t.checkpoint["id"] for t in IronflowSaver(store).list(config)] == [
            t.checkpoint["id"] for t in saver.list(config)
        ]
        store.check_valid()


def test_appends_from_many_threads_to_one_thread_each_land_once(store: LmdbStore) -> None:
    saver = IronflowSaver(store)
    base = _put(saver, "t", {"a": 1})
    start = threading.Barrier(8)

    def work(i: int) -> None:
        start.wait(30)
        for j in range(5):
            saver.put_writes(base, [("a", i * 10 + j)], f"task-{i}-{j}")
            _put(saver, "t", {"a": i * 10 + j}, parent=base)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    events = store.read_stream("langgraph/thread/t")
    assert len(events) == 1 + 8 * 5 * 2
    assert [e.version for e in events] == list(range(1, len(events) + 1))
    for reader in (saver, IronflowSaver(store)):
        tup = reader.get_tuple(base)
        assert tup is not None
        assert sorted(v for _, _, v in tup.pending_writes) == sorted(
            i * 10 + j for i in range(8) for j in range(5)
        )
        assert len(list(reader.list(generate_config("t")))) == 1 + 40

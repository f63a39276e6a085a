"""`ironflow projection ...`, ironflow.Client, and the doc_processor example's memory."""

from __future__ import annotations

import json
import types
from pathlib import Path
from typing import Any

import pytest

import examples.doc_processor.tools as doc_tools
from examples.doc_processor.agent import doc_processor
from examples.doc_processor.memory import doc_memory
from examples.doc_processor.worker import doc_memory as exported_memory
from ironflow import Client, Worker
from ironflow._agent._memory import ProjectionDefinition
from ironflow._cli._main import main
from ironflow._worker._identity import this_worker
from ironflow._worker._projections import ProjectionRunner, ProjectionService
from ironflow.errors import ConfigError, ProjectionNotFoundError
from ironflow.store import LmdbStore

NAME = "doc-processor-memory"


class Borrowed:
    """The test's store, handed to the CLI so one process never opens the directory twice."""

    def __init__(self, inner: LmdbStore) -> None:
        self.inner = inner

    def close(self) -> None:
        pass

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.fixture
def cli_store(store: LmdbStore, monkeypatch: pytest.MonkeyPatch) -> LmdbStore:
    monkeypatch.setattr("ironflow._cli._common.store_for", lambda args, create: Borrowed(store))
    return store


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def processed(store: LmdbStore, *docs: str) -> None:
    for doc in docs:
        store.append_to_stream(
            "agent-memory",
            "doc.processed",
            {"docId": doc, "status": "published", "category": "other"},
        )


def served(store: LmdbStore) -> ProjectionRunner:
    defn = ProjectionDefinition.must_from_fn(doc_memory)
    store.register_projections([defn.spec()])
    return ProjectionRunner(store, defn, this_worker())


def test_example_agent_fills_the_seed_projection(
    store: LmdbStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The doc_processor example ends with the seed's projection state for doc-2."""
    monkeypatch.setattr(doc_tools, "time", types.SimpleNamespace(sleep=lambda _s: None))
    assert exported_memory is doc_memory
    worker = Worker([doc_processor], projections=[exported_memory], store=store)
    emitted = store.emit(
        "doc.received", {"docId": "doc-2", "imageUrl": "https://example.com/receipt.png"}
    )
    worker.run(until_idle=True, ready_message=False)
    run = store.get_run(emitted.run_ids[0])
    assert run.status == "completed", run.error
    assert [s.id for s in store.get_steps(run.id)] == [
        "tool.ocr",
        "tool.classify",
        "tool.publish",
        "memory.append",
        "memory.append.wait",
    ]
    assert Client(store=store).projections.get(NAME) == {
        "doc-2": {"docId": "doc-2", "status": "published", "category": "other"}
    }


def test_projection_get_prints_state_and_the_http_envelope(
    cli_store: LmdbStore, capsys: pytest.CaptureFixture[str]
) -> None:
    """`projection get` shows the state; --json is the HTTP shape, read with .state.state."""
    runner = served(cli_store)
    runner.catch_up()
    code, out, _ = run_cli(capsys, "projection", "get", NAME)
    assert code == 0
    assert out.splitlines()[0] == f"projection {NAME} (position 0, updated never)"
    assert json.loads("\n".join(out.splitlines()[1:])) == {}
    processed(cli_store, "doc-1", "doc-2")
    runner.catch_up()
    code, out, _ = run_cli(capsys, "projection", "get", NAME, "--json")
    envelope = json.loads(out)
    assert envelope["name"] == NAME
    assert envelope["state"]["position"] == 2
    assert envelope["state"]["updated_at"].endswith("Z")
    assert envelope["state"]["state"]["doc-2"] == {
        "docId": "doc-2",
        "status": "published",
        "category": "other",
    }


def test_projection_list(cli_store: LmdbStore, capsys: pytest.CaptureFixture[str]) -> None:
    """`projection list` shows each projection's position and live runner."""
    code, out, _ = run_cli(capsys, "projection", "list")
    assert (code, out.strip()) == (
        0,
        "no projections yet; a worker registers the ones its module defines",
    )
    runner = served(cli_store)
    processed(cli_store, "doc-1")
    runner.catch_up()
    code, out, _ = run_cli(capsys, "projection", "list", "--json")
    [obj] = json.loads(out)
    assert (obj["name"], obj["position"], obj["runner"]) == (NAME, 1, runner.worker.id)
    code, out, _ = run_cli(capsys, "projection", "list")
    assert out.splitlines()[1].split()[:2] == [NAME, "1"]


def test_unknown_projection_is_a_one_line_error(
    cli_store: LmdbStore, capsys: pytest.CaptureFixture[str]
) -> None:
    """A projection name nobody registered exits 2 with the fix, not a traceback."""
    code, _, err = run_cli(capsys, "projection", "get", "nope")
    assert code == 2
    assert err.startswith("error: no projection named 'nope'")
    code, _, err = run_cli(capsys, "projection", "rebuild", "nope")
    assert code == 2


def test_rebuild_here_with_module_equals_incremental(
    cli_store: LmdbStore, capsys: pytest.CaptureFixture[str]
) -> None:
    """With no worker serving it, `rebuild --module` folds the log here; the state is unchanged."""
    runner = served(cli_store)
    processed(cli_store, "doc-1", "doc-2", "doc-1")
    runner.catch_up()
    runner.release()
    before = cli_store.get_projection(NAME)
    code, out, _ = run_cli(
        capsys, "projection", "rebuild", NAME, "--module", "examples.doc_processor.worker"
    )
    assert code == 0, out
    assert out.strip() == f"projection {NAME} rebuilt here from the log: position 3"
    after = cli_store.get_projection(NAME)
    assert (after.state, after.position) == (before.state, before.position)
    assert after.updated_at != before.updated_at
    code, _, err = run_cli(
        capsys, "projection", "rebuild", NAME, "--module", "examples.doc_processor.tools"
    )
    assert code == 2 and "defines no @projection named" in err


def test_rebuild_without_a_worker_is_requested_for_later(
    cli_store: LmdbStore, capsys: pytest.CaptureFixture[str]
) -> None:
    """With no worker and no --module, the rebuild waits for the next worker to serve it."""
    served(cli_store)
    code, out, _ = run_cli(capsys, "projection", "rebuild", NAME)
    assert code == 0 and "requested" in out
    assert cli_store.projection_status(NAME).rebuild_pending
    served(cli_store).catch_up()
    assert not cli_store.projection_status(NAME).rebuild_pending


def test_rebuild_through_a_live_worker(
    cli_store: LmdbStore, capsys: pytest.CaptureFixture[str]
) -> None:
    """With a worker serving the projection, `rebuild` asks it and waits until it is done."""
    processed(cli_store, "doc-1")
    defn = ProjectionDefinition.must_from_fn(doc_memory)
    cli_store.register_projections([defn.spec()])
    service = ProjectionService(cli_store, [defn], this_worker(), poll_interval=0.01)
    service.start()
    try:
        assert cli_store.wait_for_projection(NAME, 1, timeout=30) == 1
        code, out, _ = run_cli(capsys, "projection", "rebuild", NAME, "--timeout", "30")
    finally:
        service.stop()
    assert code == 0
    assert out.splitlines()[-1] == f"projection {NAME} rebuilt: position 1"
    status = cli_store.projection_status(NAME)
    assert status.rebuilt == status.rebuild_requested == 1


def test_client_over_a_store(store: LmdbStore) -> None:
    """Client's projections, streams, events and runs are the store's, unwrapped where useful."""
    client = Client(store=store)
    runner = served(store)
    event = client.streams.append("agent-memory", "doc.processed", {"docId": "d1"})
    assert (event.version, event.seq) == (1, 1)
    with pytest.raises(Exception, match="not the expected 0"):
        client.streams.append("agent-memory", "doc.processed", {}, expected_version=0)
    assert [e.data for e in client.streams.read("agent-memory")] == [{"docId": "d1"}]
    runner.catch_up()
    assert client.projections.get(NAME) == {"d1": {"docId": "d1"}}
    assert client.projections.state(NAME).position == 1
    assert [s.name for s in client.projections.list()] == [NAME]
    assert client.projections.rebuild(NAME, wait=False).rebuild_pending
    result = client.events.emit("something.else", {"x": 1})
    assert [e.name for e in client.events.list(after_seq=1)] == ["something.else"]
    assert result.run_ids == () and client.runs.list() == []
    with pytest.raises(ProjectionNotFoundError):
        client.projections.get("nope")
    client.close()  # a borrowed store stays open
    assert store.projection_status(NAME).position == 1


def test_client_opens_and_closes_a_data_directory(tmp_path: Path) -> None:
    """Client(data_dir=...) opens the directory and closes it; two sources are refused."""
    with Client(data_dir=tmp_path / "d") as client:
        client.events.emit("x")
        assert len(client.events.list()) == 1
    with pytest.raises(ConfigError, match="one of url=, data_dir= or store="):
        Client(url="http://127.0.0.1:9", data_dir=tmp_path / "d")

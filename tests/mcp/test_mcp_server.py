"""``ironflow mcp`` through the official SDK's own client, over stdio and streamable HTTP.

Tools are listed with their schemas, every read tool is called, a write is refused
without --allow-writes and accepted with it, and HTTP without the token gets 401.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

pytest.importorskip("mcp")

import httpx2
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from ironflow.server._mcp import READ_TOOLS, WRITE_TOOLS
from ironflow.store import AgentSpec, LmdbStore
from ironflow.store._records import ProjectionSpec
from tests.server.conftest import Child, child_env

pytestmark = pytest.mark.process


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A store with an agent, two runs (one with steps), a stream and a projection."""
    path = tmp_path / "data"
    with LmdbStore(path) as store:
        store.register_agents([AgentSpec(id="doc-processor", triggers=("doc.received",))])
        spec = ProjectionSpec(name="memory", events=("doc.done",), initial_state={"docs": 0})
        store.register_projections([spec])
        store.emit("doc.received", {"docId": "doc-1", "big": "x" * 200})
        store.emit("doc.received", {"docId": "doc-2"})
        store.append_to_stream("agent-memory", "doc.done", {"docId": "doc-1"})
    return path


def _env(data_dir: Path) -> dict[str, str]:
    return child_env(IRONFLOW_DATA_DIR=str(data_dir))


def _payload(result: Any) -> Any:
    assert not result.is_error, result.content
    return json.loads(result.content[0].text)


async def _exercise(client: Client, *, writes: bool) -> None:
    tools = {t.name: t for t in (await client.list_tools()).tools}
    expected = set(READ_TOOLS) | (set(WRITE_TOOLS) if writes else set())
    assert set(tools) == expected
    for name in READ_TOOLS:
        assert tools[name].description and tools[name].input_schema["type"] == "object"
        assert tools[name].annotations.read_only_hint is True
    assert tools["list_runs"].input_schema["properties"]["limit"]["maximum"] == 200

    runs = _payload(await client.call_tool("list_runs", {"limit": 1}))
    assert len(runs["runs"]) == 1 and runs["next_cursor"] == "1"
    rest = _payload(await client.call_tool("list_runs", {"limit": 1, "cursor": "1"}))
    assert rest["next_cursor"] is None
    run_id = rest["runs"][0]["id"]
    assert rest["runs"][0]["event"]["data"]["docId"] == "doc-1"
    run = _payload(await client.call_tool("get_run", {"run_id": run_id}))
    assert run["run"]["id"] == run_id and run["steps"] == []
    missing = await client.call_tool("get_step", {"run_id": run_id, "step": "tool.ocr"})
    assert missing.is_error and "has no step 'tool.ocr'" in missing.content[0].text
    agents = _payload(await client.call_tool("list_agents", {}))
    assert agents["agents"] == [
        {"id": "doc-processor", "description": "", "triggers": ["doc.received"]}
    ]
    events = _payload(await client.call_tool("list_events", {"pattern": "doc.*", "limit": 2}))
    assert [e["name"] for e in events["events"]] == ["doc.received", "doc.received"]
    later = _payload(
        await client.call_tool("list_events", {"cursor": events["next_cursor"], "limit": 5})
    )
    assert [e["name"] for e in later["events"]] == ["doc.done"]
    state = _payload(await client.call_tool("get_projection", {"name": "memory"}))
    assert state["value"]["state"]["state"] == {"docs": 0}
    stream = _payload(await client.call_tool("read_stream", {"stream_id": "agent-memory"}))
    assert [e["data"] for e in stream["events"]] == [{"docId": "doc-1"}]
    found = _payload(await client.call_tool("search_runs", {"match": {"docId": "doc-2"}}))
    assert [r["event"]["data"]["docId"] for r in found["runs"]] == ["doc-2"]
    bad = await client.call_tool("list_runs", {"limit": 1000})
    assert bad.is_error

    if writes:
        emitted = _payload(
            await client.call_tool("emit_event", {"name": "doc.received", "data": {"docId": "3"}})
        )
        assert len(emitted["run_ids"]) == 1
        run = emitted["run_ids"][0]
        cancelled = _payload(await client.call_tool("cancel_run", {"run_id": run}))
        assert cancelled["status"] == "cancelled"
    else:
        refused = await client.call_tool("emit_event", {"name": "doc.received", "data": {}})
        assert refused.is_error


@pytest.mark.parametrize("writes", [False, True])
def test_stdio(data_dir: Path, writes: bool) -> None:
    args = ["-m", "ironflow._cli._main", "mcp"] + (["--allow-writes"] if writes else [])
    params = StdioServerParameters(
        command=sys.executable, args=args, env=_env(data_dir), cwd=str(Path.cwd())
    )

    async def main() -> None:
        async with Client(params) as client:
            await _exercise(client, writes=writes)

    anyio.run(main)
    with LmdbStore(data_dir) as store:
        assert len(store.list_runs()) == (3 if writes else 2)


@pytest.fixture
def http_server(data_dir: Path) -> Iterator[str]:
    argv = [sys.executable, "-m", "ironflow._cli._main", "mcp", "--http", "--port", "0"]
    argv += ["--token", "s3cret", "--allow-writes"]
    child = Child(argv, _env(data_dir))
    try:
        line = child.line_starting("ironflow mcp listening on ", timeout=60)
        yield line.split()[4]
    finally:
        child.kill()


def test_streamable_http_with_a_bearer_token(http_server: str) -> None:
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(urllib.request.Request(http_server, method="POST", data=b"{}"))
    assert info.value.code == 401

    async def main() -> None:
        headers = {"Authorization": "Bearer s3cret"}
        async with (
            httpx2.AsyncClient(headers=headers, timeout=30) as http,
            Client(streamable_http_client(http_server, http_client=http)) as client,
        ):
            await _exercise(client, writes=True)

    anyio.run(main)


def test_http_needs_a_token_or_dev(data_dir: Path) -> None:
    env = {k: v for k, v in _env(data_dir).items() if k != "IRONFLOW_TOKEN"}
    done = subprocess.run(
        [sys.executable, "-m", "ironflow._cli._main", "mcp", "--http"],
        capture_output=True, text=True, env=env, timeout=60,
    )
    assert done.returncode == 2 and "needs a token" in done.stderr


def test_results_are_bounded_with_a_cursor() -> None:
    """A listing past the bound is cut with the cursor of the first item left out; a large
    value comes as JSON text in pieces that join back to it."""
    from ironflow.server._mcp import MAX_RESULT_CHARS, _page, _text_piece

    items = [{"n": i, "pad": "x" * 1000} for i in range(200)]
    page = _page(items, "runs", None, start=40)
    assert page["truncated"] and len(page["runs"]) < 200
    assert page["next_cursor"] == str(40 + len(page["runs"]))
    assert len(json.dumps(page["runs"])) <= MAX_RESULT_CHARS + 2000
    big = {"text": "y" * (3 * MAX_RESULT_CHARS)}
    pieces, cursor = [], None
    while True:
        piece = _text_piece(big, cursor)
        pieces.append(piece["json_text"])
        cursor = piece["next_cursor"]
        if cursor is None:
            break
    assert json.loads("".join(pieces)) == big and len(pieces) == 4
    assert _text_piece({"small": 1}, None) == {"value": {"small": 1}}

"""Whatever a client sends (path, method, headers, body), the answer is 2xx or 4xx, never 5xx."""

from __future__ import annotations

import json
import socket
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ironflow.server import BackgroundServer
from ironflow.server._app import ROUTES
from ironflow.store import AgentSpec, LmdbStore
from ironflow.store._records import ProjectionSpec

TOKEN = "fuzz-token"
# Framing headers are set by the test itself so every request is complete.
_FRAMING = {"content-length", "transfer-encoding", "connection", "host", "expect", "upgrade"}


@pytest.fixture(scope="module")
def urls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """Two in-process servers over one store: one open (--dev), one that needs TOKEN."""
    store = LmdbStore(tmp_path_factory.mktemp("fuzz") / "data", sync=False)
    store.register_agents([AgentSpec(id="a", triggers=("a.*",))])
    store.emit("a.x", {"seed": True})
    store.register_projections([ProjectionSpec(name="p", events=("a.*",), initial_state={})])
    store.append_to_stream("s", "a.y", {"seed": True})
    with BackgroundServer(store) as open_url, BackgroundServer(store, token=TOKEN) as auth_url:
        yield open_url, auth_url
    store.close()


def send_raw(url: str, raw: bytes) -> int:
    """Send ``raw`` as one HTTP request and return the status code of the reply."""
    parts = urllib.parse.urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(raw)
        reply = b""
        while b"\r\n" not in reply:
            chunk = sock.recv(4096)
            if not chunk:
                break
            reply += chunk
    status_line = reply.split(b"\r\n", 1)[0]
    assert status_line.startswith(b"HTTP/1."), reply[:200]
    return int(status_line.split()[1])


def build(method: str, path: bytes, headers: list[tuple[str, str]], body: bytes) -> bytes:
    lines = [method.encode() + b" " + path + b" HTTP/1.1", b"Host: 127.0.0.1"]
    for name, value in headers:
        lines.append(name.encode() + b": " + value.encode("latin-1"))
    lines += [b"Content-Length: " + str(len(body)).encode(), b"Connection: close", b"", b""]
    return b"\r\n".join(lines) + body


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
# Ids and names: random, impossible, or ones the store holds (projection "p", stream "s").
run_ids = st.text(max_size=40) | st.sampled_from(
    ["run_nope", "p", "s", "", "%00", "..", "a/b", "x" * 400]
)
token_chars = st.text(
    alphabet=st.characters(
        min_codepoint=33, max_codepoint=126, exclude_characters=':()<>@,;\\"/[]?={}'
    ),
    min_size=1,
    max_size=20,
)
headers = st.lists(
    st.tuples(
        token_chars.filter(lambda n: n.lower() not in _FRAMING),
        st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=255), max_size=60),
    ),
    max_size=5,
)
worker = st.fixed_dictionaries(
    {"id": json_values, "host": json_values, "pid": json_values},
    optional={"pid_start": json_values},
)
step = st.fixed_dictionaries(
    {
        "run_id": st.just("run_nope") | json_values,
        "position": st.integers() | json_values,
        "id": json_values,
        "status": st.sampled_from(["completed", "failed", "x"]) | json_values,
        "input": json_values,
        "output": json_values,
        "started_at": st.floats(allow_nan=False) | json_values,
        "ended_at": st.floats(allow_nan=False) | json_values,
    },
    optional={"error": json_values, "attempt": json_values},
)
short_waits = st.floats(min_value=0, max_value=0.05) | st.text(max_size=5) | st.none()
spec = st.fixed_dictionaries(
    {"name": json_values, "events": st.lists(json_values, max_size=2) | json_values},
    optional={"partitioned": json_values, "initial_state": json_values},
)
write = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["nope", "p"]) | json_values,
        "from_position": st.integers() | json_values,
        "to_position": st.integers() | json_values,
    },
    optional={
        "partitions": st.dictionaries(st.text(max_size=5), json_values, max_size=2) | json_values,
        "rebuild_ticket": json_values,
    },
)
# Bodies shaped like the real ones, with any values in the fields.
shaped = st.fixed_dictionaries(
    {},
    optional={
        "name": st.sampled_from(["a.x", "b", ""]) | json_values,
        "data": json_values,
        "id": json_values,
        "worker": worker | json_values,
        "agents": st.lists(st.sampled_from(["a", "b"]) | json_values, max_size=3) | json_values,
        "limit": st.integers() | json_values,
        "ttl": st.floats(allow_nan=False) | json_values,
        # Waits stay short (a valid wait is honoured), or are not numbers at all.
        "wait": short_waits,
        "timeout": short_waits,
        "after": json_values,
        "position": st.integers(min_value=-1, max_value=3) | json_values,
        "expected_version": st.integers() | json_values,
        "idempotency_key": json_values,
        "specs": st.lists(spec | json_values, max_size=2) | json_values,
        "write": write | json_values,
        "partitions": st.lists(st.text(max_size=5) | json_values, max_size=3) | json_values,
        "reclaim": json_values,
        "run_ids": st.lists(run_ids, max_size=3) | json_values,
        "step": step | json_values,
        "status": st.sampled_from(["completed", "failed", "cancelled", "x"]) | json_values,
        "output": json_values,
        "error": json_values,
    },
)
bodies = (
    st.binary(max_size=200)
    | json_values.map(lambda v: json.dumps(v).encode())
    | shaped.map(lambda v: json.dumps(v).encode())
)


def route_path(template: str, run_id: str) -> bytes:
    quoted = urllib.parse.quote(run_id, safe="")
    return (
        "/api/v1" + template.format(run_id=quoted, parent_id=quoted, name=quoted, stream_id=quoted)
    ).encode()


@given(
    route=st.sampled_from(ROUTES),
    run_id=run_ids,
    body=bodies,
    extra=headers,
    query=st.text(max_size=30),
)
def test_routes_never_fail_on_input(
    urls: tuple[str, str], route: Any, run_id: str, body: bytes, extra: Any, query: str
) -> None:
    """Any body, run id, query and headers on a real route get 2xx or 4xx."""
    path = route_path(route.path, run_id)
    if query:
        path += b"?" + urllib.parse.quote(query, safe="=&").encode()
    status = send_raw(urls[0], build(route.method, path, extra, body))
    assert 200 <= status < 500


@given(
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]) | token_chars,
    path=st.binary(min_size=1, max_size=60).map(
        lambda b: b"/" + bytes(c for c in b if 32 < c < 127)
    ),
    extra=headers,
    body=st.binary(max_size=100),
)
def test_any_request_never_fails(
    urls: tuple[str, str], method: str, path: bytes, extra: Any, body: bytes
) -> None:
    """Arbitrary methods, raw paths, headers and bodies get 2xx or 4xx."""
    assert 200 <= send_raw(urls[0], build(method, path, extra, body)) < 500


@given(
    route=st.sampled_from(ROUTES),
    auth=st.sampled_from(["", "Bearer ", "Bearer " + TOKEN + "x", "bearer", TOKEN])
    | st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=255), max_size=40).filter(
        lambda v: "\x7f" not in v  # DEL makes the header malformed: 400 from the parser
    ),
    body=bodies,
)
def test_without_the_token_everything_is_401(
    urls: tuple[str, str], route: Any, auth: str, body: bytes
) -> None:
    """On a server with a token, a request without exactly that Bearer token gets 401."""
    status = send_raw(
        urls[1],
        build(route.method, route_path(route.path, "run_nope"), [("Authorization", auth)], body),
    )
    assert status == 401

"""Hostile HTTP input: a clear 4xx with a JSON error, never a 5xx, never a damaged store.

Hypothesis sends the API bad and deeply nested JSON, bodies over the size limit,
numbers JSON readers cannot hold, odd unicode (lone surrogate escapes, NUL, bidi
marks), path tricks in ids and values of the wrong type, to an in-process server.
After every request the store's own consistency check must pass, and whatever the
server accepted must read back exactly as it was sent.
"""

from __future__ import annotations

import http.client
import json
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ironflow.server import BackgroundServer
from ironflow.store import AgentSpec, LmdbStore
from ironflow.store._records import ProjectionSpec
from tests.helpers import examples

MAX_BODY = 64 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LmdbStore, str]]:
    """An in-process server with a 64 KiB body limit over a store holding one of everything."""
    store = LmdbStore(tmp_path_factory.mktemp("http-fuzz") / "data", sync=False)
    store.register_agents([AgentSpec("fuzz-agent", ("fuzz.*",))])
    store.register_projections([ProjectionSpec(name="p", events=("fuzz.*",), initial_state={})])
    store.emit("fuzz.go", {"seed": True})
    store.append_to_stream("s", "fuzz.mem", {"seed": True})
    with BackgroundServer(store, max_body=MAX_BODY) as url:
        yield store, url
    store.close()


def request(url: str, method: str, path: str, body: bytes | None = None) -> tuple[int, Any]:
    """Send one request with ``path`` exactly as given; return the status and JSON reply."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        conn.request(method, path, body=body, headers=headers)
        reply = conn.getresponse()
        raw = reply.read()
    finally:
        conn.close()
    return reply.status, json.loads(raw) if raw else None


def assert_clear(status: int, reply: Any) -> None:
    """2xx, or 4xx with a JSON error naming a code and saying what is wrong."""
    assert status < 500, reply
    if status >= 400:
        assert isinstance(reply, dict) and isinstance(reply.get("error"), dict), reply
        assert reply["error"]["code"] and len(reply["error"]["message"]) > 10, reply


odd_text = st.text(
    alphabet=st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=()),
    max_size=20,
)
names = odd_text | st.sampled_from(["fuzz.go", "", "fuzz.\u202e", "x" * 300, "fuzz.\x00"])
json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**64), max_value=2**65),
    st.floats(allow_nan=False, allow_infinity=False),
    odd_text,
)
json_values = st.recursive(
    json_leaf,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(odd_text, inner, max_size=3),
    max_leaves=8,
)
# Raw JSON text the usual encoders would never write.
raw_values = st.one_of(
    # json.dumps writes a lone surrogate as an escape ("\\ud800"), which is valid JSON text.
    json_values.map(json.dumps),
    st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999", "9" * 5000, '"\\ud800"']),
    st.integers(min_value=1, max_value=40_000).map(lambda n: "[" * n + "]" * n),
    st.integers(min_value=1, max_value=8_000).map(lambda n: '{"a":' * n + "0" + "}" * n),
    st.integers(min_value=MAX_BODY - 100, max_value=MAX_BODY + 100).map(
        lambda n: json.dumps("x" * n)
    ),
)
emit_bodies = st.one_of(
    st.builds(
        lambda name, data, event_id: (
            '{"name":' + json.dumps(name) + ',"data":' + data + ',"id":' + event_id + "}"
        ),
        names,
        raw_values,
        st.one_of(
            st.none().map(lambda _: "null"),
            names.map(json.dumps),
            json_values.map(json.dumps),
        ),
    ),
    raw_values,
    st.binary(max_size=200).map(lambda b: b.decode("latin-1")),
)
ids = odd_text | st.sampled_from(
    [
        "..",
        "../..",
        "%2e%2e%2f%2e%2e",
        "run_x%00",
        "%ff%fe",
        "a/b",
        "//",
        "x" * 500,
        "%",
        "?limit=0",
        "#frag",
        " ",
    ]
)


@settings(max_examples=examples(60))
@given(body=emit_bodies)
def test_hostile_emit_bodies_get_a_clear_answer_and_leave_the_store_valid(
    server: tuple[LmdbStore, str], body: str
) -> None:
    """POST /events with any body: 200 and stored exactly as sent, or a clear 4xx."""
    store, url = server
    status, reply = request(url, "POST", "/api/v1/events", body.encode("utf-8", "surrogatepass"))
    assert_clear(status, reply)
    if status == 200 and reply["created"]:  # (an id used before returns the first event)
        sent = json.loads(body)
        [event] = [e for e in store.events(after_seq=reply["seq"] - 1, limit=1)]
        assert event.id == reply["event_id"] and event.name == sent["name"]
        assert event.data == sent.get("data", {})
    store.check_valid()


@settings(max_examples=examples(60))
@given(
    route=st.sampled_from(
        [
            ("GET", "/api/v1/runs/{}"),
            ("POST", "/api/v1/runs/{}/cancel"),
            ("GET", "/api/v1/projections/{}"),
            ("GET", "/api/v1/streams/{}"),
            ("GET", "/api/v1/store/runs/{}/steps"),
            ("POST", "/api/v1/store/streams/{}/events"),
            ("POST", "/api/v1/store/projections/{}/rebuild"),
        ]
    ),
    raw_id=ids,
    quote=st.booleans(),
    body=st.none() | emit_bodies,
)
def test_hostile_ids_in_paths_get_a_clear_answer(
    server: tuple[LmdbStore, str], route: tuple[str, str], raw_id: str, quote: bool, body: Any
) -> None:
    """Ids with dot segments, NUL, bad percent escapes or odd unicode: 2xx or a clear 4xx."""
    store, url = server
    method, template = route
    if quote:
        piece = urllib.parse.quote(raw_id.encode("utf-8", "surrogatepass"), safe="")
    else:
        # As typed: only what cannot go on a request line at all is escaped.
        piece = urllib.parse.quote(
            raw_id.encode("utf-8", "surrogatepass"), safe="/%?#.:@!$&'()*+,;="
        )
    data = None if body is None else body.encode("utf-8", "surrogatepass")
    status, reply = request(url, method, template.format(piece), data)
    assert_clear(status, reply)
    store.check_valid()


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ("[" * 40_000 + "]" * 40_000, 413, "too_large"),
        ("[" * 30_000 + "]" * 30_000, 400, "bad_json"),
        ('{"name": "fuzz.go", "data": ' + "[" * 900 + "]" * 900 + "}", {400, 422}, None),
        ('{"name": "fuzz.go", "data": ' + "9" * 5_000 + "}", 400, "bad_json"),
        ('{"name": "fuzz.go", "data": {"a": "\\ud800"}}', 400, "bad_json"),
        ('{"name": ["fuzz.go"]}', 422, "invalid_input"),
        ('{"name": "fuzz.go", "id": 7}', 422, "invalid_input"),
        ('{"name": "fuzz.\\u0000"}', 200, None),
    ],
)
def test_each_kind_of_hostile_body_gets_its_own_answer(
    server: tuple[LmdbStore, str], body: str, status: int | set[int], code: str | None
) -> None:
    """Too large: 413; not JSON (too deep, too long a number, a lone surrogate): 400; wrong
    types or nesting the store refuses: 422; odd but valid text is stored as sent."""
    store, url = server
    got, reply = request(url, "POST", "/api/v1/events", body.encode())
    assert got in (status if isinstance(status, set) else {status}), reply
    if code is not None:
        assert reply["error"]["code"] == code
    store.check_valid()

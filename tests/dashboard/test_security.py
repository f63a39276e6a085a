"""Dashboard security over HTTP: login, the session cookie, CSRF, and the API's tokens."""

from __future__ import annotations

import http.client
import json
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ironflow.server import BackgroundServer
from ironflow.store import AgentSpec, LmdbStore

TOKEN = "s3cret-token"


class Answer:
    def __init__(self, response: http.client.HTTPResponse) -> None:
        self.status = response.status
        self.headers = response.headers
        self.body = response.read()

    def json(self) -> Any:
        return json.loads(self.body)


def call(
    url: str,
    method: str,
    path: str,
    *,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
) -> Answer:
    """One request, redirects not followed."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        return Answer(conn.getresponse())
    finally:
        conn.close()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, LmdbStore]]:
    store = LmdbStore(tmp_path / "data", sync=False)
    store.register_agents([AgentSpec("a", ("e",))])
    with BackgroundServer(store, token=TOKEN) as url:
        yield url, store
    store.close()


@pytest.fixture
def dev(tmp_path: Path) -> Iterator[tuple[str, LmdbStore]]:
    store = LmdbStore(tmp_path / "data", sync=False)
    store.register_agents([AgentSpec("a", ("e",))])
    with BackgroundServer(store) as url:
        yield url, store
    store.close()


def login(url: str, token: str = TOKEN) -> Answer:
    body = urllib.parse.urlencode({"token": token}).encode()
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    return call(url, "POST", "/ui/login", headers=headers, body=body)


def cookie_of(answer: Answer) -> str:
    return answer.headers["Set-Cookie"].split(";", 1)[0]


def test_nothing_of_the_dashboard_is_reachable_without_the_token(
    served: tuple[str, LmdbStore],
) -> None:
    """Pages redirect to the login page; the script and every JSON read answer 401."""
    url, _ = served
    page = call(url, "GET", "/")
    assert page.status == 302 and page.headers["Location"] == "/ui/login"
    assert call(url, "GET", "/ui/static/app.js").status == 401
    for path in ("/ui/api/runs", "/ui/api/events", "/ui/api/agents", "/ui/api/live"):
        assert call(url, "GET", path).status == 401, path
    assert call(url, "GET", "/ui/login").status == 200
    forged = {"Cookie": "ironflow_session=9999999999.00.abcdef"}
    assert call(url, "GET", "/ui/api/runs", headers=forged).status == 401


def test_login_sets_an_httponly_samesite_strict_cookie(served: tuple[str, LmdbStore]) -> None:
    """The right token gives a session cookie that opens the pages; a wrong one does not."""
    url, _ = served
    wrong = login(url, "guess")
    assert wrong.status == 401 and "Set-Cookie" not in wrong.headers
    assert b"not this server" in wrong.body
    ok = login(url)
    assert ok.status == 302
    cookie = ok.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    session = {"Cookie": cookie_of(ok)}
    assert call(url, "GET", "/", headers=session).status == 200
    assert call(url, "GET", "/ui/api/runs", headers=session).json()["runs"] == []


def test_actions_need_the_csrf_header_and_no_foreign_origin(
    served: tuple[str, LmdbStore],
) -> None:
    """A signed-in action without the CSRF header, or from another origin, changes nothing."""
    url, store = served
    run_id = store.emit("e", {}).run_ids[0]
    session = {"Cookie": cookie_of(login(url)), "Content-Type": "application/json"}
    path = f"/ui/api/runs/{run_id}/cancel"
    assert call(url, "POST", path, headers=session, body=b"{}").status == 403
    csrf = call(url, "GET", "/ui/api/session", headers=session).json()["csrf"]
    foreign = {**session, "X-Ironflow-CSRF": csrf, "Origin": "http://evil.example"}
    assert call(url, "POST", path, headers=foreign, body=b"{}").status == 403
    assert call(url, "POST", path, headers={"X-Ironflow-CSRF": csrf}, body=b"{}").status == 401
    assert store.get_run(run_id).status == "pending"
    good = {**session, "X-Ironflow-CSRF": csrf, "Origin": url}
    answer = call(url, "POST", path, headers=good, body=b"{}")
    assert answer.status == 200 and answer.json()["status"] == "cancelled"


def test_the_api_keeps_its_bearer_tokens(served: tuple[str, LmdbStore]) -> None:
    """A dashboard cookie opens nothing under /api/v1; the bearer token still does."""
    url, _ = served
    session = {"Cookie": cookie_of(login(url))}
    assert call(url, "GET", "/api/v1/runs", headers=session).status == 401
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    assert call(url, "GET", "/api/v1/runs", headers=bearer).status == 200
    assert call(url, "GET", "/ui/api/runs", headers=bearer).status == 401


def test_dev_mode_needs_no_login_but_actions_still_need_the_csrf_header(
    dev: tuple[str, LmdbStore],
) -> None:
    """--dev opens the pages; a cross-site request still cannot act."""
    url, store = dev
    run_id = store.emit("e", {}).run_ids[0]
    assert call(url, "GET", "/").status == 200
    assert call(url, "GET", "/ui/login").status == 302
    path = f"/ui/api/runs/{run_id}/pause"
    assert call(url, "POST", path, body=b"{}").status == 403
    csrf = call(url, "GET", "/ui/api/session").json()["csrf"]
    answer = call(url, "POST", path, headers={"X-Ironflow-CSRF": csrf}, body=b"{}")
    assert answer.status == 200 and store.get_run(run_id).status == "paused"


def test_pages_carry_a_content_security_policy(dev: tuple[str, LmdbStore]) -> None:
    """The page allows only its own scripts and styles and refuses to be framed."""
    url, _ = dev
    headers = call(url, "GET", "/").headers
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    assert headers["X-Frame-Options"] == "DENY"


def test_a_live_stream_says_when_the_store_changes(dev: tuple[str, LmdbStore]) -> None:
    """The event stream sends a change at once, and another after a write."""
    url, store = dev
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.request("GET", "/ui/api/live")
        response = conn.getresponse()
        assert response.headers["Content-Type"].startswith("text/event-stream")

        def next_change() -> int:
            while True:
                line = response.readline().decode()
                if line.startswith("data: "):
                    return int(json.loads(line[6:])["marker"])

        first = next_change()
        store.emit("e", {})
        assert next_change() > first
    finally:
        conn.close()

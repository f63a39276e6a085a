"""RemoteStore's transport (store/_http.py) against a scripted server on a real socket.

Each test's server reads whole requests and answers with the bytes the test wrote, so
every shape of reply (a length, chunks, until close, an interim 1xx, garbage, a reply
cut short) is met exactly as it would come off the wire.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from collections.abc import Iterator

import pytest

from ironflow.errors import ServerUnavailableError
from ironflow.store import RemoteStore
from ironflow.store._http import MAX_HEAD, BadResponse, Connection, request_head

OK_EMPTY = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n[]"


class Scripted:
    """A server on 127.0.0.1 answering each request with the next scripted reply.

    A reply is ``(bytes, close)``: with ``close`` the connection is closed after it
    (without saying so, unless the bytes do).
    """

    def __init__(self, replies: list[tuple[bytes, bool]]) -> None:
        self.replies = list(replies)
        self.requests: list[bytes] = []
        self.accepted = 0
        self._conn: socket.socket | None = None
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(30)
        self.port = int(self._listener.getsockname()[1])
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while self.replies:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self.accepted += 1
            self._conn = conn
            with conn:
                conn.settimeout(30)
                buf = b""
                while self.replies:
                    request, buf = _read_request(conn, buf)
                    if request is None:
                        break  # the client closed this connection
                    self.requests.append(request)
                    reply, close = self.replies.pop(0)
                    conn.sendall(reply)
                    if close:
                        break

    def close(self) -> None:
        # shutdown, not only close: it wakes the thread blocked in accept() or recv().
        for sock in (self._listener, self._conn):
            if sock is not None:
                with contextlib.suppress(OSError):  # not connected (any more)
                    sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(timeout=30)
        self._listener.close()


def _read_request(conn: socket.socket, buf: bytes) -> tuple[bytes | None, bytes]:
    while b"\r\n\r\n" not in buf:
        chunk = conn.recv(65536)
        if not chunk:
            return None, b""
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.lower() == b"content-length":
            length = int(value)
    while len(rest) < length:
        rest += conn.recv(65536)
    return head + b"\r\n\r\n" + rest[:length], rest[length:]


@pytest.fixture
def scripted() -> Iterator[list[Scripted]]:
    servers: list[Scripted] = []
    yield servers
    for server in servers:
        server.close()


def serve(servers: list[Scripted], *replies: tuple[bytes, bool]) -> Scripted:
    server = Scripted(list(replies))
    servers.append(server)
    return server


def get(conn: Connection, target: str = "/x") -> tuple[int, bytes]:
    return conn.exchange(request_head("GET", target, b"Host: t\r\n", None), 10)


def test_a_request_is_its_head_and_body_with_their_length(scripted: list[Scripted]) -> None:
    server = serve(scripted, (OK_EMPTY, False))
    conn = Connection("127.0.0.1", server.port, https=False, timeout=10)
    body = b'{"a":"\xc3\xa9"}'
    request = request_head("POST", "/api/v1/store/steps", b"Host: h\r\nX-A: 1\r\n", len(body))
    assert conn.exchange(request + body, 10) == (200, b"[]")
    assert server.requests == [
        b"POST /api/v1/store/steps HTTP/1.1\r\nHost: h\r\nX-A: 1\r\n"
        b"Content-Length: 10\r\n\r\n" + body
    ]
    conn.close()


def test_replies_by_length_by_chunks_and_until_close(scripted: list[Scripted]) -> None:
    """Each way HTTP/1.1 delimits a body is read whole; keep-alive is kept until told."""
    server = serve(
        scripted,
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", False),
        (
            b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3;ext=1\r\nabc\r\nA\r\n0123456789\r\n0\r\nX-Trailer: t\r\n\r\n",
            False,
        ),
        (
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
            False,
        ),
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nby", True),
        (b"HTTP/1.0 200 OK\r\n\r\nuntil the end", True),
        (b"HTTP/1.1 204 No Content\r\n\r\n", False),
    )
    conn = Connection("127.0.0.1", server.port, https=False, timeout=10)
    assert get(conn) == (200, b"hello")
    assert get(conn) == (201, b"abc0123456789")
    assert get(conn) == (404, b"")  # the interim 100 is skipped
    assert server.accepted == 1  # one connection so far, kept alive
    assert get(conn) == (200, b"by")
    assert not conn.is_open  # "Connection: close" closed it
    assert get(conn) == (200, b"until the end")
    assert not conn.is_open  # HTTP/1.0 without keep-alive
    assert get(conn) == (204, b"")
    assert conn.is_open and server.accepted == 3
    conn.close()


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (b"SSH-2.0-OpenSSH_9.2\r\n", "not HTTP/1.x"),
        (b"HTTP/1.1 2x0 OK\r\n\r\n", "not HTTP/1.x"),
        (b"HTTP/2 200\r\n\r\n", "not HTTP/1.x"),
        (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "malformed header line"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "Content-Length is not a size"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", "middle of the reply's body"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "malformed chunk size"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x3\r\n", "malformed chunk"),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcXY0\r\n\r\n",
            "does not end with CRLF",
        ),
        (b"HTTP/1.1 200 OK\r\nX: " + b"a" * (MAX_HEAD + 10) + b"\r\n\r\n", "longer than"),
        (b"", "closed the connection without answering"),
    ],
)
def test_a_reply_that_is_not_http_or_is_cut_short_is_a_clear_error(
    scripted: list[Scripted], reply: bytes, message: str
) -> None:
    server = serve(scripted, (reply, True))
    conn = Connection("127.0.0.1", server.port, https=False, timeout=10)
    with pytest.raises(BadResponse, match=message):
        get(conn)
    assert not conn.is_open  # never reused after a reply it could not read
    assert isinstance(BadResponse("x"), ConnectionError)  # RemoteStore retries it


def test_bytes_after_a_reply_close_the_connection(scripted: list[Scripted]) -> None:
    """Extra bytes mean the two ends disagree on where a reply ends: start afresh."""
    server = serve(scripted, (OK_EMPTY + b"HTTP/1.1 200 OK\r\n", False))
    conn = Connection("127.0.0.1", server.port, https=False, timeout=10)
    assert get(conn) == (200, b"[]")
    assert not conn.is_open
    conn.close()


def test_a_stale_keep_alive_connection_is_replaced_at_once(
    scripted: list[Scripted], caplog: pytest.LogCaptureFixture
) -> None:
    """A server that closed an idle keep-alive connection costs a reconnect, not an outage."""
    server = serve(scripted, (OK_EMPTY, True), (OK_EMPTY, True), (OK_EMPTY, False))
    store = RemoteStore(f"http://127.0.0.1:{server.port}", give_up_after=5)
    try:
        with caplog.at_level(logging.WARNING, "ironflow.remote"):
            assert store.agents() == []
            assert store.agents() == []  # its connection was closed behind its back
            assert store.agents() == []
    finally:
        store.close()
    assert caplog.records == []
    assert server.accepted == 3
    assert all(r.startswith(b"GET /api/v1/store/agents HTTP/1.1\r\n") for r in server.requests)
    assert all(b"\r\nHost: 127.0.0.1:" in r for r in server.requests)


def test_a_server_that_does_not_speak_http_is_an_outage_with_its_reason(
    scripted: list[Scripted], caplog: pytest.LogCaptureFixture
) -> None:
    server = serve(scripted, *[(b"SSH-2.0-OpenSSH_9.2\r\n", True)] * 50)
    store = RemoteStore(f"http://127.0.0.1:{server.port}", give_up_after=0.3)
    try:
        with (
            caplog.at_level(logging.WARNING, "ironflow.remote"),
            pytest.raises(ServerUnavailableError, match=r"did not answer within 0\.3s"),
        ):
            store.agents()
    finally:
        store.close()
    [warning] = [r.getMessage() for r in caplog.records]
    assert "unreachable" in warning and "not HTTP/1.x" in warning


def test_the_url_path_and_the_token_travel_in_the_request(scripted: list[Scripted]) -> None:
    server = serve(scripted, (OK_EMPTY, False))
    store = RemoteStore(f"http://127.0.0.1:{server.port}/behind/proxy/", token="s3cret")
    try:
        assert store.agents() == []
    finally:
        store.close()
    [request] = server.requests
    assert request.startswith(b"GET /behind/proxy/api/v1/store/agents HTTP/1.1\r\n")
    assert b"\r\nAuthorization: Bearer s3cret\r\n" in request


def test_a_url_path_that_cannot_be_a_request_line_is_a_config_error() -> None:
    from ironflow.errors import ConfigError

    with pytest.raises(ConfigError, match="IRONFLOW_URL's path"):
        RemoteStore("http://127.0.0.1:9/a b")

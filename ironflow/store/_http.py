"""One keep-alive HTTP/1.1 connection: RemoteStore's transport.

Why not ``http.client``: a recorded step through the server is one small request, and
on loopback the client's own CPU and the number of packets are a large part of its
cost. ``http.client`` writes the headers and the body with two ``sendall`` calls (two
packets with ``TCP_NODELAY``, so the server wakes twice) and parses every reply's
headers with the ``email`` package. Here a request is one write, and a reply is read
for what RemoteStore uses: the status, how long the body is (``Content-Length``,
chunked, or until the server closes), whether the connection stays open, and the body.

A reply that is not HTTP, or is cut short, raises :class:`BadResponse` (a
``ConnectionError``): to RemoteStore it is a connection failure like any other, which
it retries by its own rules (a stale keep-alive connection at once, else with backoff).
"""

from __future__ import annotations

import socket
from typing import Any

__all__ = ["MAX_HEAD", "BadResponse", "Connection", "Reply", "request_head"]

#: The most bytes of status line and headers a reply may have.
MAX_HEAD = 64 * 1024
_RECV = 64 * 1024
_HEX = b"0123456789abcdefABCDEF"


class BadResponse(ConnectionError):
    """The server's reply was not HTTP/1.x, or the connection ended in the middle of it."""


Reply = tuple[int, bytes]


def request_head(method: str, target: str, headers: bytes, length: int | None) -> bytes:
    """The request line and headers of one request, ending with the blank line.

    ``headers`` holds the fixed header lines (each ending in CRLF); ``length`` is the
    body's size, or None for a request with no body.
    """
    line = f"{method} {target} HTTP/1.1\r\n".encode("ascii")
    if length is None:
        return line + headers + b"\r\n"
    return line + headers + b"Content-Length: %d\r\n\r\n" % length


class Connection:
    """A keep-alive connection to ``host:port`` (TLS if ``https``), opened on first use.

    Not thread-safe: RemoteStore keeps one per thread.
    """

    def __init__(self, host: str, port: int, *, https: bool, timeout: float) -> None:
        self.host = host
        self.port = port
        self.https = https
        self.timeout = timeout
        self.sock: socket.socket | None = None
        self._buf = bytearray()

    @property
    def is_open(self) -> bool:
        return self.sock is not None

    def connect(self) -> None:
        sock = socket.create_connection((self.host, self.port), self.timeout)
        try:
            # Requests are small and answered at once: Nagle's algorithm would hold them.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.https:
                import ssl  # only for https: importing it costs a worker on http nothing

                sock = ssl.create_default_context().wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise
        self.sock = sock
        self._buf.clear()

    def close(self) -> None:
        sock, self.sock = self.sock, None
        self._buf.clear()
        if sock is not None:
            sock.close()

    def exchange(self, request: bytes, timeout: float) -> Reply:
        """Send ``request`` (head and body, in one write); return the reply's status and body.

        Closes the connection when the reply says so, and on any error (the caller
        decides whether to try again on a new one).
        """
        if self.sock is None:
            self.connect()
        sock = self.sock
        assert sock is not None
        try:
            sock.settimeout(timeout)
            sock.sendall(request)
            status, body, keep = self._read_reply(sock)
        except BaseException:
            self.close()
            raise
        if not keep:
            self.close()
        return status, body

    # -- reading the reply ----------------------------------------------------------------

    def _more(self, sock: Any, what: str) -> None:
        chunk = sock.recv(_RECV)
        if not chunk:
            if what == "status":
                # The usual sign of a keep-alive connection the server has since closed.
                raise BadResponse("the server closed the connection without answering")
            raise BadResponse(f"the connection ended in the middle of the reply's {what}")
        self._buf += chunk

    def _line(self, sock: Any, what: str) -> bytes:
        buf = self._buf
        while True:
            end = buf.find(b"\r\n")
            if end >= 0:
                line = bytes(buf[:end])
                del buf[: end + 2]
                return line
            if len(buf) > MAX_HEAD:
                raise BadResponse(f"the reply's {what} is longer than {MAX_HEAD} bytes")
            self._more(sock, what)

    def _take(self, sock: Any, n: int, what: str) -> bytes:
        buf = self._buf
        while len(buf) < n:
            self._more(sock, what)
        data = bytes(buf[:n])
        del buf[:n]
        return data

    def _read_reply(self, sock: Any) -> tuple[int, bytes, bool]:
        while True:
            status, version, fields = self._read_head(sock)
            if status >= 200:
                break
            # 1xx: an interim answer (we never ask for one, but a proxy may send it).
        connection = fields.get("connection", "").lower()
        keep = "close" not in connection if version == "1.1" else "keep-alive" in connection
        if status in (204, 304):
            body = b""
        elif "chunked" in fields.get("transfer-encoding", "").lower():
            body = self._read_chunked(sock)
        elif "content-length" in fields:
            raw = fields["content-length"]
            if not raw.isdigit() or len(raw) > 18:
                raise BadResponse(f"the reply's Content-Length is not a size: {raw[:40]!r}")
            body = self._take(sock, int(raw), "body")
        else:
            # No length given: the body is all the server sends before it closes.
            while True:
                chunk = sock.recv(_RECV)
                if not chunk:
                    break
                self._buf += chunk
            body, keep = bytes(self._buf), False
            self._buf.clear()
        if self._buf:
            keep = False  # bytes nobody asked for: the two ends disagree on where a reply ends
        return status, body, keep

    def _read_head(self, sock: Any) -> tuple[int, str, dict[str, str]]:
        line = self._line(sock, "status")
        version, _, rest = line.partition(b" ")
        code = rest[:3]
        if (
            version not in (b"HTTP/1.1", b"HTTP/1.0")
            or not code.isdigit()
            or rest[3:4]
            not in (
                b"",
                b" ",
            )
        ):
            raise BadResponse(f"the reply is not HTTP/1.x: {line[:60]!r}")
        fields: dict[str, str] = {}
        size = len(line)
        while True:
            field = self._line(sock, "headers")
            if not field:
                return int(code), version[5:].decode(), fields
            size += len(field)
            if size > MAX_HEAD:
                raise BadResponse(f"the reply's headers are longer than {MAX_HEAD} bytes")
            name, sep, value = field.partition(b":")
            if not sep or not name or name != name.strip():
                raise BadResponse(f"the reply has a malformed header line: {field[:60]!r}")
            key = name.decode("latin-1").lower()
            text = value.strip().decode("latin-1")
            # Repeated fields are one list (RFC 9110 5.3); none we read may repeat otherwise.
            fields[key] = f"{fields[key]}, {text}" if key in fields else text

    def _read_chunked(self, sock: Any) -> bytes:
        parts = []
        while True:
            line = self._line(sock, "chunk size")
            size_text = line.partition(b";")[0].strip()
            if not size_text or len(size_text) > 15 or size_text.strip(_HEX):
                raise BadResponse(f"the reply has a malformed chunk size: {line[:40]!r}")
            size = int(size_text, 16)
            if size == 0:
                break
            parts.append(self._take(sock, size, "body"))
            if self._take(sock, 2, "body") != b"\r\n":
                raise BadResponse("a chunk of the reply does not end with CRLF")
        while self._line(sock, "trailers"):
            pass  # trailer fields: nothing we read
        return b"".join(parts)

"""Dashboard sessions: the token typed once on a login page, then an HttpOnly cookie.

Why a signed cookie and not a server-side table: a session survives a server restart
and every session ends at once when the token changes, with nothing stored. The cookie
is ``<expires>.<nonce>.<mac>``, the MAC an HMAC-SHA256 under a key derived from the
server's token, so only someone who knew the token can have made one.

Cross-site requests: the cookie is ``SameSite=Strict`` (a browser never sends it with a
request another site started), and every dashboard action must also carry the
session's CSRF token in a header (``X-Ironflow-CSRF``), which a page on another origin
can neither read nor send without a CORS preflight this server never answers; an
``Origin`` header naming another origin is refused too. In ``--dev`` mode there is no
session, but actions still need the CSRF token, derived from a key made per process,
so a web page the user happens to visit cannot drive a local dev server.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time

import attrs

__all__ = ["COOKIE", "CSRF_HEADER", "SESSION_SECONDS", "Sessions"]

COOKIE = "ironflow_session"
CSRF_HEADER = "X-Ironflow-CSRF"
#: How long a login lasts.
SESSION_SECONDS = 12 * 3600


@attrs.frozen
class Session:
    """A signed-in browser (or, in dev mode, any browser): its CSRF token."""

    csrf: str


def _mac(key: bytes, text: str) -> str:
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()


class Sessions:
    """Makes and checks session cookies and CSRF tokens for one server.

    With ``token=None`` (dev mode) every request has a session; actions still need
    the CSRF token, which :meth:`check` hands to the page.
    """

    def __init__(self, token: str | None) -> None:
        self.dev = token is None
        seed = os.urandom(32) if token is None else b"ironflow-session\x00" + token.encode()
        self._key = hashlib.sha256(seed).digest()
        self._token = None if token is None else token.encode("utf-8", "surrogatepass")
        self._dev = Session(csrf=_mac(self._key, "csrf:dev"))

    def token_ok(self, given: str) -> bool:
        """Whether ``given`` is the server's token (compared in constant time)."""
        if self._token is None:
            return True
        return hmac.compare_digest(given.strip().encode("utf-8", "surrogatepass"), self._token)

    def new_cookie(self, now: float | None = None) -> str:
        """A fresh session cookie value, valid for :data:`SESSION_SECONDS`."""
        expires = int((time.time() if now is None else now) + SESSION_SECONDS)
        body = f"{expires}.{os.urandom(16).hex()}"
        return f"{body}.{_mac(self._key, body)}"

    def check(self, cookie: str | None, now: float | None = None) -> Session | None:
        """The session a cookie holds, or None for a missing, forged or expired one."""
        if self.dev:
            return self._dev
        if not cookie or cookie.count(".") != 2:
            return None
        expires, nonce, mac = cookie.split(".")
        body = f"{expires}.{nonce}"
        if not hmac.compare_digest(mac.encode(), _mac(self._key, body).encode()):
            return None
        if not expires.isdigit() or int(expires) < (time.time() if now is None else now):
            return None
        return Session(csrf=_mac(self._key, "csrf:" + nonce))

    @staticmethod
    def csrf_ok(session: Session, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given.encode(), session.csrf.encode())

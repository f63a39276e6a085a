"""A PostgreSQL URL: which locations are one, how one is shown, and what a failed
connection to it means for the user.

No psycopg here: ``store/_open.py`` asks :func:`is_postgres_url` of every location,
LMDB ones included, and an install without the ``postgres`` extra must get that far.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlsplit

from ironflow.errors import ConfigError, StoreError

__all__ = ["check_url", "connect_error", "is_postgres_url", "safe_url", "settings_error"]

_SCHEMES = ("postgresql://", "postgres://")
_EXAMPLE = "postgresql://USER:PASSWORD@HOST:5432/DATABASE"


def is_postgres_url(value: str) -> bool:
    """Whether ``value`` names a PostgreSQL database (else it is an LMDB directory)."""
    return value.startswith(_SCHEMES)


def safe_url(url: str) -> str:
    """``url`` without its password (in the user part or a ``password=`` parameter),
    for messages and logs. Hosts are left as written: a URL may list several
    (``host1:5432,host2:5432``, for a primary and its standbys)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "the PostgreSQL URL given"
    user, at, hosts = parts.netloc.rpartition("@")
    netloc = f"{user.split(':', 1)[0]}:***@{hosts}" if at and ":" in user else parts.netloc
    query = "&".join(
        "password=***" if item.startswith("password=") else item for item in parts.query.split("&")
    )
    return f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "")


def check_url(url: str) -> None:
    """Refuse a URL that names no database: libpq would quietly use the database named
    like the user (``postgres`` for ``postgres://postgres@host``), and the Ironflow
    tables would land wherever that is."""
    try:
        parts = urlsplit(url)
        query = dict(parse_qsl(parts.query))
    except ValueError as exc:
        raise ConfigError(f"the PostgreSQL URL given is not valid ({exc}); {_EXAMPLE}") from None
    if not parts.path.strip("/") and not query.get("dbname"):
        raise ConfigError(
            f"the PostgreSQL URL {safe_url(url)} names no database: add it after the host, "
            f"as in {_EXAMPLE} (create it first with: createdb DATABASE)"
        )


def _reason(exc: BaseException) -> str:
    """libpq's own words, without the connection's preamble."""
    lines = str(exc).strip().splitlines()
    text = " ".join(lines[0].split()) if lines else ""
    for mark in ("FATAL: ", "failed: "):
        if mark in text:
            text = text.rsplit(mark, 1)[-1]
            break
    return text or type(exc).__name__


#: Parts of libpq's messages about a connection no retry can fix: the URL's settings
#: are wrong, and only the user can change them.
_WRONG_LOGIN = ("password authentication failed", "no password supplied", "role ")
_WRONG_SSL = ("SSL", "sslmode", "certificate")


def settings_error(url: str, exc: BaseException, *, psycopg: Any) -> StoreError | None:
    """What is wrong with ``url`` when connecting to it (or reading the schema's version
    on it) failed with ``exc``, if waiting cannot fix it (a wrong password, a database
    that does not exist, a user without rights to the tables); None when the database
    may just be unreachable for now (refused, timed out: retried)."""
    where = safe_url(url)
    reason = _reason(exc)
    if isinstance(exc, psycopg.errors.InsufficientPrivilege):
        return StoreError(
            f"the user of {where} may not use the Ironflow tables: {reason}. Grant them "
            "(GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO USER), "
            "or use the user that ran ironflow store migrate"
        )
    if not isinstance(exc, psycopg.OperationalError):
        # libpq refused the URL itself (an unknown parameter, a bad port number).
        return StoreError(f"the PostgreSQL URL {where} is not valid: {reason}; {_EXAMPLE}")
    if "does not exist" in reason and reason.startswith("database"):
        return StoreError(
            f"{reason} on the server of {where}: create it (createdb NAME, or CREATE "
            f"DATABASE NAME), then create its tables with: ironflow store migrate --store URL"
        )
    if any(mark in reason for mark in _WRONG_LOGIN) or "pg_hba.conf" in reason:
        return StoreError(
            f"the database {where} refused the login: {reason}. Check the user and password "
            "in the URL (--store or IRONFLOW_STORE)"
        )
    if "invalid response" in reason:
        return StoreError(
            f"something other than PostgreSQL answered at {where}: {reason}. Check the "
            "URL's host and port"
        )
    if any(mark in reason for mark in _WRONG_SSL):
        return StoreError(
            f"cannot connect to the database {where}: {reason}. Check the URL's sslmode "
            "(for example ?sslmode=require) against what the server accepts"
        )
    return None


def connect_error(url: str, exc: BaseException, *, psycopg: Any) -> StoreError:
    """What to tell a user whose one connection to ``url`` failed with ``exc``."""
    return settings_error(url, exc, psycopg=psycopg) or StoreError(
        f"cannot connect to the database {safe_url(url)}: {_reason(exc)}. Is PostgreSQL "
        "running there, and are the URL's host and port right?"
    )

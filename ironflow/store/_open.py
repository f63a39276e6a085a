"""Where the store lives: the one place that chooses a store.

A location is a PostgreSQL URL (``postgresql://`` or ``postgres://``) or an LMDB data
directory. Which one a command uses, first match wins:

1. ``--store URL_OR_DIR`` (or ``--data-dir DIR``), given on the command line;
2. ``IRONFLOW_URL``: an ``ironflow serve`` server, reached over HTTP (not a store
   location: the server has one);
3. ``IRONFLOW_STORE``, then ``IRONFLOW_DATA_DIR``;
4. ``./.ironflow``.

``ironflow serve`` skips step 2: it serves a store, it does not go through a server.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from pathlib import Path

from ironflow.errors import ConfigError
from ironflow.store import Store
from ironflow.store._pgurl import is_postgres_url

__all__ = [
    "DEFAULT_DATA_DIR",
    "is_postgres_url",
    "open_location",
    "open_remote",
    "open_store",
    "resolve_data_dir",
    "resolve_location",
    "server_url",
]

DEFAULT_DATA_DIR = ".ironflow"
#: A scheme and a slash: a URL, never a directory (``C:/data`` has a one-letter scheme).
_LOOKS_LIKE_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]+:/")


def resolve_data_dir(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """``--data-dir``, else ``IRONFLOW_DATA_DIR``, else ``./.ironflow``."""
    if data_dir:
        return Path(data_dir)
    env = os.environ.get("IRONFLOW_DATA_DIR")
    return Path(env) if env else Path(DEFAULT_DATA_DIR)


def resolve_location(
    store: str | os.PathLike[str] | None = None, data_dir: str | os.PathLike[str] | None = None
) -> str | Path:
    """The store location given (``--store``, ``--data-dir``), else from the environment
    (``IRONFLOW_STORE``, ``IRONFLOW_DATA_DIR``), else ``./.ironflow``: a PostgreSQL URL
    as a ``str``, a data directory as a ``Path``."""
    if store and data_dir:
        raise ConfigError(
            "--store and --data-dir both say where the store is: give one "
            "(--store takes a postgresql:// URL or a data directory)"
        )
    chosen = store or data_dir or os.environ.get("IRONFLOW_STORE") or None
    if chosen is None:
        return resolve_data_dir(None)
    text = os.fspath(chosen)
    if is_postgres_url(text):
        return text
    if _LOOKS_LIKE_URL.match(text):
        # Not a directory to create: a worker would quietly start an empty LMDB store
        # in ./postgresql+psycopg:/... while the user's runs wait in PostgreSQL.
        parts = urllib.parse.urlsplit(text)
        if parts.scheme.lower() in ("http", "https"):
            # `ironflow serve`'s address: what IRONFLOW_URL takes. Shown without any
            # user:password part.
            server = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"
            raise ConfigError(
                f"the store {server} is a server's address: to go through `ironflow "
                f"serve`, set IRONFLOW_URL={server} and give no --store (nor "
                "IRONFLOW_STORE); --store takes a postgresql:// URL or a data directory"
            )
        raise ConfigError(
            f"the store {text.split(':', 1)[0]}:... is a URL Ironflow does not read: give a "
            "postgresql:// (or postgres://) URL, as libpq takes it (not SQLAlchemy's "
            "postgresql+psycopg://), or a data directory"
        )
    return Path(text)


def server_url() -> str | None:
    """``IRONFLOW_URL`` (or its older name ``IRONFLOW_SERVER_URL``), if set."""
    return os.environ.get("IRONFLOW_URL") or os.environ.get("IRONFLOW_SERVER_URL") or None


def open_location(location: str | Path, *, give_up_after: float | None = None) -> Store:
    """The store at a location from :func:`resolve_location`.

    ``give_up_after``: on PostgreSQL, how long a call waits for an unreachable database
    before it raises (None: until it is back, as a worker or server does).
    """
    if isinstance(location, str) and is_postgres_url(location):
        from ironflow.store._postgres import PostgresStore

        return PostgresStore(location, give_up_after=give_up_after)
    from ironflow.store import LmdbStore

    return LmdbStore(Path(location))


def open_store(
    where: str | os.PathLike[str] | None = None, *, give_up_after: float | None = None
) -> Store:
    """The store a worker or command should use.

    An explicit ``where`` (a PostgreSQL URL or a data directory) opens that; otherwise
    a server URL in the environment wins over ``IRONFLOW_STORE`` and the data directory.
    ``give_up_after``: how long a call waits for an unreachable server or database
    before it raises (None: retry until it is back, as a worker does).
    """
    url = None if where else server_url()
    if url:
        return open_remote(url, give_up_after=give_up_after)
    return open_location(resolve_location(where), give_up_after=give_up_after)


def open_remote(url: str, *, token: str | None = None, give_up_after: float | None = None) -> Store:
    """A RemoteStore on ``url`` that gives up after ``give_up_after`` seconds (None: never).

    A single request may not outlast the whole allowance either (a server that accepts
    and never answers), but gets at least 5 s, as a large prune at the server may need.
    """
    from ironflow.store._remote import RemoteStore  # type: ignore[import-not-found,unused-ignore]

    if give_up_after is None:
        return RemoteStore(url, token=token)  # type: ignore[no-any-return,unused-ignore]
    return RemoteStore(  # type: ignore[no-any-return,unused-ignore]
        url,
        token=token,
        give_up_after=give_up_after,
        timeout=min(30.0, max(5.0, give_up_after)),
    )

"""Where the store lives: a server URL from the environment, else a data directory."""

from __future__ import annotations

import os
from pathlib import Path

from ironflow.store import Store

__all__ = ["DEFAULT_DATA_DIR", "open_remote", "open_store", "resolve_data_dir", "server_url"]

DEFAULT_DATA_DIR = ".ironflow"


def resolve_data_dir(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """``--data-dir``, else ``IRONFLOW_DATA_DIR``, else ``./.ironflow``."""
    if data_dir:
        return Path(data_dir)
    env = os.environ.get("IRONFLOW_DATA_DIR")
    return Path(env) if env else Path(DEFAULT_DATA_DIR)


def server_url() -> str | None:
    """``IRONFLOW_URL`` (or its older name ``IRONFLOW_SERVER_URL``), if set."""
    return os.environ.get("IRONFLOW_URL") or os.environ.get("IRONFLOW_SERVER_URL") or None


def open_store(
    data_dir: str | os.PathLike[str] | None = None, *, give_up_after: float | None = None
) -> Store:
    """The store a worker or command should use.

    An explicit ``data_dir`` opens that directory; otherwise a server URL in the
    environment wins over the default data directory. ``give_up_after``: through a
    server, how long a call waits for an unreachable server before it raises
    :class:`~ironflow.errors.ServerUnavailableError` (None: retry until it is back, as a
    worker does).
    """
    url = None if data_dir else server_url()
    if url:
        return open_remote(url, give_up_after=give_up_after)
    from ironflow.store import LmdbStore

    return LmdbStore(resolve_data_dir(data_dir))



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

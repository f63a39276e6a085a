"""Where the store lives: a server URL from the environment, else a data directory."""

from __future__ import annotations

import os
from pathlib import Path

from ironflow.store import Store

__all__ = ["DEFAULT_DATA_DIR", "open_store", "resolve_data_dir", "server_url"]

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


def open_store(data_dir: str | os.PathLike[str] | None = None) -> Store:
    """The store a worker or command should use.

    An explicit ``data_dir`` opens that directory; otherwise a server URL in the
    environment wins over the default data directory.
    """
    url = None if data_dir else server_url()
    if url:
        from ironflow.store._remote import RemoteStore  # type: ignore[import-not-found,unused-ignore]

        return RemoteStore(url)  # type: ignore[no-any-return,unused-ignore]
    from ironflow.store import LmdbStore

    return LmdbStore(resolve_data_dir(data_dir))

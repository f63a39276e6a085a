"""The HTTP server: ``ironflow serve``, a thin JSON API over a store.

Workers and the CLI reach it through :class:`ironflow.store.RemoteStore` (set
``IRONFLOW_URL``); people reach it with curl or the dashboard. To embed it: run
:class:`BackgroundServer` on a thread, or mount :func:`make_app` in your own aiohttp
application. The routes live in ``_app.py`` (the people's) and in the store's own route
table (``ironflow/store/_routes.py``), which RemoteStore is built from too; what every
request shares (reading it, answering errors, the token) is ``_requests.py``, and
:class:`BackgroundServer` is ``_background.py``.

The names below load aiohttp on first use, not on import, so that the CLI, which
offers ``serve`` among its commands, does not pay for it on every other command.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ironflow.server._app import make_app
    from ironflow.server._background import BackgroundServer
    from ironflow.server._main import DEFAULT_MAX_BODY
    from ironflow.server._requests import API_PREFIX

__all__ = ["API_PREFIX", "DEFAULT_MAX_BODY", "BackgroundServer", "make_app"]


#: The private module each public name lives in, imported on first use.
_HOMES = {
    "API_PREFIX": "_requests",
    "BackgroundServer": "_background",
    "DEFAULT_MAX_BODY": "_main",
    "make_app": "_app",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'ironflow.server' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"ironflow.server.{home}"), name)

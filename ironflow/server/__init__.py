"""The HTTP server: ``ironflow serve``, a thin JSON API over a store.

Workers and the CLI reach it through :class:`ironflow.store.RemoteStore` (set
``IRONFLOW_URL``); people reach it with curl or the dashboard. To embed it: run
:class:`BackgroundServer` on a thread, or mount :func:`make_app` in your own aiohttp
application. The routes live in ``_app.py`` (the people's) and in the store's own route
table (``ironflow/store/_routes.py``), which RemoteStore is built from too.

The names below load aiohttp on first use, not on import, so that the CLI, which
offers ``serve`` among its commands, does not pay for it on every other command.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ironflow.server._app import API_PREFIX, BackgroundServer, make_app
    from ironflow.server._main import DEFAULT_MAX_BODY

__all__ = ["API_PREFIX", "DEFAULT_MAX_BODY", "BackgroundServer", "make_app"]


def __getattr__(name: str) -> Any:
    if name == "DEFAULT_MAX_BODY":
        from ironflow.server import _main

        return _main.DEFAULT_MAX_BODY
    if name in __all__:
        from ironflow.server import _app

        return getattr(_app, name)
    raise AttributeError(f"module 'ironflow.server' has no attribute {name!r}")

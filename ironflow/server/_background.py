"""The server on a thread of this process, for tests and for embedding.

Separate from ``_app.py`` because it only runs the app (``make_app``, ``start_site``,
``stop_site``) on an event loop of its own thread; ``ironflow serve`` runs the same
three on its main thread (``_main.py``).
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from ironflow.server._app import make_app, start_site, stop_site
from ironflow.server._main import DEFAULT_MAX_BODY
from ironflow.store._machine import StoreMachine

__all__ = ["BackgroundServer"]


class BackgroundServer:
    """The server on a thread of this process: for tests and for embedding.

    ``with BackgroundServer(store) as url: ...`` serves ``store`` at ``url`` (a free
    port on 127.0.0.1 unless told otherwise) until the block ends.
    """

    def __init__(
        self,
        store: StoreMachine,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        max_body: int = DEFAULT_MAX_BODY,
        metrics: Any | None = None,
    ) -> None:
        self.store = store
        self.host = host
        self.port = port
        self.token = token
        self.max_body = max_body
        self.metrics = metrics
        self.url = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def start(self) -> str:
        self._thread = threading.Thread(target=self._main, name="ironflow-server", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error
        return self.url

    def _main(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        app, api = make_app(
            self.store, token=self.token, max_body=self.max_body, metrics=self.metrics
        )
        try:
            runner, port = await start_site(app, self.host, self.port)
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self.port = port
        self.url = f"http://{self.host}:{port}"
        self._ready.set()
        await self._stop.wait()
        await stop_site(runner, api)

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(timeout=30)

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

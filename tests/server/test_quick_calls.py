"""Where the server makes a quick store call (a step, a finish): on its event
loop's thread when the call is alone, on the thread pool (where concurrent writes share
one commit) whenever another store call is in sight."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from ironflow.server._app import Api
from ironflow.store import LmdbStore
from ironflow.store._routes import ROUTES


def test_a_quick_call_runs_on_the_loop_only_when_alone(tmp_path: Path) -> None:
    store = LmdbStore(tmp_path / "data")
    api = Api(store, threads=4)

    async def main() -> tuple[int, int, list[int], int, int]:
        loop_thread = threading.get_ident()
        alone = await api._quick(threading.get_ident)
        # Requests that arrive together go to the pool together: their commits can be one.
        together = await asyncio.gather(*(api._quick(threading.get_ident) for _ in range(3)))
        # While a store call is on the pool, a quick call joins it there.
        gate = threading.Event()
        busy = asyncio.ensure_future(api._run(gate.wait, 30))
        await asyncio.sleep(0)
        during = await api._quick(threading.get_ident)
        gate.set()
        await busy
        after = await api._quick(threading.get_ident)
        return loop_thread, alone, together, during, after

    try:
        loop_thread, alone, together, during, after = asyncio.run(main())
    finally:
        api.close()
        store.close()
    assert alone == loop_thread
    assert loop_thread not in together
    assert during != loop_thread
    assert after == loop_thread


def test_a_quick_call_that_raises_raises_to_its_request(tmp_path: Path) -> None:
    store = LmdbStore(tmp_path / "data")
    api = Api(store, threads=2)

    def fails() -> None:
        raise ValueError("from the store")

    async def main() -> BaseException | None:
        try:
            await api._quick(fails)
        except ValueError as exc:
            return exc
        return None

    try:
        error = asyncio.run(main())
        assert isinstance(error, ValueError) and str(error) == "from the store"
        assert (api._busy, api._deciding) == (0, 0)  # nothing left counted
    finally:
        api.close()
        store.close()


def test_only_bounded_calls_are_quick() -> None:
    """A call that may read a whole history or scan (a lease hands out recorded steps;
    lists and waits) stays on the pool, whatever its size: it must not hold the loop."""
    quick = {name for name, route in ROUTES.items() if route.quick}
    assert quick == {"heartbeat", "record_step", "finish_run", "release_run", "get_run"}


def test_a_postgresql_store_call_never_holds_the_loop() -> None:
    """A PostgreSQL store's call may wait out a database restart: always on the pool."""

    class NotLmdb:
        pass

    api = Api(NotLmdb(), threads=2)  # type: ignore[arg-type]

    async def main() -> tuple[int, int]:
        return threading.get_ident(), await api._quick(threading.get_ident)

    try:
        loop_thread, ran_on = asyncio.run(main())
    finally:
        api.close()
    assert ran_on != loop_thread

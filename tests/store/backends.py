"""Every store the agreement test compares, each behind one factory.

``BACKENDS`` maps a name to a factory that opens a fresh, empty store on a clock and
returns it with its ``check_valid`` and a ``close``. ``memory`` is the oracle: the
others are compared with it. ``postgres`` runs on the session's embedded PostgreSQL server.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import attrs

from ironflow.server import BackgroundServer
from ironflow.store import LmdbStore, RemoteStore, Store
from ironflow.testing import FakeClock, MemoryStore


@attrs.define
class Opened:
    """A fresh store, how to check its invariants, and how to close it."""

    store: Store
    check_valid: Callable[[], None]
    close: Callable[[], None]


def _memory(tmp: Path, clock: FakeClock) -> Opened:
    store = MemoryStore(clock=clock)
    return Opened(store, store.check_valid, store.close)


def _lmdb(tmp: Path, clock: FakeClock) -> Opened:
    store = LmdbStore(tmp / "lmdb", sync=False, clock=clock)
    return Opened(store, store.check_valid, store.close)


def _remote(tmp: Path, clock: FakeClock) -> Opened:
    """A RemoteStore through a real in-process `ironflow serve` app on a free port."""
    backing = LmdbStore(tmp / "served", sync=False, clock=clock)
    stack = contextlib.ExitStack()
    stack.callback(backing.close)
    url = stack.enter_context(BackgroundServer(backing))
    # long_poll=0: an empty lease answers at once instead of waiting for work.
    remote = RemoteStore(url, long_poll=0, give_up_after=10.0)
    stack.callback(remote.close)
    return Opened(remote, backing.check_valid, stack.close)


def _postgres(tmp: Path, clock: FakeClock) -> Opened:
    """A PostgresStore on an empty database of the session's embedded PostgreSQL."""
    from ironflow.store._postgres import PostgresStore
    from tests.support.postgres import fresh_database, release_database

    url = fresh_database()
    store = PostgresStore(url, clock=clock)

    def close() -> None:
        store.close()
        release_database(url)

    return Opened(store, store.check_valid, close)


#: name -> factory; the first is the oracle.
BACKENDS: dict[str, Callable[[Path, FakeClock], Opened]] = {
    "memory": _memory,
    "lmdb": _lmdb,
    "remote": _remote,
    "postgres": _postgres,
}


@contextlib.contextmanager
def opened_all(tmp: Path, clock: FakeClock) -> Iterator[dict[str, Opened]]:
    """Every backend, fresh, closed afterwards."""
    stores: dict[str, Opened] = {}
    try:
        for name, factory in BACKENDS.items():
            (tmp / name).mkdir(parents=True, exist_ok=True)
            stores[name] = factory(tmp / name, clock)
        yield stores
    finally:
        for one in stores.values():
            one.close()

"""Wake-ups across processes (issue 13 target 1): a write wakes waiters on the same data.

Before them, an idle worker or a waiting emitter in another process learned of new
work or a finished run only at its next poll: a waiter with a 20 s timeout waited 20 s.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from ironflow.server._app import Api
from ironflow.store import AgentSpec, LmdbStore
from ironflow.store._memory import MemoryStore
from ironflow.store._wake import SocketWakeups

_WAITER = """
import sys, time
from ironflow._worker._identity import this_worker
from ironflow.store import LmdbStore
store = LmdbStore(sys.argv[1], sync=False)
store.lease_runs(this_worker(), ["a"], limit=1, ttl=5)  # a worker's look, finding nothing
print("waiting", flush=True)
t0 = time.monotonic()
store.wait_for_work(20.0)
print(f"woken {time.monotonic() - t0:.3f}", flush=True)
store.close()
"""


def _spec() -> AgentSpec:
    return AgentSpec(id="a", triggers=("go",))


@pytest.mark.process
def test_an_emit_wakes_a_worker_waiting_in_another_process(tmp_path: Path) -> None:
    data = tmp_path / "data"
    store = LmdbStore(data, sync=False)
    store.register_agents([_spec()])
    child = subprocess.Popen(
        [sys.executable, "-c", _WAITER, str(data)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "waiting"
        # Until its socket exists the child may still be between its look and its wait;
        # a post then is kept in the socket, so one emit after it appears is enough.
        deadline = time.monotonic() + 30
        while not any(p.suffix == ".sock" for p in (data / "wake").glob("*")):
            assert time.monotonic() < deadline, "the waiter never listened"
            time.sleep(0.01)
        store.emit("go", {})
        line = child.stdout.readline().strip()
        assert line.startswith("woken ")
        # Woken by the emit, not by the end of its 20 s wait.
        assert float(line.split()[1]) < 15.0
    finally:
        child.wait(timeout=30)
        assert child.stdout is not None
        child.stdout.close()
        store.close()


_FINISHER = """
import sys
from ironflow._worker._identity import this_worker
from ironflow.store import LmdbStore
store = LmdbStore(sys.argv[1], sync=False)
me = this_worker()
[leased] = store.lease_runs(me, ["a"], limit=1, ttl=5)
store.finish_run(me, leased.run.id, status="completed", attempt=leased.run.attempt)
store.close()
"""


@pytest.mark.process
def test_a_finish_in_another_process_wakes_wait_for_run(tmp_path: Path) -> None:
    """wait_for_run looks again each 0.1 s; a finish elsewhere must wake it between."""
    data = tmp_path / "data"
    store = LmdbStore(data, sync=False)
    try:
        store.register_agents([_spec()])
        [rid] = store.emit("go", {}).run_ids
        seen = store.wakeups.current()
        got: list[int] = []
        waiter = threading.Thread(target=lambda: got.append(store.wakeups.wait(seen, 20.0)))
        waiter.start()
        deadline = time.monotonic() + 30
        while not list((data / "wake").glob("*.sock")):
            assert time.monotonic() < deadline, "the waiter never listened"
            time.sleep(0.01)
        subprocess.run([sys.executable, "-c", _FINISHER, str(data)], check=True, timeout=60)
        waiter.join(30)
        assert got and got[0] != seen
        assert store.get_run(rid).status == "completed"
    finally:
        store.close()


def test_a_dead_processes_socket_is_removed_by_the_next_post(tmp_path: Path) -> None:
    directory = tmp_path / "wake"
    listener = SocketWakeups(directory)
    listener.wait(listener.current(), 0.01)  # makes its socket
    [sock] = list(directory.glob("*.sock"))
    # As after kill -9: the file stays, nobody reads it.
    assert listener._sock is not None
    listener._sock.close()
    listener._sock = None
    poster = SocketWakeups(directory)
    poster.post()
    assert not sock.exists()
    poster.close()
    listener.close()


def test_a_directory_that_cannot_be_made_leaves_polling(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    wakeups = SocketWakeups(blocker / "wake")  # a file's child: no directory there
    wakeups.post()
    t0 = time.monotonic()
    assert wakeups.wait(wakeups.current(), 0.05) == wakeups.current()
    assert time.monotonic() - t0 < 5
    wakeups.close()


def test_a_long_data_directory_path_still_wakes(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)  # past a unix socket address's 107 bytes
    deep.mkdir(parents=True)
    a, b = SocketWakeups(deep / "wake"), SocketWakeups(deep / "wake")
    try:
        seen = a.current()
        a.wait(seen, 0.01)  # listening now
        b.post()
        assert a.wait(seen, 20.0) != seen
    finally:
        a.close()
        b.close()


def test_the_server_relays_wake_ups_from_other_processes(tmp_path: Path) -> None:
    """A write into the data directory by another opener wakes the server's long polls."""
    data = tmp_path / "data"
    served = LmdbStore(data, sync=False)
    other = SocketWakeups(data / "wake")  # what another process on the data posts with
    api = Api(served)

    async def scenario() -> bool:
        api.listen(asyncio.get_running_loop())
        event = api.work_event()
        deadline = time.monotonic() + 30
        while not list((data / "wake").glob("*.sock")):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        other.post()
        try:
            await asyncio.wait_for(event.wait(), 20.0)
        except TimeoutError:
            return False
        return True

    try:
        assert asyncio.run(scenario())
    finally:
        api.begin_shutdown()
        api.close()
        other.close()
        served.close()


def test_memory_store_wakes_in_process() -> None:
    store = MemoryStore()
    store.register_agents([_spec()])
    seen = store.wakeups.current()
    store.emit("go", {})
    assert store.wakeups.wait(seen, 0) != seen
    store.close()


def test_a_post_reads_the_directory_only_when_it_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every commit posts: listing the directory each time cost four system calls a
    # commit; an unchanged directory (its mtime, older than a clock tick) is not read.
    directory = tmp_path / "wake"
    listener = SocketWakeups(directory)
    listener.wait(listener.current(), 0.01)  # makes its socket
    poster = SocketWakeups(directory)
    reads = []
    real = os.scandir

    def counted(path: Any) -> Any:
        reads.append(path)
        return real(path)

    monkeypatch.setattr(os, "scandir", counted)
    old = time.time_ns() - 10 * 10**9  # as if the socket was made ten seconds ago
    os.utime(directory, ns=(old, old))
    seen = listener.current()
    for _ in range(5):
        poster.post()
    assert len(reads) == 1
    assert listener.wait(seen, 5.0) != seen  # the listed socket is woken
    # A new socket changes the directory: the next post lists it again and wakes it.
    late = SocketWakeups(directory)
    late.wait(late.current(), 0.01)
    seen = late.current()
    poster.post()
    assert len(reads) == 2
    assert late.wait(seen, 5.0) != seen
    # Changed within the last tick of the file system's clock (here: an mtime a little
    # ahead of the clock, as a change in this tick may be): listed at every post.
    soon = time.time_ns() + 10 * 10**9 + 1
    os.utime(directory, ns=(soon, soon))
    poster.post()
    poster.post()
    assert len(reads) == 4
    # A change a second ago on a fine clock (not a whole second): listed once, then not.
    recent = time.time_ns() - 10**9
    recent += 1 if recent % 10**9 == 0 else 0
    os.utime(directory, ns=(recent, recent))
    poster.post()
    poster.post()
    assert len(reads) == 5
    # A whole-second mtime (a file system whose clock ticks in seconds): listed at every
    # post for two seconds after it.
    second = time.time_ns() // 10**9 * 10**9  # this whole second
    os.utime(directory, ns=(second, second))
    poster.post()
    poster.post()
    assert len(reads) == 7
    for each in (late, poster, listener):
        each.close()

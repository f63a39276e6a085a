"""What a step through the server adds to a local step, with the disk taken out.

``python -m bench.remote_overhead [--steps 100] [--reps 7]`` starts a server process
(the app of ``ironflow serve``) over an LmdbStore with fsync off, and drives the engine
through ``RemoteStore`` as ``remote_per_step_us`` does (``bench/_ironflow.py``); then
the same runs on a local LmdbStore with fsync off. Per step it prints the wall time of
each, their difference (the HTTP round trip and both ends' work for it), and the CPU
each process spent (per-thread run time from ``/proc``, so the server's kernel time and
thread hops count too). On a shared machine the fsync'd row swings with other tenants'
disk use; this one does not depend on the disk.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time


def _serve(data_dir: str) -> None:
    """The server process: serve an fsync-off LmdbStore on a free port, print the port."""
    from ironflow.server._app import make_app, start_site, stop_site
    from ironflow.store import LmdbStore

    store = LmdbStore(data_dir, sync=False)

    async def main() -> None:
        app, api = make_app(store)
        runner, port = await start_site(app, "127.0.0.1", 0)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        print(port, flush=True)
        await stop.wait()
        await stop_site(runner, api)

    try:
        asyncio.run(main())
    finally:
        store.close()


def _cpu(pid: int) -> float:
    """Seconds of CPU of every thread of ``pid`` (user and kernel)."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                total += int(f.read().split()[0])
        except OSError:
            pass  # a thread that ended meanwhile
    return total / 1e9


def _per_step(store: object, steps: int, reps: int, server: int | None) -> dict[str, float]:
    from bench import _ironflow as b

    me = b.this_worker("bench-overhead")
    b._direct_run(store, me, 1)  # type: ignore[arg-type]
    wall, client, served = [], [], []
    for _ in range(reps):
        c0, s0 = _cpu(os.getpid()), _cpu(server) if server else 0.0
        t_many = b._direct_run(store, me, steps)  # type: ignore[arg-type]
        c1, s1 = _cpu(os.getpid()), _cpu(server) if server else 0.0
        t_one = b._direct_run(store, me, 1)  # type: ignore[arg-type]
        c2, s2 = _cpu(os.getpid()), _cpu(server) if server else 0.0
        n = steps - 1
        wall.append((t_many - t_one) / n * 1e6)
        client.append(((c1 - c0) - (c2 - c1)) / n * 1e6)
        served.append(((s1 - s0) - (s2 - s1)) / n * 1e6)
    return {
        "wall": statistics.median(wall),
        "wall_min": min(wall),
        "wall_max": max(wall),
        "client_cpu": statistics.median(client),
        "server_cpu": statistics.median(served),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=100, help="steps of the long run")
    parser.add_argument("--reps", type=int, default=7, help="repetitions (median taken)")
    parser.add_argument("--serve", metavar="DATA_DIR", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        _serve(args.serve)
        return
    from bench import _ironflow as b
    from ironflow.store import RemoteStore

    work = tempfile.mkdtemp(prefix="bench-overhead-")
    server = subprocess.Popen(
        [sys.executable, "-m", "bench.remote_overhead", "--serve", os.path.join(work, "remote")],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        store = RemoteStore(f"http://127.0.0.1:{port}")
        try:
            store.register_agents(b._SPECS)
            remote = _per_step(store, args.steps, args.reps, server.pid)
        finally:
            store.close()
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    local_store = b._open(os.path.join(work, "local"), sync=False)
    try:
        local = _per_step(local_store, args.steps, args.reps, None)
    finally:
        local_store.close()
        b.cleanup(work)
    load = os.getloadavg()[0]
    print(f"fsync off, per step, median of {args.reps} (µs), load {load:.1f}, {time.ctime()}")
    print(
        f"  remote   wall {remote['wall']:,.0f} [{remote['wall_min']:,.0f}-"
        f"{remote['wall_max']:,.0f}]  client CPU {remote['client_cpu']:,.0f}  "
        f"server CPU {remote['server_cpu']:,.0f}"
    )
    print(
        f"  local    wall {local['wall']:,.0f} [{local['wall_min']:,.0f}-"
        f"{local['wall_max']:,.0f}]  CPU {local['client_cpu']:,.0f}"
    )
    print(f"  overhead {remote['wall'] - local['wall']:,.0f} a step")


if __name__ == "__main__":
    main()

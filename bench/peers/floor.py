"""Hardware floor: what one durable commit costs on this disk, without any framework."""

from __future__ import annotations

import os
import time

import lmdb

_VALUE = b"x" * 200
_MAP_SIZE = 1 << 30


def lmdb_sync_commit_us(path: str, n: int) -> list[float]:
    """Measure n single-put LMDB write transactions (sync + metasync), in µs each.

    This is the per-commit floor any LMDB-backed durable engine pays.
    """
    os.makedirs(path, exist_ok=True)
    env = lmdb.Environment(path, map_size=_MAP_SIZE, sync=True, metasync=True)
    out: list[float] = []
    try:
        for i in range(n):
            key = b"k%012d" % i
            t0 = time.perf_counter()
            with env.begin(write=True) as txn:
                txn.put(key, _VALUE)
            out.append((time.perf_counter() - t0) * 1e6)
    finally:
        env.close()
    return out


def fdatasync_us(path: str, n: int) -> list[float]:
    """Measure n appends of 200 bytes each followed by fdatasync, in µs each.

    Appending grows the file, so every fdatasync also has to persist the new
    size: that is the cheapest honest "make this record durable" on ext4.
    """
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    out: list[float] = []
    try:
        for _ in range(n):
            t0 = time.perf_counter()
            os.write(fd, _VALUE)
            os.fdatasync(fd)
            out.append((time.perf_counter() - t0) * 1e6)
    finally:
        os.close(fd)
    return out

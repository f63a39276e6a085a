"""Compaction of an LMDB data directory: give back the space pruning freed.

Why compaction is a copy. LMDB never shrinks its file; it reuses freed pages, so
under a steady workload with pruning the file stops growing, but it does not give
space back. ``compact`` writes a compacted copy with LMDB's own ``copy(compact=True)``,
checks it, and swaps it in with one atomic rename, holding the data directory's lock
file exclusively throughout, so it refuses to run while any process has it open.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lmdb

from ironflow.errors import StoreError, StoreLockedError

__all__ = ["compact"]


@contextlib.contextmanager
def _exclusive(path: Path) -> Iterator[int]:
    """Hold the data directory's lock file exclusively, or refuse: someone has it open.

    Every process with the LMDB environment open holds a shared lock on ``lock.mdb``,
    so an exclusive one is free only when nobody does.
    """
    fd = os.open(path / "lock.mdb", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 0)
        except OSError:
            raise StoreLockedError(
                f"the data directory {path} is in use by another process (a worker, the "
                "server or a command): stop it, then run `ironflow store compact` again"
            ) from None
        yield fd
    finally:
        os.close(fd)  # closing releases the lock


def _db_names(env: Any) -> list[bytes]:
    with env.begin() as txn:
        return [bytes(k) for k in txn.cursor().iternext(values=False)]


def _entries(env: Any, names: list[bytes]) -> dict[bytes, int]:
    out = {}
    with env.begin() as txn:
        for name in names:
            out[name] = txn.stat(env.open_db(name, txn=txn, create=False))["entries"]
    return out


def compact(path: str | os.PathLike[str]) -> tuple[int, int]:
    """Rewrite the data file without its free pages; return its size before and after.

    Refuses (:class:`~ironflow.errors.StoreLockedError`) while any process has the data
    directory open. The copy is checked (every database holds as many entries as the
    original) before it replaces the original in one atomic rename; a crash at any
    point leaves either the old file or the new one, both complete.
    """
    path = Path(path)
    data = path / "data.mdb"
    if not data.is_file():
        raise StoreError(f"no Ironflow data directory at {path}: there is no data.mdb to compact")
    scratch = path / ".compact"
    with _exclusive(path):
        before = data.stat().st_size
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir()
        try:
            # lock=False: our own exclusive lock already keeps everyone else out.
            source = lmdb.open(str(path), readonly=True, lock=False, max_dbs=256)
            try:
                names = _db_names(source)
                expected = _entries(source, names)
                source.copy(str(scratch), compact=True)
            finally:
                source.close()
            copy = lmdb.open(str(scratch), readonly=True, lock=False, max_dbs=256)
            try:
                found = _entries(copy, names)
            finally:
                copy.close()
            if found != expected:
                raise StoreError(
                    f"the compacted copy of {path} does not match the original; nothing was "
                    "replaced (the original is untouched)"
                )
            fd = os.open(scratch / "data.mdb", os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(scratch / "data.mdb", data)
            dir_fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
            # Opening it here, while this process holds the lock exclusively, makes LMDB
            # reset the lock file's state for the new data file before anyone else uses it.
            lmdb.open(str(path), max_dbs=256).close()
        except lmdb.Error as exc:
            raise StoreError(f"cannot compact {path}: {exc}; the original is untouched") from exc
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return before, data.stat().st_size

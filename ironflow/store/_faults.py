"""What the embedded store says when its data directory fails: one clear StoreError each.

LMDB reports trouble as ``lmdb.Error`` subclasses, some with nothing but an errno
(a full disk shows as ``ENOSPC``, or as ``EIO`` when a write came back short). Every
transaction of :class:`~ironflow.store._lmdb.LmdbBackend` translates them, so a
caller (the CLI, the server, a worker) only ever sees a
:class:`~ironflow.errors.StoreError` naming the directory and what to do.

What a failed write leaves behind: LMDB writes a transaction's pages, then its meta
page; only the meta page makes it visible. A commit that fails at any point leaves
the previous transaction as the current one, so every write acknowledged before is
intact and the failed one stored nothing. If the meta page write itself failed,
LMDB refuses the environment until it is opened again (``MDB_PANIC``): the message
then says to restart the process.
"""

from __future__ import annotations

import errno
from collections.abc import Collection
from pathlib import Path
from typing import Any

import lmdb

from ironflow.errors import StoreCorruptedError, StoreError, StoreFormatError, StoreLockedError

__all__ = ["check_ours", "storage_error"]

_FULL = ("No space left", "Input/output error", "File too large", "Disk quota")
_DENIED = ("Permission denied", "Read-only file system", "Not a directory", "Is a directory")
_DAMAGED = (
    lmdb.CorruptedError,
    lmdb.PageNotFoundError,
    lmdb.InvalidError,
    lmdb.BadTxnError,
)


def storage_error(path: Path, exc: BaseException) -> StoreError:
    """The StoreError to raise for an LMDB error on the data directory at ``path``."""
    text = str(exc)
    err = getattr(exc, "errno", None)
    if isinstance(exc, lmdb.DiskError) or err in (errno.ENOSPC, errno.EIO, errno.EFBIG):
        full = True
    else:
        full = any(word in text for word in _FULL)
    if full:
        return StoreError(
            f"cannot write to the data directory {path}: {text}. The disk (or this "
            "process's file size limit) is probably full: free space or move the data "
            "directory to a larger disk, then retry. The failed write stored nothing; "
            "everything written before it is intact"
        )
    if isinstance(exc, lmdb.PanicError):
        return StoreError(
            f"the data directory {path} refuses writes after a failed one ({text}): free "
            "disk space if it is full, then restart this process; everything written "
            "before the failure is intact"
        )
    if "already open in this process" in text:
        # LMDB allows one open environment per directory per process.
        return StoreLockedError(
            f"the data directory {path} is already open in this process, and it can be "
            "open only once per process: reuse what opened it (Client(store=worker.store), "
            "or the same Client or LmdbStore), or close that one first"
        )
    if isinstance(exc, _DAMAGED):
        return StoreCorruptedError(
            f"the data directory {path} is damaged or is not an Ironflow data directory "
            f"({text}). Restore it from a backup, or point --data-dir at a new directory"
        )
    if isinstance(exc, lmdb.VersionMismatchError | lmdb.IncompatibleError):
        return StoreFormatError(
            f"the data directory {path} was written by an incompatible LMDB ({text}); use "
            "the Ironflow version that wrote it, or point --data-dir at a new directory"
        )
    if (
        isinstance(exc, lmdb.ReadonlyError | lmdb.LockError)
        or err in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EISDIR)
        or any(word in text for word in _DENIED)
    ):
        return StoreLockedError(
            f"cannot use the data directory {path}: {text}. Check that this user may read "
            "and write it (and its lock.mdb and data.mdb), and that it is a directory"
        )
    return StoreError(f"the data directory {path} failed: {text}")


def check_ours(env: Any, path: Path, ours: Collection[str]) -> None:
    """Refuse an LMDB environment that holds another program's databases.

    An Ironflow directory keeps only named databases, ``meta`` among them; anything
    else in the main database means the directory belongs to someone else, and
    adding our databases to it would mix the two.
    """
    with env.begin() as txn:
        keys = {bytes(k) for k in txn.cursor().iternext(values=False)}
    if keys and b"meta" not in keys:
        shown = ", ".join(sorted(repr(k.decode(errors="replace"))[:40] for k in keys)[:5])
        raise StoreCorruptedError(
            f"the data directory {path} holds an LMDB database that is not Ironflow's "
            f"(it has {shown}); point --data-dir at a directory of its own"
        )

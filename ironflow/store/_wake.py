r"""Wake-ups: a write that may make work tells every process waiting on the same store.

Why: without them an idle worker in another process learns of a new run only at its
next poll (50 ms by default), and an emitter waiting for its run learns of the finish
only at its next look. With them, both react within a fraction of a millisecond.

One interface, :class:`Wakeups`, for every backend. Waiters in one process share one
wake-up channel: each thread remembers the generation it saw (:meth:`Wakeups.current`,
taken *before* it looks at the store) and :meth:`Wakeups.wait` returns as soon as the
generation moved on. A wake-up only says "look again": it carries nothing, so a spurious
one costs a look, and a lost one costs the caller's timeout (its poll interval), never
correctness.

- :class:`LocalWakeups`: one process (the memory backend, and the in-process half of
  the others).
- :class:`SocketWakeups` (LMDB): one unix datagram socket per waiting process in
  ``DATA_DIR/wake/``. A post sends one byte to each socket there, without blocking;
  a full socket already has a wake-up pending, and a socket nobody listens on (its
  process died) is removed by the first poster to find it so. A process that may not
  write there (another user) simply is not woken: it polls.
- PostgreSQL (``_pgbackend.py``): a commit that made work sends ``NOTIFY`` with it, and
  a thread of each store that ``LISTEN``\ s posts to its :class:`LocalWakeups`.
  :class:`ChannelWakeups` is the other way to fit a channel in: a broadcast and a
  blocking read, with one waiting thread reading for the whole process.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import select
import socket
import threading
import time
from pathlib import Path
from typing import Protocol

from ironflow._pure._ids import new_id

__all__ = ["ChannelWakeups", "LocalWakeups", "SocketWakeups", "Wakeups"]

log = logging.getLogger("ironflow.store")


class Wakeups(Protocol):
    """How a store tells its waiters, in this process and others, to look again."""

    def current(self) -> int:
        """The generation now: take it before looking, then wait for it to move on."""

    def post(self) -> None:
        """After a commit that may have made work: wake every waiter, here and elsewhere."""

    def wait(self, seen: int, timeout: float) -> int:
        """Block until the generation is past ``seen`` or ``timeout`` seconds pass.

        Returns the generation then. A wake-up may be spurious or (rarely) lost: callers
        look at the store after it either way, and wait again at most ``timeout``.
        """

    def close(self) -> None:
        """Stop listening and release what listening holds. Idempotent."""


class LocalWakeups:
    """Wake-ups within one process: a generation counter under a condition."""

    def __init__(self) -> None:
        self._cv = threading.Condition()
        self._gen = 0

    def current(self) -> int:
        return self._gen

    def post(self) -> None:
        with self._cv:
            self._gen += 1
            self._cv.notify_all()

    def wait(self, seen: int, timeout: float) -> int:
        with self._cv:
            if self._gen == seen and timeout > 0:
                self._cv.wait_for(lambda: self._gen != seen, timeout)
            return self._gen

    def close(self) -> None:
        self.post()  # no waiter stays parked on a closed store


class ChannelWakeups(LocalWakeups):
    """Wake-ups across processes through a channel a subclass provides.

    A subclass implements :meth:`_broadcast` (tell every listening process, itself
    included) and :meth:`_receive` (block until a message came or the time is up,
    consuming every message waiting). One waiting thread at a time reads the channel
    for the whole process and bumps the generation for the others.
    """

    def __init__(self) -> None:
        super().__init__()
        self._reading = False
        self._closed = False

    def post(self) -> None:
        super().post()
        if not self._closed:
            self._broadcast()

    def wait(self, seen: int, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        with self._cv:
            while self._gen == seen and not self._closed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                if self._reading:
                    self._cv.wait(remaining)
                    continue
                self._reading = True
                self._cv.release()
                try:
                    woken = self._receive(remaining)
                finally:
                    self._cv.acquire()
                    self._reading = False
                if woken:
                    self._gen += 1
                # Woken or not, another waiter may now take its turn at reading.
                self._cv.notify_all()
            return self._gen

    def close(self) -> None:
        self._closed = True
        super().close()

    def _broadcast(self) -> None:
        raise NotImplementedError

    def _receive(self, timeout: float) -> bool:
        raise NotImplementedError


#: How recent a change of the wake-up directory lists it again at every post: longer
#: than a tick of its file system's mtime clock (the kernel's coarse clock, a few ms; a
#: whole second where the mtime is one, as on the coarsest file systems).
_FRESH_NS = 50_000_000
_FRESH_COARSE_NS = 2_000_000_000
#: A unix socket address may hold about 107 bytes; longer paths go through /proc.
_MAX_ADDRESS = 100
_SUFFIX = ".sock"


class SocketWakeups(ChannelWakeups):
    """Cross-process wake-ups over unix datagram sockets in one directory.

    The socket of this process is made at its first :meth:`wait`, so a process that
    only writes (``ironflow emit``) never adds one; :meth:`close` removes it.
    """

    def __init__(self, directory: Path) -> None:
        super().__init__()
        self.directory = directory
        self._sock: socket.socket | None = None
        self._name: str | None = None
        self._sender: socket.socket | None = None
        self._dirfd: int | None = None
        self._usable = True
        self._lock = threading.Lock()
        #: The directory's mtime (ns) and the socket names listed at it.
        self._listed: tuple[int, list[str]] | None = None

    # -- addresses ---------------------------------------------------------------------

    def _open_dir(self) -> bool:
        if self._dirfd is not None:
            return True
        if not self._usable:
            return False
        try:
            self.directory.mkdir(exist_ok=True)
            self._dirfd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as exc:
            self._usable = False
            log.debug("no wake-ups in %s (%s): waiters poll", self.directory, exc)
            return False
        return True

    def _address(self, name: str) -> str:
        full = os.path.join(self.directory, name)
        if len(full) <= _MAX_ADDRESS or self._dirfd is None:
            return full
        # A long data directory path: reach the socket through our open directory.
        return f"/proc/self/fd/{self._dirfd}/{name}"

    # -- the channel ---------------------------------------------------------------------

    def _broadcast(self) -> None:
        with self._lock:
            if not self._open_dir():
                return
            if self._sender is None:
                self._sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._sender.setblocking(False)
            sender = self._sender
        names = self._names()
        for name in names:
            try:
                sender.sendto(b"!", self._address(name))
            except (BlockingIOError, InterruptedError):
                pass  # its buffer is full: a wake-up is already waiting there
            except OSError as exc:
                if exc.errno == errno.ECONNREFUSED and name != self._name:
                    # Nobody listens: its process died without removing it.
                    with contextlib.suppress(OSError):
                        os.unlink(os.path.join(self.directory, name))
                # ENOENT (removed meanwhile), EACCES (another user's): not woken, it polls.

    def _names(self) -> list[str]:
        """The sockets in the directory: listed again only when it changed (its mtime
        moved, or moved within the last ``_FRESH_NS``: a second change in the same
        tick of the file system's clock keeps the mtime), else the last listing. One
        ``fstat`` a post instead of a directory read."""
        dirfd = self._dirfd
        try:
            mtime = os.fstat(dirfd).st_mtime_ns if dirfd is not None else None
        except OSError:
            mtime = None
        cached = self._listed
        if cached is not None and mtime is not None and cached[0] == mtime:
            fresh = _FRESH_COARSE_NS if mtime % 1_000_000_000 == 0 else _FRESH_NS
            if time.time_ns() - mtime > fresh:
                return cached[1]
        try:
            names = [e.name for e in os.scandir(self.directory) if e.name.endswith(_SUFFIX)]
        except OSError:
            return []
        self._listed = None if mtime is None else (mtime, names)
        return names

    def _listening(self) -> socket.socket | None:
        with self._lock:
            if self._sock is not None or self._closed:
                return self._sock
            if not self._open_dir():
                return None
            name = f"{os.getpid()}-{new_id()}{_SUFFIX}"
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            try:
                sock.bind(self._address(name))
            except OSError as exc:
                sock.close()
                self._usable = False
                log.debug("cannot listen for wake-ups in %s (%s): polling", self.directory, exc)
                return None
            sock.setblocking(False)
            self._sock, self._name = sock, name
            return sock

    def _receive(self, timeout: float) -> bool:
        sock = self._listening()
        if sock is None:
            time.sleep(timeout)  # no channel here: the caller's poll is all there is
            return False
        try:
            ready, _, _ = select.select([sock], [], [], timeout)
        except (OSError, ValueError):
            return False  # closed meanwhile
        if not ready:
            return False
        try:
            while True:
                sock.recv(16)
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            pass
        return True

    def close(self) -> None:
        super().close()
        with self._lock:
            if self._sock is not None:
                # Tell our own reader to stop waiting, then remove the socket.
                if self._sender is not None and self._name is not None:
                    with contextlib.suppress(OSError):
                        self._sender.sendto(b"!", self._address(self._name))
                if self._name is not None:
                    with contextlib.suppress(OSError):
                        os.unlink(os.path.join(self.directory, self._name))
                self._sock.close()
                self._sock = None
            if self._sender is not None:
                self._sender.close()
                self._sender = None
            if self._dirfd is not None:
                os.close(self._dirfd)
                self._dirfd = None

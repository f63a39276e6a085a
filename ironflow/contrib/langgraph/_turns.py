"""A LangGraph thread's appends, in turns, and a node's writes with its checkpoint in one commit.

LangGraph saves a task's writes on its executor, then puts the next checkpoint a few
hundred µs later while the writes are still being saved: two appends to one stream.
Side by side they raced (on PostgreSQL both read the stream's head and the log's end,
one failed serialization and ran again after a backoff); one after the other they cost
two durable commits a node. So a thread's appends queue, and one caller at a time
appends everything queued (in one transaction when the store can): a task's writes wait
up to ``GATHER_S`` for the checkpoint to join them, and every caller returns only once
its own append is durable. Where no checkpoint came in time, the thread's writes stop
waiting until a checkpoint again finds writes still queued or being saved. Other
threads never wait.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from ironflow.store import Event

__all__ = ["GATHER_S", "Pending", "Turns"]

#: How long a task's writes wait for the checkpoint LangGraph puts after them, to share
#: its commit (measured: LangGraph puts it 30 µs to 1 ms after the writes).
GATHER_S = 0.003


class Pending:
    """One append waiting in a thread's queue, then its answer."""

    __slots__ = ("after", "data", "done", "error", "event", "key", "name")

    def __init__(self, name: str, data: dict[str, Any], key: str, after: str | None = None) -> None:
        self.name = name
        self.data = data
        #: The append's idempotency key.
        self.key = key
        #: The checkpoint it follows: writes' own, a checkpoint's parent (None: neither).
        self.after = after
        self.done = False
        self.event: Event | None = None
        self.error: Exception | None = None


#: How many threads a saver remembers writes waiting in vain, or a last checkpoint, for.
_IN_VAIN_KEPT = 1024


class _Queue:
    __slots__ = ("busy", "items")

    def __init__(self) -> None:
        self.items: list[Pending] = []
        #: A caller is appending a batch of this thread's items now.
        self.busy = False


class Turns:
    """Queues of appends per thread; see the module docstring.

    ``commit(thread, items)`` appends the items in order and sets each one's ``event``
    or ``error``; ``waits`` names the appends that wait for one named ``ends_wait``
    (``batches``: only where the store can take both in one transaction).
    """

    def __init__(
        self,
        commit: Callable[[str, list[Pending]], None],
        *,
        waits: str,
        ends_wait: str,
        batches: bool,
    ) -> None:
        self._commit = commit
        self._waits = waits if batches else None
        self._ends_wait = ends_wait
        self._cv = threading.Condition()
        self._queues: dict[str, _Queue] = {}
        #: Threads whose writes waited in vain (a graph whose checkpoint waits for its
        #: writes first, as LangGraph's for a delta channel): their writes wait no more,
        #: until a checkpoint again finds writes queued or being saved. Bounded: a hint.
        self._in_vain: OrderedDict[str, None] = OrderedDict()
        #: Per thread, the ``after`` of its last checkpoint queued (bounded as above):
        #: writes whose checkpoint was put already (the executor ran the put first) have
        #: nothing to wait for.
        self._put_after: OrderedDict[str, str | None] = OrderedDict()

    def append(self, thread: str, item: Pending) -> Event:
        """Append ``item`` to the thread's stream in its turn; its event once durable."""
        with self._cv:
            queue = self._queues.get(thread)
            if queue is None:
                queue = self._queues[thread] = _Queue()
            if item.name == self._ends_wait:
                if queue.busy or queue.items:
                    self._in_vain.pop(thread, None)  # writes still being saved: worth a wait
                _remember(self._put_after, thread, item.after)
                # Writes gathering for it are not woken: a queue not busy is taken whole
                # by this caller below, a busy one by whoever is woken when it is free.
                # Woken now, they would only wait again (a wake-up, and a turn of the
                # GIL taken from this commit, every node).
            queue.items.append(item)
            waits = (
                item.name == self._waits
                and thread not in self._in_vain
                and (item.after is None or self._put_after.get(thread, None) != item.after)
            )
            if waits and not self._gather(queue, item):
                _remember(self._in_vain, thread, None)
            while queue.busy and not item.done:
                self._cv.wait()
            if item.done:
                return _answer(item)
            queue.busy = True
            batch, queue.items = queue.items, []
        try:
            self._commit(thread, batch)
        finally:
            with self._cv:
                for each in batch:
                    each.done = True
                    if each.event is None and each.error is None:
                        each.error = RuntimeError("the append was interrupted")
                queue.busy = False
                if not queue.items:
                    self._queues.pop(thread, None)
                self._cv.notify_all()
        return _answer(item)

    def _gather(self, queue: _Queue, item: Pending) -> bool:
        """Wait (the condition held) until a checkpoint is queued after ``item``, another
        caller took it, or ``GATHER_S`` passed; False if the time passed."""
        deadline = time.monotonic() + GATHER_S
        while not item.done and not queue.busy:
            if any(each.name == self._ends_wait for each in queue.items):
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._cv.wait(left)
        return True


def _remember(kept: OrderedDict[str, Any], thread: str, value: Any) -> None:
    kept[thread] = value
    kept.move_to_end(thread)
    while len(kept) > _IN_VAIN_KEPT:
        kept.popitem(last=False)


def _answer(item: Pending) -> Event:
    if item.error is not None:
        raise item.error
    assert item.event is not None
    return item.event

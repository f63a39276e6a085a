"""The saver's turns (``contrib/langgraph/_turns.py``): a thread's appends one batch at a
time, writes waiting for the checkpoint after them, every caller hearing its own answer.

Driven with a commit function that records each batch (the store is the saver tests'
business); the waits are bounded by 30 s, and no assertion depends on how fast the host
runs the threads.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

pytest.importorskip("langgraph.checkpoint.base")

from ironflow.contrib.langgraph import _turns
from ironflow.contrib.langgraph._turns import Pending, Turns
from ironflow.errors import StoreError
from ironflow.store import Event


class Recorder:
    """A commit that records each batch's names and answers each item (or fails them)."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.fail: Exception | None = None
        self.entered = threading.Event()
        #: The threads whose batch a commit began, in order.
        self.began: list[str] = []
        self.release = threading.Event()
        self.release.set()
        self.turns = Turns(self, waits="w", ends_wait="c", batches=True)

    def __call__(self, thread: str, items: list[Pending]) -> None:
        self.began.append(thread)
        self.entered.set()
        assert self.release.wait(30)
        self.batches.append([item.name for item in items])
        for n, item in enumerate(items):
            if self.fail is not None:
                item.error = self.fail
            else:
                item.event = Event(id=f"e{len(self.batches)}.{n}", name=item.name, data={}, ts=0.0)

    def append(self, name: str, thread: str = "t", after: str | None = None) -> Event:
        return self.turns.append(thread, Pending(name, {}, name, after))

    def in_background(
        self, name: str, thread: str = "t", after: str | None = None
    ) -> tuple[threading.Thread, list[Any]]:
        out: list[Any] = []

        def run() -> None:
            try:
                out.append(self.append(name, thread, after))
            except Exception as exc:
                out.append(exc)

        t = threading.Thread(target=run)
        t.start()
        return t, out

    def queued(self, thread: str = "t", count: int = 1) -> None:
        """Wait until ``count`` items are queued for the thread (not yet taken)."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with self.turns._cv:
                queue = self.turns._queues.get(thread)
                if queue is not None and len(queue.items) >= count:
                    return
            time.sleep(0.001)
        raise AssertionError("the item was never queued")


def test_writes_wait_for_the_checkpoint_and_share_its_batch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_turns, "GATHER_S", 30.0)
    rec = Recorder()
    writes, answer = rec.in_background("w")
    rec.queued()
    assert rec.batches == []  # still waiting for its checkpoint
    checkpoint = rec.append("c")
    writes.join(30)
    assert rec.batches == [["w", "c"]]
    assert checkpoint.id == "e1.1" and answer[0].id == "e1.0"
    assert rec.turns._queues == {}


class CountingCondition(threading.Condition):
    """A condition that counts, per thread name, the waits that returned."""

    def __init__(self) -> None:
        super().__init__()
        self.woken: dict[str, int] = {}

    def wait(self, timeout: float | None = None) -> bool:
        got = super().wait(timeout)
        name = threading.current_thread().name
        self.woken[name] = self.woken.get(name, 0) + 1
        return got


def test_gathering_writes_are_woken_once_when_their_batch_is_saved(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The checkpoint's caller takes the gathering writes into its own batch without
    waking them: they would only wait again (a wake-up, and a turn of the GIL taken from
    the commit, every node). Woken once, when their answer is there."""
    monkeypatch.setattr(_turns, "GATHER_S", 30.0)
    rec = Recorder()
    cv = rec.turns._cv = CountingCondition()
    rec.release.clear()
    writes, answer = rec.in_background("w")
    writes.name = "writes"
    rec.queued()
    checkpoint, _ = rec.in_background("c")
    assert rec.entered.wait(30)  # the checkpoint's caller is saving the batch
    # Time for a wake-up to happen, if one was sent (none should be).
    time.sleep(0.2)
    assert cv.woken.get("writes", 0) == 0
    rec.release.set()
    writes.join(30)
    checkpoint.join(30)
    assert rec.batches == [["w", "c"]] and answer[0].id == "e1.0"
    assert cv.woken["writes"] == 1


def test_writes_that_waited_in_vain_stop_waiting_until_a_checkpoint_finds_writes_in_flight(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_turns, "GATHER_S", 0.01)
    rec = Recorder()
    rec.append("w")  # no checkpoint came: alone, after the wait
    assert rec.batches == [["w"]] and "t" in rec.turns._in_vain
    monkeypatch.setattr(_turns, "GATHER_S", 30.0)
    # No wait now (it would be 30 s): the writes are taken at once, and a checkpoint
    # that finds them being saved turns the waiting back on.
    rec.release.clear()
    rec.entered.clear()
    writes, _ = rec.in_background("w")
    assert rec.entered.wait(30)
    checkpoint, _ = rec.in_background("c")
    rec.queued()
    assert "t" not in rec.turns._in_vain
    rec.release.set()
    writes.join(30)
    checkpoint.join(30)
    assert rec.batches == [["w"], ["w"], ["c"]]
    # Waiting again: the next writes go with the next checkpoint.
    writes, _ = rec.in_background("w")
    rec.queued()
    rec.append("c")
    writes.join(30)
    assert rec.batches[-1] == ["w", "c"]


def test_writes_whose_checkpoint_was_put_first_do_not_wait(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """LangGraph's executor may run a node's put before that node's writes: the writes
    then have no checkpoint to wait for (they would wait in vain, every time)."""
    monkeypatch.setattr(_turns, "GATHER_S", 2.0)
    rec = Recorder()
    rec.append("c", after="cp1")  # the put of the checkpoint after cp1
    rec.append("w", after="cp1")  # the writes of cp1's task: its checkpoint is put
    assert rec.batches == [["c"], ["w"]]
    assert "t" not in rec.turns._in_vain  # it did not wait
    # The next node's writes (against the new checkpoint) wait for its put as usual.
    writes, _ = rec.in_background("w", after="cp2")
    rec.queued()
    rec.append("c", after="cp2")
    writes.join(30)
    assert rec.batches[-1] == ["w", "c"]


def test_a_failed_batch_raises_in_each_of_its_callers_and_the_next_turn_works(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_turns, "GATHER_S", 30.0)
    rec = Recorder()
    rec.fail = StoreError("the disk is gone")
    writes, answer = rec.in_background("w")
    rec.queued()
    with pytest.raises(StoreError, match="disk is gone"):
        rec.append("c")
    writes.join(30)
    assert isinstance(answer[0], StoreError)
    rec.fail = None
    assert rec.append("c").name == "c"
    assert rec.batches == [["w", "c"], ["c"]]


def test_other_threads_never_wait_for_a_thread_s_turn() -> None:
    rec = Recorder()
    rec.release.clear()
    busy, _ = rec.in_background("c", "one")
    assert rec.entered.wait(30)
    other, answer = rec.in_background("c", "two")
    deadline = time.monotonic() + 30
    while "two" not in rec.began and time.monotonic() < deadline:
        time.sleep(0.001)
    # Thread two's batch began while thread one's was still being committed.
    assert rec.began == ["one", "two"] and rec.batches == []
    rec.release.set()
    busy.join(30)
    other.join(30)
    assert rec.batches == [["c"], ["c"]] and answer[0].name == "c"

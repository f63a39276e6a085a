"""The backend interface: each backend keeps its contract (``store/_backend.py``).

Scans walk keys in unsigned-byte order, by prefix, from a start key, either way; a
write op applies whole or leaves nothing, also inside an LMDB group commit where it
shares one transaction with others, and inside PostgreSQL's serializable transactions.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from ironflow.store._backend import Backend, WriteTxn, prefix_end
from ironflow.store._lmdb import LmdbBackend
from ironflow.store._memory import MemoryBackend
from ironflow.store._pgbackend import PostgresBackend
from tests.support.postgres import fresh_database, release_database


def _opened(name: str, tmp: Path) -> tuple[Backend, Callable[[], None]]:
    """A fresh backend of the kind named, and how to close it."""
    if name == "memory":
        memory = MemoryBackend()
        return memory, memory.close
    if name == "lmdb":
        lmdb = LmdbBackend(tmp / "d", sync=False)
        return lmdb, lmdb.close
    url = fresh_database()
    pg = PostgresBackend(url, listen=False)

    def close() -> None:
        pg.close()
        release_database(url)

    return pg, close


KINDS = ["memory", "lmdb", "postgres"]


@pytest.fixture(params=KINDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    opened, close = _opened(request.param, tmp_path)
    yield opened
    close()


_BYTE = st.sampled_from([0x00, 0x01, 0x7F, 0x80, 0xFE, 0xFF])
_KEYS = st.lists(_BYTE, min_size=1, max_size=4).map(bytes)


def _expected(keys: set[bytes], prefix: bytes, start: bytes | None, reverse: bool) -> list[bytes]:
    chosen = sorted(k for k in keys if k.startswith(prefix))
    if start is not None:
        chosen = [k for k in chosen if (k <= start if reverse else k >= start)]
    return chosen[::-1] if reverse else chosen


@given(
    keys=st.sets(_KEYS, max_size=30),
    prefix=st.lists(_BYTE, max_size=2).map(bytes),
    start=st.none() | _KEYS,
    reverse=st.booleans(),
)
def test_scans_walk_keys_in_byte_order(
    keys: set[bytes], prefix: bytes, start: bytes | None, reverse: bool
) -> None:
    """Every backend's scan gives exactly the keys a sorted list would, either way."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        for kind in KINDS:
            backend, close = _opened(kind, Path(tmp))
            try:

                def fill(txn: WriteTxn) -> None:
                    for key in keys:
                        txn.put("runs", key, b"v" + key)

                backend.write(fill)
                with backend.read() as txn:
                    found = list(txn.scan("runs", prefix=prefix, start=start, reverse=reverse))
                    assert txn.count("runs") == len(keys)
                assert [k for k, _ in found] == _expected(keys, prefix, start, reverse)
                assert all(v == b"v" + k for k, v in found)
            finally:
                close()


def test_prefix_end() -> None:
    """The first key past a prefix; none past all-0xff."""
    assert prefix_end(b"ab") == b"ac"
    assert prefix_end(b"a\xff") == b"b"
    assert prefix_end(b"\xff\xff") is None
    assert prefix_end(b"") is None


def test_insert_delete_and_claim(backend: Backend) -> None:
    """insert writes only a new key; delete says whether it removed one; claim takes in order."""

    def op(txn: WriteTxn) -> list[Any]:
        out: list[Any] = [txn.insert("ready", b"a", b"1"), txn.insert("ready", b"a", b"2")]
        txn.put("ready", b"c", b"3")
        txn.put("ready", b"b", b"2")
        out.append(txn.claim("ready", accept=lambda k, v: k != b"b", limit=5))
        out.append(txn.claim("ready", accept=lambda k, v: True, limit=1))
        out += [txn.delete("ready", b"a"), txn.delete("ready", b"a")]
        return out

    assert backend.write(op) == [
        True,
        False,
        [(b"a", b"1"), (b"c", b"3")],
        [(b"a", b"1")],
        True,
        False,
    ]
    with backend.read() as txn:
        assert list(txn.scan("ready")) == [(b"b", b"2"), (b"c", b"3")]


def test_get_many_and_add(backend: Backend) -> None:
    """get_many answers each (table, key) in order, None where absent, across tables (a
    run-scoped one too) and seeing this transaction's own writes; add writes only a new
    key, with no answer, and a later read of the same transaction sees it."""

    def op(txn: WriteTxn) -> list[Any]:
        txn.put("leases", b"run_a", b"lease")
        txn.add("steps", b"run_a\x00\x00\x00\x00\x01", b"first")
        txn.add("steps", b"run_a\x00\x00\x00\x00\x01", b"second")  # kept: first
        txn.add("paused", b"run_a", b"")
        return txn.get_many(
            (
                ("leases", b"run_a"),
                ("cancels", b"run_a"),
                ("paused", b"run_a"),
                ("steps", b"run_a\x00\x00\x00\x00\x01"),
                ("leases", b"run_b"),
                ("leases", b"run_a"),
            )
        )

    assert backend.write(op) == [b"lease", None, b"", b"first", None, b"lease"]
    with backend.read() as txn:
        assert txn.get_many(()) == []
        assert txn.get_many((("paused", b"run_a"), ("runs", b"run_a"))) == [b"", None]
        assert list(txn.scan("steps")) == [(b"run_a\x00\x00\x00\x00\x01", b"first")]


def test_an_op_that_raises_after_adding_leaves_nothing(backend: Backend) -> None:
    """A write that waits for no answer (add) is undone with the op that raised."""

    def op(txn: WriteTxn) -> None:
        txn.add("steps", b"run_a\x00\x00\x00\x00\x01", b"x")
        raise ValueError("failed after an add")

    with pytest.raises(ValueError, match="after an add"):
        backend.write(op)
    with backend.read() as txn:
        assert list(txn.scan("steps")) == []


def _half_then_fail(txn: WriteTxn) -> None:
    txn.put("runs", b"half", b"written")
    txn.delete("runs", b"kept")
    raise ValueError("failed after a partial write")


def test_an_op_that_raises_after_writing_leaves_nothing(backend: Backend) -> None:
    """A write op that fails halfway commits none of its writes (issue 12, item 2)."""
    backend.write(lambda txn: txn.put("runs", b"kept", b"1"))
    with pytest.raises(ValueError, match="partial write"):
        backend.write(_half_then_fail)
    with backend.read() as txn:
        assert list(txn.scan("runs")) == [(b"kept", b"1")]


def test_a_failing_op_in_a_group_commit_leaves_nothing_and_the_others_commit(
    tmp_path: Path,
) -> None:
    """Ops batched into one LMDB transaction: the failing one leaves nothing, the rest commit.

    The first op holds the committer while two more queue behind it, so those two are
    applied together, in one transaction: the case release 1 got wrong (issue 12, 2).
    """
    backend = LmdbBackend(tmp_path / "d", sync=False)
    try:
        backend.write(lambda txn: txn.put("runs", b"kept", b"1"))
        entered, release = threading.Event(), threading.Event()

        def hold(txn: WriteTxn) -> None:
            entered.set()
            assert release.wait(30)
            txn.put("runs", b"first", b"1")

        errors: list[BaseException] = []

        def submit(op: Any) -> None:
            try:
                backend.write(op)
            except BaseException as exc:
                errors.append(exc)

        leader = threading.Thread(target=submit, args=(hold,))
        leader.start()
        assert entered.wait(30)
        queued = [
            threading.Thread(target=submit, args=(_half_then_fail,)),
            threading.Thread(target=submit, args=(lambda txn: txn.put("runs", b"other", b"1"),)),
        ]
        for thread in queued:
            thread.start()
        # Both are queued behind the leader before it lets go (the queue is the batch).
        committer: Any = backend._committer
        for _ in range(3000):
            with committer._cv:
                if len(committer._queue) == 2:
                    break
            threading.Event().wait(0.01)
        release.set()
        for thread in (leader, *queued):
            thread.join(30)
        assert [type(e) for e in errors] == [ValueError]
        with backend.read() as txn:
            assert [k for k, _ in txn.scan("runs")] == [b"first", b"kept", b"other"]
    finally:
        backend.close()


def test_a_reverse_scan_from_the_key_just_past_a_prefix_stays_inside_it(backend: Backend) -> None:
    """Reverse from ``start == prefix_end(prefix)``: that key does not have the prefix."""
    backend.write(lambda txn: txn.put("runs", b"\x80", b"v"))
    with backend.read() as txn:
        assert list(txn.scan("runs", prefix=b"\x7f", start=b"\x80", reverse=True)) == []


def test_last_key_is_the_first_key_of_a_reverse_scan(backend: Backend) -> None:
    """``last_key`` answers as the plain reverse scan does, on every backend: in a read,
    and in a write after its own puts and deletes (before and after a prefetch)."""
    prefixes = [b"", b"\x00", b"\x01", b"\x01\x02", b"\x7f", b"\xff", b"\xff\xff", b"\x02"]
    keys = [b"\x00", b"\x00\xff", b"\x01", b"\x01\x02\x03", b"\x01\xff", b"\xff", b"\xff\x00"]

    def plain(txn: Any, prefix: bytes) -> bytes | None:
        return next((k for k, _ in txn.scan("events", prefix=prefix, reverse=True)), None)

    def answers(txn: Any) -> list[tuple[bytes | None, bytes | None]]:
        return [(txn.last_key("events", p), plain(txn, p)) for p in prefixes]

    def fill(txn: WriteTxn) -> None:
        for key in keys:
            txn.put("events", key, b"v")

    backend.write(fill)
    with backend.read() as txn:
        assert all(last == scanned for last, scanned in answers(txn))
        assert txn.last_key("events") == b"\xff\x00"
        assert txn.last_key("events", b"\x01") == b"\x01\xff"
        assert txn.last_key("events", b"\x02") is None

    def moved(txn: WriteTxn) -> list[list[tuple[bytes | None, bytes | None]]]:
        txn.prefetch(lasts=[("events", p) for p in prefixes[:4]])
        seen = [answers(txn)]
        txn.delete("events", b"\x01\xff")  # the last of b"\x01": the one before it next
        txn.discard("events", b"\xff\x00")
        txn.add("events", b"\x01\x02\xff", b"v")
        seen.append(answers(txn))
        txn.put("events", b"\xff\xff\x01", b"v")  # a new last of everything
        txn.delete("events", b"\x00")
        txn.delete("events", b"\x00\xff")  # b"\x00" now empty
        seen.append(answers(txn))
        return seen

    for seen in backend.write(moved):
        assert all(last == scanned for last, scanned in seen), seen
    with backend.read() as txn:
        assert txn.last_key("events") == b"\xff\xff\x01"
        assert txn.last_key("events", b"\x01") == b"\x01\x02\xff"
        assert txn.last_key("events", b"\x00") is None


_SCAN = st.tuples(st.lists(_BYTE, max_size=2).map(bytes), st.none() | _KEYS, st.booleans())
_PREFIX = st.lists(_BYTE, max_size=2).map(bytes)
_ACTIONS = st.lists(
    st.tuples(
        st.just("prefetch"),
        st.tuples(
            st.lists(_KEYS, max_size=4),
            st.lists(st.tuples(_PREFIX, st.booleans()), max_size=3),
            st.lists(_PREFIX, max_size=2),
        ),
    )
    | st.tuples(st.sampled_from(["put", "insert", "add", "delete", "discard"]), _KEYS)
    | st.tuples(st.just("get"), _KEYS)
    | st.tuples(st.just("last"), _PREFIX)
    | st.tuples(st.just("scan"), _SCAN),
    max_size=16,
)


@given(keys=st.sets(_KEYS, max_size=40), actions=_ACTIONS)
# A write after a prefetch was sent and before its answer was read.
@example(
    keys={b"\x00"},
    actions=[("prefetch", ([b"\x00"], [], [])), ("put", b"\x00"), ("get", b"\x00")],
)
# Two ranges holding one key: a write applies to both.
@example(
    keys=set(),
    actions=[
        ("prefetch", ([b"\x00"], [(b"", False)], [])),
        ("put", b"\x00"),
        ("scan", (b"", None, False)),
    ],
)
# A row written twice with no read between: sent in order, not as one statement.
@example(keys=set(), actions=[("put", b"\x00"), ("add", b"\x00")])
# A queued write inside a prefetch's range is sent before the prefetch reads it.
@example(
    keys={b"\x00"},
    actions=[("discard", b"\x00"), ("prefetch", ([b"\x00"], [], [])), ("get", b"\x00")],
)
# One row written three times, with reads of it and of others between.
@example(
    keys={b"\x01"},
    actions=[
        ("put", b"\x00"),
        ("get", b"\x01"),
        ("discard", b"\x00"),
        ("scan", (b"\x01", None, False)),
        ("add", b"\x00"),
        ("put", b"\x02"),
        ("insert", b"\x02"),
        ("last", b""),
    ],
)
# The last key deleted after it was read: the one before it is asked for.
@example(
    keys={b"\x00", b"\x01"},
    actions=[("prefetch", ([], [], [b""])), ("delete", b"\x01"), ("last", b"")],
)
def test_reads_after_a_prefetch_answer_as_without_it(
    keys: set[bytes], actions: list[tuple[str, Any]]
) -> None:
    """What a prefetch reads is kept and answers later gets and scans (PostgreSQL), and
    its answer is read only when needed, so writes may come between: every answer is the
    table's with the transaction's own writes, over ranges read whole, cut by a full
    first page, or only partly covered, whatever the order of prefetches and writes; and
    a last key, read by a prefetch or alone, is the table's with the writes since; and
    what is committed is the model's."""
    from ironflow.store._backend import Scan

    model = {k: b"v" + k for k in keys}
    expected: list[Any] = []
    for i, (kind, arg) in enumerate(actions):
        value = b"w%d" % i
        if kind in ("put", "insert", "add"):
            if kind == "put" or arg not in model:
                model[arg] = value
            if kind == "insert":
                expected.append(model[arg] == value)
        elif kind in ("delete", "discard"):
            found = model.pop(arg, None) is not None
            if kind == "delete":
                expected.append(found)
        elif kind == "get":
            expected.append(model.get(arg))
        elif kind == "last":
            expected.append(max((k for k in model if k.startswith(arg)), default=None))
        elif kind == "scan":
            prefix, start, reverse = arg
            expected.append([(k, model[k]) for k in _expected(set(model), prefix, start, reverse)])

    url = fresh_database()
    pg = PostgresBackend(url, listen=False)
    try:

        def fill(txn: WriteTxn) -> None:
            for key in keys:
                txn.put("runs", key, b"v" + key)

        pg.write(fill)

        def op(txn: WriteTxn) -> list[Any]:
            out: list[Any] = []
            for i, (kind, arg) in enumerate(actions):
                value = b"w%d" % i
                if kind == "prefetch":
                    gets, scans, lasts = arg
                    txn.prefetch(
                        gets=[("runs", k) for k in gets],
                        scans=[Scan("runs", prefix, reverse) for prefix, reverse in scans],
                        lasts=[("runs", prefix) for prefix in lasts],
                    )
                elif kind in ("put", "add"):
                    getattr(txn, kind)("runs", arg, value)
                elif kind == "insert":
                    out.append(txn.insert("runs", arg, value))
                elif kind == "discard":
                    txn.discard("runs", arg)
                elif kind == "delete":
                    out.append(txn.delete("runs", arg))
                elif kind == "get":
                    out.append(txn.get("runs", arg))
                elif kind == "last":
                    out.append(txn.last_key("runs", arg))
                else:
                    prefix, start, reverse = arg
                    out.append(list(txn.scan("runs", prefix=prefix, start=start, reverse=reverse)))
            return out

        assert pg.write(op) == expected
        # What it wrote landed, each row as its last write left it (writes are queued and
        # sent together, with a row written twice sent in order).
        with pg.read() as txn:
            assert dict(txn.scan("runs")) == model
    finally:
        pg.close()
        release_database(url)

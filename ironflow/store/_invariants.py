"""``check_valid``: the invariants every backend's data must hold, written once.

Tests call it after every rule of their state machines (the agreement test after each
operation on each backend). A failure names the table and the key that break the
invariant, so a bug in a rule shows up at the operation that caused it.
"""

from __future__ import annotations

from ironflow.store._backend import ReadTxn
from ironflow.store._codec import decode_record
from ironflow.store._records import FINISHED, SUSPENDED, Event, Lease, Run
from ironflow.store._waits import index_keys

__all__ = ["check_valid"]


def check_valid(txn: ReadTxn) -> None:
    """Assert the indexes agree with the runs, and the streams with the log."""
    runs = {key: decode_record(raw, Run) for key, raw in txn.scan("runs")}
    for key, agent in txn.scan("ready"):
        run = runs.get(key)
        assert run is not None, f"ready: {key!r} names no run"
        assert run.status in ("pending", "queued"), f"ready run {key!r}: {run.status}"
        assert run.agent.encode() == agent, f"ready: {key!r} under agent {agent!r}"
    leased = {key: decode_record(raw, Lease) for key, raw in txn.scan("leases")}
    for key, lease in leased.items():
        run = runs.get(key)
        assert run is not None, f"leases: {key!r} names no run"
        assert run.status == "running", f"leased run {key!r} has status {run.status}"
        # A lease tells its run's requests as the tables hold them (_runs._request);
        # None: written before leases told them.
        for told, table in ((lease.cancel_requested, "cancels"), (lease.pause_requested, "paused")):
            if told is not None:
                held = txn.get(table, key) is not None
                assert told == held, f"lease of {key!r} says {table} {told}, the table {held}"
    # A suspended run has exactly the timer and wait its suspension names, and every
    # timer and wait belongs to a suspended run.
    expected: dict[str, set[bytes]] = {"timers": set(), "waits": set()}
    for key, run in runs.items():
        if run.status == "running":
            assert key in leased, f"running run {key!r} holds no lease"
        if run.status == "pending":
            assert txn.get("ready", key) is not None, f"pending run {key!r} is not ready"
        if run.status in FINISHED:
            assert key not in leased, f"finished run {key!r} is leased"
            assert txn.get("ready", key) is None, f"finished run {key!r} is ready"
        if run.status in SUSPENDED:
            assert run.suspension is not None, f"suspended run {key!r} has no suspension"
            assert key not in leased, f"suspended run {key!r} is leased"
            assert txn.get("ready", key) is None, f"suspended run {key!r} is ready"
            timer, wait = index_keys(run.id, run.suspension)
            for table, index_key in (("timers", timer), ("waits", wait)):
                if index_key is not None:
                    expected[table].add(index_key)
    for table, keys in expected.items():
        found = {k for k, _ in txn.scan(table)}
        assert found == keys, f"{table}: stray {found - keys}, missing {keys - found}"
    for key, _ in txn.scan("steps"):
        assert key[:-5] in runs, f"steps: {key!r} belongs to no run"
    # Each stream's entries are versions up to its head (1..head unless some were
    # deleted), each naming its event in the log; a stream with none has no head.
    heads: dict[bytes, int] = {}
    for key, seq in txn.scan("streams"):
        stream, version = key[:-9], int.from_bytes(key[-8:], "big")
        assert version > heads.get(stream, 0), f"stream {stream!r} repeats {version}"
        heads[stream] = version
        raw = txn.get("events", seq)
        assert raw is not None, f"stream {stream!r} version {version}: no event {seq!r}"
        event = decode_record(raw, Event)
        assert (event.stream, event.version) == (stream.decode(), version), event
    for key, head in txn.scan("stream_heads"):
        assert heads.get(key, 0) >= 1, f"stream {key!r} has a head but no events"
        assert heads[key] <= int.from_bytes(head, "big"), f"stream {key!r} head"
    assert len(heads) == txn.count("stream_heads")

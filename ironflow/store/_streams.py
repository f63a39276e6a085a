"""Entity streams: the rules that append events to a stream and delete them.

Appending goes through ``_runs.append_event`` (a stream event enters the log like any
other, starting the runs it triggers); several appends to one stream can share one
transaction (:func:`append_many`, one commit for them all). Deleting (what the
LangGraph saver needs to prune checkpoints) takes events out of the stream and the log
in one transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs

from ironflow._pure._trace import TraceContext
from ironflow.errors import ConcurrencyError
from ironflow.store._backend import WriteTxn
from ironflow.store._codec import decode_record, encode_record
from ironflow.store._flowctl import FlowControl
from ironflow.store._keys import stream_key, u64
from ironflow.store._records import DELETED_EVENT, Event
from ironflow.store._runs import LOG_HEAD, append_event, emit_scans, last_seq
from ironflow.store._waits import name_key

__all__ = ["append", "append_many", "delete"]


def append(
    txn: WriteTxn,
    flow: FlowControl,
    stream_id: str,
    name: str,
    data: Any,
    idem: bytes | None,
    expected_version: int | None,
    now: float,
    clock_now: float,
    *,
    trace: TraceContext | None = None,
) -> Event:
    """Append to the stream; see :meth:`~ironflow.store.Store.append_to_stream`.

    ``idem`` is the stream's idempotency key for this append (stream key, NUL, the
    caller's key): an append already made with it returns that event.
    """
    skey = stream_key(stream_id)
    # Every read an append makes, whatever it finds, together: one query on PostgreSQL,
    # where each read waits for an answer.
    txn.prefetch(gets=_gets(skey, (idem,)), scans=emit_scans(name), lasts=LOG_HEAD)
    if idem is not None:
        seen = txn.get("stream_keys", idem)
        if seen is not None:
            return decode_record(txn.get("events", seen) or b"", Event)
    head = txn.get("stream_heads", skey)
    current = int.from_bytes(head, "big") if head is not None else 0
    if expected_version is not None and expected_version != current:
        raise ConcurrencyError(
            f"stream {stream_id!r} is at version {current}, not the expected "
            f"{expected_version}: another writer appended first; read the stream "
            "again and retry",
            expected=expected_version,
            actual=current,
        )
    version = current + 1
    result, event = append_event(
        txn, flow, name, data, None, now, clock_now, stream=stream_id, version=version, trace=trace
    )
    seq = u64(result.seq)
    txn.put("streams", skey + b"\x00" + u64(version), seq)
    txn.put("stream_heads", skey, u64(version))
    if idem is not None:
        txn.put("stream_keys", idem, seq)
    return event


def append_many(
    txn: WriteTxn,
    flow: FlowControl,
    stream_id: str,
    appends: Sequence[tuple[str, Any, bytes | None]],
    now: float,
    clock_now: float,
    *,
    trace: TraceContext | None = None,
) -> list[Event]:
    """:func:`append` of each ``(name, data, idem)`` in order, in this one transaction."""
    skey = stream_key(stream_id)
    scans = dict.fromkeys(scan for name, _, _ in appends for scan in emit_scans(name))
    txn.prefetch(
        gets=_gets(skey, [idem for _, _, idem in appends]), scans=list(scans), lasts=LOG_HEAD
    )
    return [
        append(txn, flow, stream_id, name, data, idem, None, now, clock_now, trace=trace)
        for name, data, idem in appends
    ]


def _gets(skey: bytes, idems: Sequence[bytes | None]) -> list[tuple[str, bytes]]:
    keys = [("stream_keys", idem) for idem in idems if idem is not None]
    return [*keys, ("stream_heads", skey)]


def delete(txn: WriteTxn, stream_key: bytes, wanted: frozenset[int] | None) -> int:
    """Delete these versions of the stream (all for None); see the Store protocol."""
    prefix = stream_key + b"\x00"
    doomed: list[tuple[bytes, bytes]] = []
    remaining = 0
    for key, seq in txn.scan("streams", prefix=prefix):
        if wanted is None or int.from_bytes(key[-8:], "big") in wanted:
            doomed.append((key, seq))
        else:
            remaining += 1
    if not doomed:
        return 0
    gone = {seq for _, seq in doomed}
    newest = last_seq(txn).to_bytes(8, "big")
    for key, seq in doomed:
        txn.delete("streams", key)
        event = decode_record(txn.get("events", seq) or b"", Event)
        txn.delete("event_ids", event.id.encode())
        txn.delete("event_names", name_key(event.name) + b"\x00" + seq)
        if seq == newest:
            # The newest event numbers the next one: a tombstone keeps its position, so
            # no reader that passed it ever sees the number reused.
            tombstone = Event(id=event.id, name=DELETED_EVENT, data=None, ts=event.ts)
            txn.put("events", seq, encode_record(attrs.evolve(tombstone, seq=event.seq)))
        else:
            txn.delete("events", seq)
    stale = [key for key, seq in txn.scan("stream_keys", prefix=prefix) if seq in gone]
    for key in stale:
        txn.delete("stream_keys", key)
    if remaining == 0:
        # Nothing left: the stream is as new, and its next append is version 1.
        txn.delete("stream_heads", stream_key)
    return len(doomed)

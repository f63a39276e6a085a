"""Entity streams: the rules that delete events from a stream.

Appending is the machine's ``append_to_stream`` over ``_runs.emit`` (a stream event
enters the log like any other). Deleting (what the LangGraph saver needs to prune
checkpoints) takes events out of the stream and the log in one transaction.
"""

from __future__ import annotations

import attrs

from ironflow.store._backend import WriteTxn
from ironflow.store._codec import decode_record, encode_record
from ironflow.store._records import DELETED_EVENT, Event
from ironflow.store._runs import last_seq
from ironflow.store._waits import name_key

__all__ = ["delete"]


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

"""Read-only queries over a store for people: the dashboard's listings.

None of these writes. They page with keys, not offsets, so a page costs the same at
run 100,000 as at run 1: a page of runs starts at a run id (ids are time-ordered, so
the runs table read backwards is newest first) and a page of events at a log position.

Filters (status, agent, a search term) are checked on each record's raw JSON bytes
before it is decoded, so a scan that skips most runs skips them at the speed of a byte
search; a candidate is then decoded and checked exactly, so a term that merely appears
in a key never matches. A scan stops after ``scan_limit`` records and says where, so a
rare match in a large store is found page by page instead of in one slow request.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import attrs

from ironflow.errors import RunNotFoundError
from ironflow.store import _checks as checks
from ironflow.store import _runs
from ironflow.store._codec import decode_record
from ironflow.store._keys import steps_prefix
from ironflow.store._records import (
    EmitResult,
    Event,
    Lease,
    ProjectionLease,
    Run,
)

if TYPE_CHECKING:
    from ironflow.store._backend import ReadTxn
    from ironflow.store._machine import StoreMachine

__all__ = [
    "EventPage",
    "LoggedEvent",
    "RunPage",
    "event_page",
    "last_seq",
    "projection_leases",
    "run_census",
    "run_leases",
    "run_page",
    "stream_heads",
    "value_matches",
]

#: How many run records one listing request may examine before it stops and says where:
#: about 0.1 s of a search's byte scan on a 2-core machine; the next page goes on.
DEFAULT_SCAN_LIMIT = 50_000


@attrs.frozen
class RunPage:
    """One page of runs, newest first.

    ``next_before`` is the id to pass as ``before`` for the next (older) page, or None
    when the scan reached the oldest run. ``scanned`` counts the records examined;
    ``exhausted`` is False when the scan stopped at ``scan_limit`` with fewer than
    ``limit`` matches (the next page goes on searching). ``total`` is every stored run.
    """

    runs: tuple[Run, ...]
    step_counts: tuple[int, ...]
    next_before: str | None
    scanned: int
    exhausted: bool
    total: int


def _needle(value: str) -> bytes:
    """The bytes ``value`` is written as inside a JSON string."""
    return json.dumps(value, ensure_ascii=False)[1:-1].encode()


def value_matches(data: Any, term: str) -> bool:
    """Whether a value in ``data`` (a key's value or a list item, at any depth) contains
    ``term``, compared case-insensitively; numbers and booleans as their JSON text."""
    folded = term.casefold()
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str):
            if folded in item.casefold():
                return True
        elif item is not None and folded in json.dumps(item).casefold():
            return True
    return False


def _count_prefix(txn: ReadTxn, table: str, prefix: bytes) -> int:
    return sum(1 for _ in txn.scan(table, prefix=prefix))


def run_page(
    store: StoreMachine,
    *,
    limit: int = 50,
    before: str | None = None,
    status: str | None = None,
    agent: str | None = None,
    query: str | None = None,
    scan_limit: int = DEFAULT_SCAN_LIMIT,
) -> RunPage:
    """Runs newest first, older than the run ``before``, that match every filter given.

    ``query`` matches a run whose id is ``query`` exactly, or whose triggering event's
    data holds a value containing it (see :func:`value_matches`).
    """
    want_status = _needle_pair("status", status)
    want_agent = _needle_pair("agent", agent)
    term = query.strip() if query else None
    term_bytes = _needle(term).lower() if term else None
    runs: list[Run] = []
    scanned = 0
    last_key: bytes | None = None
    exhausted = True
    with store._read() as txn:
        total = txn.count("runs")
        if term:
            exact = _exact_run(txn, term, before)
            if exact is not None and _accept(exact, status, agent):
                runs.append(exact)
        for key, raw in _backwards(txn, before):
            if len(runs) >= limit:
                break
            if scanned >= scan_limit:
                exhausted = False
                break
            scanned += 1
            last_key = key
            if want_status is not None and want_status not in raw:
                continue
            if want_agent is not None and want_agent not in raw:
                continue
            if term_bytes is not None and term_bytes not in raw.lower():
                continue
            run = decode_record(raw, Run)
            if not _accept(run, status, agent):
                continue
            if term is not None and (run.id == term or not value_matches(run.event.data, term)):
                continue  # the exact id match is already first on the page
            runs.append(run)
        else:
            last_key = None  # reached the oldest run
        counts = tuple(_count_prefix(txn, "steps", steps_prefix(r.id)) for r in runs)
    next_before = last_key.decode() if last_key is not None else None
    return RunPage(
        runs=tuple(runs),
        step_counts=counts,
        next_before=next_before,
        scanned=scanned,
        exhausted=exhausted,
        total=total,
    )


def _needle_pair(field: str, value: str | None) -> bytes | None:
    if value is None:
        return None
    return f'"{field}":{json.dumps(value, ensure_ascii=False)}'.encode()


def _accept(run: Run, status: str | None, agent: str | None) -> bool:
    return (status is None or run.status == status) and (agent is None or run.agent == agent)


def _exact_run(txn: ReadTxn, term: str, before: str | None) -> Run | None:
    """The run whose id is ``term``, on the first page only (not on later pages)."""
    if before is not None:
        return None
    try:
        key = checks.run_id(term).encode()
    except RunNotFoundError:  # a term no run id can be
        return None
    raw = txn.get("runs", key)
    return None if raw is None else decode_record(raw, Run)


def _backwards(txn: ReadTxn, before: str | None) -> Iterator[tuple[bytes, bytes]]:
    """Runs from the newest (or the one just older than ``before``) to the oldest."""
    if before is None:
        yield from txn.scan("runs", reverse=True)
        return
    start = before.encode()
    for key, raw in txn.scan("runs", start=start, reverse=True):
        if key != start:  # strictly older than ``before``
            yield key, raw


def run_leases(store: StoreMachine) -> list[Lease]:
    """Every lease on a run, live or lapsed."""
    with store._read() as txn:
        return [decode_record(raw, Lease) for _, raw in txn.scan("leases")]


def projection_leases(store: StoreMachine) -> list[ProjectionLease]:
    """Every lease on a projection, live or lapsed."""
    with store._read() as txn:
        return [decode_record(raw, ProjectionLease) for _, raw in txn.scan("projection_leases")]


#: The head of a Run record as ``encode_record`` writes it: its id, agent and status come
#: first, in that order (the attrs fields' order), so a census reads them without decoding.
_RUN_HEAD = re.compile(rb'\{"id":"[^"\\]*","agent":"([^"\\]*)","status":"([a-z]+)"')


def run_census(store: StoreMachine, statuses: frozenset[str]) -> dict[tuple[str, str], int]:
    """How many runs of each agent are in each of ``statuses`` now: ``(agent, status)`` to
    a count. One read transaction over the runs table; a record is decoded only if its
    head is not in the expected shape (about a microsecond a run otherwise)."""
    raw_counts: dict[tuple[bytes, bytes], int] = {}
    counts: dict[tuple[str, str], int] = {}
    match = _RUN_HEAD.match
    with store._read() as txn:
        for _, raw in txn.scan("runs"):
            head = match(raw)
            if head is not None:
                key: tuple[bytes, bytes] = (head[1], head[2])
                raw_counts[key] = raw_counts.get(key, 0) + 1
            else:
                run = decode_record(raw, Run)
                if run.status in statuses:
                    counts[run.agent, run.status] = counts.get((run.agent, run.status), 0) + 1
    for (agent, status), n in raw_counts.items():
        named = (agent.decode(), status.decode())  # no escapes: the pattern has no backslash
        if named[1] in statuses:
            counts[named] = counts.get(named, 0) + n
    return counts


def last_seq(store: StoreMachine) -> int:
    """The log position of the newest event (0 for an empty log)."""
    with store._read() as txn:
        return _runs.last_seq(txn)


@attrs.frozen
class LoggedEvent:
    """An event of the log with the run ids its emission started (or was folded into)."""

    event: Event
    run_ids: tuple[str, ...]


@attrs.frozen
class EventPage:
    """Events newest first; ``next_before`` is the seq to pass for the older page."""

    events: tuple[LoggedEvent, ...]
    next_before: int | None
    last_seq: int


def event_page(store: StoreMachine, *, limit: int = 50, before: int | None = None) -> EventPage:
    """Events of the global log newest first, each with the runs it started."""
    out: list[LoggedEvent] = []
    next_before: int | None = None
    with store._read() as txn:
        newest = _runs.last_seq(txn)
        start = newest if before is None else min(before - 1, newest)
        # From the newest event at or below ``start`` (pruning leaves holes).
        rows: Iterable[tuple[bytes, bytes]] = ()
        if start >= 1:
            rows = txn.scan("events", start=start.to_bytes(8, "big"), reverse=True)
        for key, raw in rows:
            if len(out) >= limit:
                next_before = int.from_bytes(key, "big") + 1
                break
            event = decode_record(raw, Event)
            emitted = txn.get("event_ids", event.id.encode())
            run_ids = () if emitted is None else decode_record(emitted, EmitResult).run_ids
            out.append(LoggedEvent(event, tuple(run_ids)))
    return EventPage(tuple(out), next_before, newest)


def stream_heads(
    store: StoreMachine, *, limit: int = 100, after: str | None = None
) -> tuple[list[tuple[str, int]], str | None]:
    """Entity streams in id order with their current version, and the next page's key."""
    out: list[tuple[str, int]] = []
    with store._read() as txn:
        start = after.encode() + b"\x00" if after else None
        for key, head in txn.scan("stream_heads", start=start):
            if len(out) >= limit:
                return out, out[-1][0]
            out.append((key.decode(), int.from_bytes(head, "big")))
    return out, None

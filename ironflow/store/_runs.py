"""A run's life, as rules over a write transaction: born at emit, fenced, finished.

Each function here runs inside the transaction of the store call that needs it, takes
the times it writes as arguments (``now``: the wall clock; ``clock_now``: the store's
timer clock), and validates before it writes where it can; the backend's per-op
atomicity covers the rest.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from typing import Any

import attrs

from ironflow._pure._ids import new_id
from ironflow._pure._trace import TraceContext
from ironflow.errors import InvalidInputError, LeaseLostError, RunNotFoundError
from ironflow.store._backend import Claiming, ReadTxn, Scan, WriteTxn
from ironflow.store._codec import codec_of, decode_record, encode_record
from ironflow.store._flowctl import FlowControl, spec_of
from ironflow.store._flowspec import Rerun
from ironflow.store._keys import step_key, step_position, steps_prefix, u64
from ironflow.store._records import (
    FINISHED,
    SUSPENDED,
    EmitResult,
    ErrorInfo,
    Event,
    Lease,
    Run,
    RunStatus,
    StepAck,
    StepRecord,
    WorkerInfo,
)
from ironflow.store._steplog import StepLog
from ironflow.store._suspend import child_finished, resolve_event_waits, unindex
from ironflow.store._triggers import starts
from ironflow.store._waits import event_wait_prefix, name_key

__all__ = [
    "LOG_HEAD",
    "STEPS",
    "append_event",
    "cancel_tree",
    "check_holder",
    "emit",
    "emit_scans",
    "encode_lease",
    "finish",
    "last_seq",
    "new_lease",
    "pause",
    "position_of",
    "record_step",
    "release",
    "rerun",
    "resume",
    "run_in",
    "spawn",
    "step_log",
    "steps_of",
]

#: The codec of step records: on every step's path, so it skips cattrs where it can.
STEPS = codec_of(StepRecord)


#: What an encoded lease tells, by its bytes: the worker id, the attempt, and the run's
#: cancel and pause requests (None: not told). Every step reads its run's lease, and a
#: lease's bytes change only when it is rewritten; the bytes decide what they tell, so
#: nothing here goes stale. Emptied when full.
_told: dict[bytes, tuple[str, int, bool | None, bool | None]] = {}
_TOLD_KEPT = 4096


def encode_lease(lease: Lease) -> bytes:
    """The lease encoded for the ``leases`` table, what it tells remembered: the run's
    next step reads it, and need not decode what was just encoded."""
    raw = encode_record(lease)
    _remember(raw, lease)
    return raw


def _lease_holder(raw: bytes) -> tuple[str, int, bool | None, bool | None]:
    """The worker id, attempt and the run's cancel and pause requests (None: not told)
    of an encoded lease."""
    told = _told.get(raw)
    if told is None:
        told = _remember(raw, decode_record(raw, Lease))
    return told


def _remember(raw: bytes, lease: Lease) -> tuple[str, int, bool | None, bool | None]:
    if len(_told) >= _TOLD_KEPT:
        _told.clear()
    told = _told[raw] = (
        lease.worker.id,
        lease.attempt,
        lease.cancel_requested,
        lease.pause_requested,
    )
    return told


def check_holder(txn: ReadTxn, worker: WorkerInfo, run_id: str, attempt: int) -> None:
    """Fencing: raise unless ``worker`` holds the run in that attempt.

    The attempt matters when one worker lost a run and later leased it again: the
    execution of the old attempt must not write into the new one's history, nor
    finish, release, suspend or spawn for it. (A lease written before leases named
    their attempt says 0 and is fenced by the worker alone.)
    """
    _check_lease(txn.get("leases", run_id.encode()), worker, run_id, attempt)


def _check_lease(
    raw: bytes | None, worker: WorkerInfo, run_id: str, attempt: int
) -> tuple[bool | None, bool | None]:
    """:func:`check_holder` on the run's lease as read (None: no lease); the cancel and
    pause requests the lease tells (None: a lease written before leases told them)."""
    holder, held_attempt, cancel, pause = (
        _lease_holder(bytes(raw)) if raw is not None else ("", 0, None, None)
    )
    if holder != worker.id or held_attempt not in (0, attempt):
        raise LeaseLostError(
            f"worker {worker.id} no longer holds run {run_id}: its lease expired and "
            "another worker took the run over (raise the lease TTL if steps block for long)"
        )
    return cancel, pause


# -- a run's cancel and pause requests, told by its lease --------------------------------
#
# A request is a row of ``cancels`` or ``paused``: what finish, release, suspend, spawn
# and leasing read. While the run is leased, its lease tells the same two flags
# (``Lease.cancel_requested``, ``pause_requested``), so ``record_step``, every step of
# every run, reads one row, the lease, and a speculative step's guard checks that row
# alone (``_pgspec.py``). The rule that keeps the two agreeing is here, and only here:
# a lease is written with the requests the tables hold (:func:`new_lease`; a heartbeat
# keeps them), and a request set or cleared while the run holds a lease rewrites it in
# the same transaction (:func:`_request`). A run without a lease (pending, suspended,
# finished) has only the rows. ``check_valid`` asserts the agreement. A lease written
# before leases told them (None) is read with the tables, as before.

#: The value of a request's row, per table.
_REQUEST_ROW = {"cancels": b"1", "paused": b""}


def new_lease(
    txn: ReadTxn, run_id: str, worker: WorkerInfo, expires_at: float, attempt: int
) -> Lease:
    """A lease of the run for ``worker`` in ``attempt``, telling its requests: a cancel
    requested while another worker ran it (taken over or released), a pause of a run
    taken over."""
    key = run_id.encode()
    cancel, pause = txn.get_many((("cancels", key), ("paused", key)))
    return Lease(
        run_id=run_id,
        worker=worker,
        expires_at=expires_at,
        attempt=attempt,
        cancel_requested=cancel is not None,
        pause_requested=pause is not None,
    )


def _request(txn: WriteTxn, key: bytes, table: str, on: bool) -> None:
    """Set (``on``) or clear the run's cancel (``table`` ``cancels``) or pause
    (``paused``) request, and tell the run's lease if it holds one."""
    if on:
        txn.put(table, key, _REQUEST_ROW[table])
    else:
        txn.discard(table, key)
    # Read together: one query on PostgreSQL.
    raw, other_row = txn.get_many(
        (("leases", key), ("paused" if table == "cancels" else "cancels", key))
    )
    if raw is None:
        return
    lease = decode_record(raw, Lease)
    other = other_row is not None
    cancel, pause = (on, other) if table == "cancels" else (other, on)
    told = attrs.evolve(lease, cancel_requested=cancel, pause_requested=pause)
    if told != lease:
        txn.put("leases", key, encode_lease(told))


def run_in(txn: ReadTxn, run_id: str, **changes: Any) -> Run:
    """The run with this id (a known-good id: the caller checked it), with ``changes``
    to its fields if given (as ``attrs.evolve`` of it, built once)."""
    raw = txn.get("runs", run_id.encode())
    if raw is None:
        raise RunNotFoundError(run_id)
    return decode_record(raw, Run, **changes)


def steps_of(txn: ReadTxn, run_id: str) -> list[StepRecord]:
    prefix = steps_prefix(run_id)
    return [STEPS.decode(raw) for _, raw in txn.scan("steps", prefix=prefix)]


def step_log(txn: ReadTxn, run_id: str) -> StepLog:
    """The run's step records as a lease hands them over: read now, decoded when read."""
    positions: list[int] = []
    stored: list[bytes] = []
    for key, value in txn.scan("steps", prefix=steps_prefix(run_id)):
        positions.append(step_position(key))
        stored.append(value if type(value) is bytes else bytes(value))
    return StepLog.from_stored(run_id, positions, stored, STEPS)


#: The event log's head, as a prefetch's ``lasts`` names it (every emit reads it).
LOG_HEAD = (("events", b""),)


def last_seq(txn: ReadTxn) -> int:
    """The position of the last event of the log (0 for an empty log): its key only,
    not a page of events with their data."""
    key = txn.last_key("events")
    return 0 if key is None else int.from_bytes(key, "big")


# -- birth: the event log and the runs it triggers ------------------------------------


def emit(
    txn: WriteTxn,
    flow: FlowControl,
    name: str,
    data: Any,
    id: str | None,
    now: float,
    clock_now: float,
    *,
    stream: str | None = None,
    version: int = 0,
    trace: TraceContext | None = None,
) -> EmitResult:
    """Append an event and create its runs: the one place events enter the log.

    Runs waiting for the event take it, and runs it cancels are cancelled, in the
    same transaction: there is no moment in which the event exists without them.
    """
    # What an emit reads whatever it finds, together: the event id, the last event's
    # position, the agents and the runs waiting for events of this name.
    txn.prefetch(
        gets=() if id is None else (("event_ids", id.encode()),),
        scans=emit_scans(name),
        lasts=LOG_HEAD,
    )
    if id is not None:
        seen = txn.get("event_ids", id.encode())
        if seen is not None:
            return attrs.evolve(decode_record(seen, EmitResult), created=False)
    return append_event(
        txn, flow, name, data, id, now, clock_now, stream=stream, version=version, trace=trace
    )[0]


@functools.lru_cache(maxsize=1024)  # each append asks three times: a pure function
def emit_scans(name: str) -> tuple[Scan, ...]:
    """The scans an event named ``name`` makes whatever it finds (for a prefetch, with
    :data:`LOG_HEAD`)."""
    return (Scan("agents"), Scan("waits", event_wait_prefix(name)))


def append_event(
    txn: WriteTxn,
    flow: FlowControl,
    name: str,
    data: Any,
    id: str | None,
    now: float,
    clock_now: float,
    *,
    stream: str | None = None,
    version: int = 0,
    trace: TraceContext | None = None,
) -> tuple[EmitResult, Event]:
    """:func:`emit` of an event whose id is new, returning the event too (a stream
    append answers with it, and need not read back what it just wrote)."""
    txn.prefetch(scans=emit_scans(name), lasts=LOG_HEAD)
    seq = last_seq(txn) + 1
    event = Event(
        id=id or new_id("evt_"),
        name=name,
        data=data,
        ts=now,
        seq=seq,
        stream=stream,
        version=version,
        trace=trace,
    )
    run_ids = []
    # Read once: the triggers and the cancel rules below both need every agent (one
    # query fewer per event on PostgreSQL).
    specs = [spec_of(raw) for _, raw in txn.scan("agents")]
    for spec in specs:
        if starts(spec.id, spec.triggers, name) and flow.admits(spec, event):
            # A pending run, a queued one (no concurrency slot), or a debounced burst's.
            run_ids.append(flow.new_run(txn, spec, event, now))
    result = EmitResult(event_id=event.id, run_ids=tuple(run_ids), created=True, seq=seq)
    txn.put("events", u64(seq), encode_record(event))
    txn.put("event_ids", event.id.encode(), encode_record(result))
    txn.put("event_names", name_key(name) + b"\x00" + u64(seq), b"")
    # Runs waiting for this event take it in this same transaction: none can miss it.
    resolve_event_waits(txn, event, clock_now, now)
    for run_id in dict.fromkeys(flow.cancel_matching(txn, event, specs)):
        cancel_tree(txn, flow, run_id, now, clock_now)
    return result, event


# -- steps and the end of a run ---------------------------------------------------------


def record_step(
    txn: WriteTxn, flow: FlowControl, worker: WorkerInfo, step: StepRecord, value: bytes
) -> StepAck:
    """Write a held run's step (a position already recorded stays as it is).

    The hot path of every run: it reads one row, the lease, which tells the run's
    cancel and pause requests too (see :func:`_request`), and its write needs no
    answer, so a networked backend sends it with the commit.
    """
    run_key = step.run_id.encode()
    cancel, pause = _check_lease(
        txn.get("leases", run_key), worker, step.run_id, step.attempt
    )
    if cancel is None or pause is None:
        # A lease written before leases told the requests: the tables tell them.
        cancels, paused = txn.get_many((("cancels", run_key), ("paused", run_key)))
        cancel, pause = cancels is not None, paused is not None
    txn.add("steps", step_key(step.run_id, step.position), value)
    return StepAck(cancel, pause_requested=pause)


def finish(
    txn: WriteTxn,
    flow: FlowControl,
    worker: WorkerInfo,
    run_id: str,
    attempt: int,
    *,
    status: RunStatus,
    output: Any,
    error: ErrorInfo | None,
    now: float,
    clock_now: float,
    then: Sequence[Scan] = (),
    claims: Sequence[Claiming] = (),
) -> Run:
    """End a held run. ``then`` and ``claims``: the scans and claims the op makes next in
    this transaction (the next lease's look and claim), read with the finish's own
    reads, in one request."""
    key = run_id.encode()
    txn.prefetch(gets=(("leases", key), ("runs", key)), scans=then, claims=claims)
    check_holder(txn, worker, run_id, attempt)
    run = run_in(txn, run_id, status=status, output=output, error=error, updated_at=now)
    txn.put("runs", key, encode_record(run))
    txn.discard("leases", key)
    txn.discard("cancels", key)
    flow.finished(txn, run)
    child_finished(txn, run, clock_now, now)
    return run


def release(txn: WriteTxn, worker: WorkerInfo, run_id: str, attempt: int, now: float) -> None:
    check_holder(txn, worker, run_id, attempt)
    key = run_id.encode()
    # A run paused while it ran stops here: it waits for `run resume`.
    status: RunStatus = "paused" if txn.get("paused", key) is not None else "pending"
    run = run_in(txn, run_id, status=status, updated_at=now)
    txn.put("runs", key, encode_record(run))
    txn.delete("leases", key)
    if status == "pending":
        txn.put("ready", key, run.agent.encode())


# -- cancel, pause, resume, re-run ------------------------------------------------------


def _children(txn: ReadTxn, run_id: str) -> Iterator[str]:
    for _, child in txn.scan("spawns", prefix=run_id.encode() + b"\x00"):
        yield child.decode()


def _cancel_one(txn: WriteTxn, flow: FlowControl, run: Run, now: float, clock_now: float) -> Run:
    key = run.id.encode()
    if run.status in ("pending", "queued", "paused"):
        run = attrs.evolve(run, status="cancelled", cancel_requested=True, updated_at=now)
        txn.delete("ready", key)
        flow.finished(txn, run)
        flow.forget(txn, run.id)
    elif run.status in SUSPENDED:
        # Nothing executes a suspended run: it is cancelled now, its timer and wait gone,
        # and with them its concurrency slot and any pause request.
        unindex(txn, run)
        run = attrs.evolve(run, status="cancelled", cancel_requested=True, updated_at=now)
        flow.finished(txn, run)
    else:
        run = attrs.evolve(run, cancel_requested=True, updated_at=now)
        _request(txn, key, "cancels", True)
    txn.put("runs", key, encode_record(run))
    if run.status == "cancelled":
        child_finished(txn, run, clock_now, now)
    return run


def cancel_tree(txn: WriteTxn, flow: FlowControl, run_id: str, now: float, clock_now: float) -> Run:
    """Cancel a run and every unfinished run below it, whatever the depth.

    Walks the tree of spawns with a queue, not recursion: a chain of child runs
    thousands deep is cancelled whole, in this one transaction.
    """
    root = run_in(txn, run_id)
    if root.status in FINISHED:
        return root
    first = _cancel_one(txn, flow, root, now, clock_now)
    # Below a run cancelled now; a finished run's own children are left as they are.
    queue = list(_children(txn, run_id))
    while queue:
        raw = txn.get("runs", queue.pop().encode())
        if raw is None:
            continue  # pruned
        child = decode_record(raw, Run)
        if child.status not in FINISHED:
            _cancel_one(txn, flow, child, now, clock_now)
            queue.extend(_children(txn, child.id))
    return first


def pause(txn: WriteTxn, run_id: str, now: float) -> Run:
    run = run_in(txn, run_id)
    if run.status in FINISHED or run.status == "paused":
        return run
    key = run_id.encode()
    _request(txn, key, "paused", True)
    if txn.get("ready", key) is not None:
        txn.delete("ready", key)
        run = attrs.evolve(run, status="paused", updated_at=now)
        txn.put("runs", key, encode_record(run))
    # Running: told by its next record_step. Sleeping, waiting or debouncing: it is
    # skipped when it becomes pending, until resumed.
    return run


def resume(txn: WriteTxn, run_id: str, now: float) -> Run:
    run = run_in(txn, run_id)
    if run.status in FINISHED:
        # Not a silent no-op: whoever asked expected the run to go on.
        known = ", ".join(s.id for s in steps_of(txn, run.id)[:20]) or "none"
        raise InvalidInputError(
            f"run {run.id} has finished ({run.status}): only a paused run resumes. To run "
            f"it again from one of its steps, give that step (--from-step STEP_ID, "
            f"from_step=...); its steps are: {known}"
        )
    key = run_id.encode()
    _request(txn, key, "paused", False)
    if run.status == "paused":
        run = attrs.evolve(run, status="pending", updated_at=now)
        txn.put("runs", key, encode_record(run))
        txn.put("ready", key, run.agent.encode())
    return run


def position_of(run: Run, steps: list[StepRecord], step_id: str) -> int:
    """The position of the run's step ``step_id``; InvalidInputError naming its steps."""
    position = next((s.position for s in steps if s.id == step_id), None)
    if position is None:
        known = ", ".join(s.id for s in steps[:20]) or "none"
        raise InvalidInputError(f"run {run.id} has no step {step_id!r}; its steps are: {known}")
    return position


def rerun(txn: WriteTxn, run_id: str, from_step: str, now: float) -> Run:
    """Drop the records from ``from_step`` on and make the finished run pending."""
    run = run_in(txn, run_id)
    if run.status not in FINISHED:
        raise InvalidInputError(
            f"run {run.id} is {run.status}; --from-step re-runs a finished run "
            "(completed, failed or cancelled): wait for it, or cancel it first"
        )
    steps = steps_of(txn, run.id)
    position = position_of(run, steps, from_step)
    for s in steps:
        if s.position >= position:
            txn.delete("steps", step_key(run.id, s.position))
    # A spawn step re-run starts a new child: forget the children of the dropped steps
    # (the old ones stay, finished, with their parent_id), so spawn_run makes new ones.
    kept = {s.id for s in steps if s.position < position}
    prefix = run.id.encode() + b"\x00"
    dropped = [
        k for k, _ in txn.scan("spawns", prefix=prefix) if k[len(prefix) :].decode() not in kept
    ]
    for spawn_key in dropped:
        txn.delete("spawns", spawn_key)
    key = run.id.encode()
    # A finished run holds no lease: only the rows (see _request).
    txn.delete("paused", key)
    txn.delete("cancels", key)
    rerun = Rerun(
        from_step=from_step,
        position=position,
        at=now,
        previous_status=run.status,
        previous_attempt=run.attempt,
    )
    run = attrs.evolve(
        run,
        status="pending",
        output=None,
        error=None,
        cancel_requested=False,
        suspension=None,
        updated_at=now,
        reruns=(*run.reruns, rerun),
    )
    txn.put("runs", key, encode_record(run))
    txn.put("ready", key, run.agent.encode())
    return run


# -- child runs ------------------------------------------------------------------------


def spawn(
    txn: WriteTxn,
    worker: WorkerInfo,
    parent_id: str,
    attempt: int,
    step_id: str,
    agent: str,
    data: Any,
    now: float,
    *,
    trace: TraceContext | None = None,
) -> Run:
    """Create a pending child run of a held run, once per (parent, step id)."""
    check_holder(txn, worker, parent_id, attempt)
    spawn_key = parent_id.encode() + b"\x00" + step_id.encode()
    seen = txn.get("spawns", spawn_key)
    if seen is not None:
        return run_in(txn, seen.decode())
    event = Event(
        id=new_id("evt_"), name=f"spawn.{agent}", data=data, ts=now, seq=last_seq(txn), trace=trace
    )
    # A parent being cancelled starts no new work: its child is born cancelled.
    cancelled = txn.get("cancels", parent_id.encode()) is not None
    run = Run(
        id=new_id("run_"),
        agent=agent,
        status="cancelled" if cancelled else "pending",
        event=event,
        created_at=now,
        updated_at=now,
        cancel_requested=cancelled,
        parent_id=parent_id,
    )
    key = run.id.encode()
    txn.put("runs", key, encode_record(run))
    if not cancelled:
        txn.put("ready", key, agent.encode())
    txn.put("spawns", spawn_key, key)
    return run

"""Suspension and wake: the rules of a run that sleeps or waits in the store.

A suspended run holds no lease and no worker. What ends its wait (its time, a matching
event, its child finishing, its deadline) writes the waiting step's record and makes
it pending again, in the transaction that caused it, so the engine finds a recorded
step on resume and needs no special replay path. The keys of the two indexes, and the
check of a suspension, are in ``_waits.py``.
"""

from __future__ import annotations

from typing import Any

import attrs

from ironflow._pure._limits import MAX_TIMESTAMP
from ironflow.errors import InvalidInputError
from ironflow.store._backend import ReadTxn, WriteTxn
from ironflow.store._codec import codec_of, converter, decode_record, encode_record
from ironflow.store._keys import step_key, u64
from ironflow.store._records import (
    FINISHED,
    SUSPENDED,
    ErrorInfo,
    Event,
    Run,
    RunStatus,
    StepRecord,
    SuspendResult,
    Suspension,
)
from ironflow.store._waits import (
    child_wait_key,
    data_matches,
    event_wait_prefix,
    index_keys,
    micros,
    name_key,
    timer_micros,
)

__all__ = [
    "child_finished",
    "fire_timers",
    "resolve_event_waits",
    "suspend",
    "timers_due",
    "unindex",
]

_STEPS = codec_of(StepRecord)


def _ending(run: Run, s: Suspension, now: float, *, output: Any) -> StepRecord:
    """The completed record of a suspended step, written by the store as its wait ends."""
    return StepRecord(
        run_id=run.id,
        position=s.position,
        id=s.step_id,
        status="completed",
        input=s.input,
        output=output,
        started_at=s.since,
        ended_at=now,
        attempt=run.attempt,
    )


def _failing(run: Run, s: Suspension, now: float, error: ErrorInfo) -> StepRecord:
    return attrs.evolve(
        _ending(run, s, now, output=None),
        status="failed",
        error=attrs.evolve(error, step_id=s.step_id),
    )


def _timed_out(run: Run, s: Suspension, now: float) -> StepRecord:
    """The record of a sleep that ended, or of a wait whose time ran out."""
    if s.kind == "child":
        waited = "" if s.wake_at is None else f" within {max(0.0, s.wake_at - s.since):g}s"
        return _failing(
            run,
            s,
            now,
            ErrorInfo(
                type="StepTimeoutError",
                message=f"child run {s.child_id} did not finish{waited}",
            ),
        )
    # A sleep returns None; a wait for an event that timed out returns None too.
    return _ending(run, s, now, output=None)


def _child_ending(run: Run, s: Suspension, child: Run, now: float) -> StepRecord:
    """The record of a wait for a child run that has finished: its output or its error."""
    if child.status == "completed":
        return _ending(run, s, now, output=child.output)
    error = child.error or ErrorInfo(type="Cancelled", message="the run was cancelled")
    return _failing(
        run,
        s,
        now,
        ErrorInfo(
            type=error.type,
            message=f"child run {child.id} ({child.agent}) {child.status}: {error.message}",
        ),
    )


def suspend(txn: WriteTxn, run: Run, s: Suspension, clock_now: float, now: float) -> SuspendResult:
    """Suspend a held run (the caller checked its lease), or record its step if the wait
    is already over; see :meth:`~ironflow.store.Store.suspend_run`."""
    # A retried request whose first reply was lost, or a wait already over.
    done = txn.get("steps", step_key(run.id, s.position))
    if done is not None:
        return SuspendResult(suspended=False, step=_STEPS.decode(done))
    key = run.id.encode()
    if txn.get("cancels", key) is not None:
        return SuspendResult(suspended=False, cancel_requested=True)
    wake_at = s.wake_at
    if wake_at is None and s.wake_in is not None:
        wake_at = clock_now + s.wake_in
        if wake_at > MAX_TIMESTAMP:
            raise InvalidInputError(
                f"suspend_run: a wait of {s.wake_in:g}s would end past the year 9999, the "
                "last time the store can keep; wait for a shorter time"
            )
    stored = attrs.evolve(s, since=s.since or clock_now, wake_at=wake_at, wake_in=None)
    step = _already_over(txn, run, stored, clock_now)
    if step is not None:
        txn.put("steps", step_key(run.id, s.position), encode_record(step))
        return SuspendResult(suspended=False, step=step)
    # Every key is computed before the first write: nothing below can fail halfway.
    timer, wait = index_keys(run.id, stored)
    status: RunStatus = "waiting" if s.kind in ("event", "child") else "sleeping"
    run = attrs.evolve(run, status=status, suspension=stored, updated_at=now)
    txn.put("runs", key, encode_record(run))
    txn.delete("leases", key)
    if timer is not None:
        txn.put("timers", timer, b"")
    if wait is not None:
        txn.put("waits", wait, b"")
    return SuspendResult(suspended=True)


def _already_over(txn: ReadTxn, run: Run, s: Suspension, now: float) -> StepRecord | None:
    """The step's record if what it waits for has happened already, else None."""
    if s.kind == "event":
        event = _past_event(txn, s)
        if event is not None:
            return _ending(run, s, now, output=converter.unstructure(event))
    elif s.kind == "child" and s.child_id is not None:
        raw = txn.get("runs", s.child_id.encode())
        if raw is not None:
            child = decode_record(raw, Run)
            if child.status in FINISHED:
                return _child_ending(run, s, child, now)
    if s.kind != "retry" and s.wake_at is not None and micros(s.wake_at) <= micros(now):
        return _timed_out(run, s, now)
    return None


def _past_event(txn: ReadTxn, s: Suspension) -> Event | None:
    """The first event of the log after ``s.after_seq`` that the wait would take."""
    assert s.event is not None
    prefix = name_key(s.event) + b"\x00"
    skip = set(s.skip)
    for key, _ in txn.scan("event_names", prefix=prefix, start=prefix + u64(s.after_seq + 1)):
        if len(key) != len(prefix) + 8:
            break
        seq = int.from_bytes(key[-8:], "big")
        if seq in skip:
            continue
        raw = txn.get("events", key[-8:])
        if raw is None:
            continue  # pruned
        event = decode_record(raw, Event)
        if event.name == s.event and data_matches(event.data, s.match):
            return event
    return None


def _resume(txn: WriteTxn, run: Run, step: StepRecord | None, now: float) -> None:
    """Make a suspended run pending again, writing the record that ends its wait.

    ``now`` is the wall-clock time of the change; the record's own times follow the
    store's timer clock.
    """
    unindex(txn, run)
    key = run.id.encode()
    if step is not None:
        txn.put("steps", step_key(run.id, step.position), encode_record(step))
    run = attrs.evolve(run, status="pending", updated_at=now)
    txn.put("runs", key, encode_record(run))
    txn.put("ready", key, run.agent.encode())


def unindex(txn: WriteTxn, run: Run) -> None:
    """Drop the run's timer and wait entries (it no longer sleeps or waits)."""
    if run.suspension is None:
        return
    timer, wait = index_keys(run.id, run.suspension)
    if timer is not None:
        txn.delete("timers", timer)
    if wait is not None:
        txn.delete("waits", wait)


def _suspended(txn: ReadTxn, run_id: str) -> Run | None:
    raw = txn.get("runs", run_id.encode())
    if raw is None:
        return None
    run = decode_record(raw, Run)
    if run.status not in SUSPENDED or run.suspension is None:
        return None
    return run


def resolve_event_waits(txn: WriteTxn, event: Event, clock_now: float, now: float) -> None:
    """Runs waiting for this event take it, in the transaction that appends it."""
    prefix = event_wait_prefix(event.name)
    waiting = [key[len(prefix) :].decode() for key, _ in txn.scan("waits", prefix=prefix)]
    for run_id in waiting:
        run = _suspended(txn, run_id)
        if run is None:
            continue
        s = run.suspension
        assert s is not None
        if (
            s.kind == "event"
            and s.event == event.name
            and event.seq > s.after_seq
            and event.seq not in s.skip
            and data_matches(event.data, s.match)
        ):
            step = _ending(run, s, clock_now, output=converter.unstructure(event))
            _resume(txn, run, step, now)


def child_finished(txn: WriteTxn, run: Run, clock_now: float, now: float) -> None:
    """A run just finished: its parent, if waiting for it, takes its result now."""
    if run.parent_id is None:
        return
    if txn.get("waits", child_wait_key(run.id, run.parent_id)) is None:
        return
    parent = _suspended(txn, run.parent_id)
    if parent is None:
        return
    s = parent.suspension
    assert s is not None
    if s.kind == "child" and s.child_id == run.id:
        _resume(txn, parent, _child_ending(parent, s, run, clock_now), now)


def timers_due(txn: ReadTxn, now: float) -> bool:
    """Whether any timer is due (one key read: the earliest timer)."""
    for key, _ in txn.scan("timers"):
        return timer_micros(key) <= micros(now)
    return False


def fire_timers(txn: WriteTxn, clock_now: float, now: float, *, limit: int = 1000) -> None:
    """End the suspensions whose time has come (at most ``limit`` per transaction)."""
    horizon = micros(clock_now)
    due: list[bytes] = []
    for key, _ in txn.scan("timers"):
        if timer_micros(key) > horizon or len(due) >= limit:
            break
        due.append(key)
    for key in due:
        txn.delete("timers", key)
        run = _suspended(txn, key[8:].decode())
        if run is None:
            continue
        s = run.suspension
        assert s is not None
        step = None
        if s.kind != "retry" and s.wake_at is not None and micros(s.wake_at) <= horizon:
            step = _timed_out(run, s, clock_now)
        # Else the run's deadline woke it: no record, the engine fails it at this step.
        _resume(txn, run, step, now)

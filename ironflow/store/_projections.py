"""Projections as the store keeps them: definition, position, state, runner lease.

One runner advances a projection at a time, holding its lease (dead-pid takeover on
this machine, TTL otherwise, as for runs). Each write carries the position it started
from and is applied only while the writer holds the lease and the stored position is
still that one, so no event is applied twice or skipped, and a runner that lost the
lease mid-batch writes nothing. A rebuild replaces every partition at once.
"""

from __future__ import annotations

from collections.abc import Collection

import attrs

from ironflow.errors import ConcurrencyError, LeaseLostError, ProjectionNotFoundError
from ironflow.store._backend import ReadTxn, WriteTxn
from ironflow.store._codec import decode_record, encode_record, loads
from ironflow.store._keys import projection_key
from ironflow.store._liveness import process_alive
from ironflow.store._records import (
    ProjectionLease,
    ProjectionSpec,
    ProjectionState,
    ProjectionStatus,
    ProjectionWrite,
    WorkerInfo,
)

__all__ = [
    "free",
    "position",
    "register",
    "release",
    "request_rebuild",
    "state",
    "status",
    "take",
    "write",
]


def register(txn: WriteTxn, specs: list[ProjectionSpec]) -> None:
    """Make these projections known, keeping the position and state of existing ones."""
    for spec in specs:
        key = projection_key(spec.name)
        raw = txn.get("projections", key)
        shape = (tuple(spec.events), spec.partitioned, spec.initial_state)
        if raw is None:
            new = ProjectionStatus(
                name=spec.name,
                events=shape[0],
                partitioned=spec.partitioned,
                initial_state=spec.initial_state,
            )
        else:
            old = decode_record(raw, ProjectionStatus)
            new = attrs.evolve(
                old, events=shape[0], partitioned=spec.partitioned, initial_state=spec.initial_state
            )
            # State folded under another definition no longer matches this one.
            if (old.events, old.partitioned, old.initial_state) != shape and old.position > 0:
                new = attrs.evolve(
                    new, rebuild_requested=max(old.rebuild_requested, old.rebuilt) + 1
                )
        value = encode_record(new)
        if raw != value:
            txn.put("projections", key, value)


def status(txn: ReadTxn, name: str) -> ProjectionStatus:
    """The projection's status with its runner, or ProjectionNotFoundError naming the known."""
    key = projection_key(name)
    raw = txn.get("projections", key)
    if raw is None:
        known = [k.decode() for k, _ in txn.scan("projections")]
        raise ProjectionNotFoundError(name, known)
    found = decode_record(raw, ProjectionStatus)
    lease_raw = txn.get("projection_leases", key)
    if lease_raw is not None:
        lease = decode_record(lease_raw, ProjectionLease)
        found = attrs.evolve(found, runner=lease.worker, runner_expires_at=lease.expires_at)
    return found


def position(txn: ReadTxn, name: str) -> int:
    """The projection's position (0 for one not registered yet)."""
    raw = txn.get("projections", projection_key(name))
    return 0 if raw is None else decode_record(raw, ProjectionStatus).position


def state(txn: ReadTxn, name: str, partitions: Collection[str] | None) -> ProjectionState:
    found = status(txn, name)
    prefix = name.encode() + b"\x00"
    value: object
    if not found.partitioned:
        raw = txn.get("projection_parts", prefix)
        value = found.initial_state if raw is None else loads(raw)
    elif partitions is None:
        value = {
            key[len(prefix) :].decode(): loads(raw)
            for key, raw in txn.scan("projection_parts", prefix=prefix)
        }
    else:
        parts = {}
        for part in partitions:
            if not isinstance(part, str) or "\x00" in part:
                continue
            raw = txn.get("projection_parts", prefix + part.encode())
            if raw is not None:
                parts[part] = loads(raw)
        value = parts
    return ProjectionState(
        name=found.name,
        state=value,
        position=found.position,
        updated_at=found.updated_at,
        partitioned=found.partitioned,
    )


def free(txn: ReadTxn, name: str, worker: WorkerInfo, now: float) -> bool:
    """Whether ``worker`` may take the projection's lease now."""
    raw = txn.get("projection_leases", projection_key(name))
    if raw is None:
        return True
    lease = decode_record(raw, ProjectionLease)
    return (
        lease.worker.id == worker.id
        or lease.expires_at <= now
        or process_alive(lease.worker) is False
    )


def take(txn: WriteTxn, name: str, worker: WorkerInfo, now: float, ttl: float) -> bool:
    """Take or extend the lease; return whether ``worker`` holds it."""
    status(txn, name)
    if not free(txn, name, worker, now):
        return False
    lease = ProjectionLease(name=name, worker=worker, expires_at=now + ttl)
    txn.put("projection_leases", projection_key(name), encode_record(lease))
    return True


def release(txn: WriteTxn, name: str, worker: WorkerInfo) -> None:
    key = projection_key(name)
    raw = txn.get("projection_leases", key)
    if raw is not None and decode_record(raw, ProjectionLease).worker.id == worker.id:
        txn.delete("projection_leases", key)


def write(
    txn: WriteTxn,
    worker: WorkerInfo,
    change: ProjectionWrite,
    encoded: list[tuple[bytes, bytes]],
    now: float,
) -> ProjectionStatus:
    """Apply one batch (or a rebuild) of a projection, fenced by lease and position."""
    name = change.name
    found = status(txn, name)
    if found.runner is None or found.runner.id != worker.id:
        raise LeaseLostError(
            f"worker {worker.id} does not hold projection {name!r}: another worker "
            "took it over (or it was never leased); nothing was written"
        )
    if change.rebuild_ticket is None and found.position != change.from_position:
        raise ConcurrencyError(
            f"projection {name!r} is at position {found.position}, not "
            f"{change.from_position}: it was written since it was read; read it again",
            expected=change.from_position,
            actual=found.position,
        )
    if change.rebuild_ticket is not None and found.position > change.to_position:
        raise ConcurrencyError(
            f"projection {name!r} is at position {found.position}, past the rebuilt "
            f"position {change.to_position}; fold the events after it and write again",
            expected=change.to_position,
            actual=found.position,
        )
    if change.rebuild_ticket is not None:
        prefix = projection_key(name) + b"\x00"
        for key in [k for k, _ in txn.scan("projection_parts", prefix=prefix)]:
            txn.delete("projection_parts", key)
    for part_key, value in encoded:
        txn.put("projection_parts", part_key, value)
    found = attrs.evolve(
        found,
        position=change.to_position,
        updated_at=now,
        generation=found.generation + 1,
        rebuilt=max(found.rebuilt, change.rebuild_ticket or 0),
    )
    stored = attrs.evolve(found, runner=None, runner_expires_at=0.0)
    txn.put("projections", projection_key(name), encode_record(stored))
    return found


def request_rebuild(txn: WriteTxn, name: str) -> int:
    found = status(txn, name)
    ticket = max(found.rebuild_requested, found.rebuilt) + 1
    stored = attrs.evolve(found, rebuild_requested=ticket, runner=None, runner_expires_at=0.0)
    txn.put("projections", projection_key(name), encode_record(stored))
    return ticket

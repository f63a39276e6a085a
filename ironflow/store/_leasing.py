"""Leasing: which runs a worker takes, orphan takeover, heartbeats.

A worker takes pending runs first, oldest first, skipping paused ones and those whose
concurrency key is full; then orphaned ones: a lease past its TTL, or one whose holder
is a dead process on this machine (taken at once). A worker never takes over its own
live lease. The lease call is also the store's clock tick: it fires due timers,
debounced bursts and cron ticks first, in the same transaction.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection

import attrs

from ironflow.store._backend import Claiming, ReadTxn, Scan, WriteTxn
from ironflow.store._codec import decode_record, encode_record
from ironflow.store._flowctl import FlowControl
from ironflow.store._keys import steps_prefix
from ironflow.store._liveness import process_alive
from ironflow.store._records import Lease, LeasedRun, Run, WorkerInfo
from ironflow.store._runs import encode_lease, last_seq, new_lease, run_in, step_log
from ironflow.store._suspend import fire_timers, timers_due

__all__ = [
    "LOOK",
    "LeaseWatch",
    "claiming",
    "heartbeat",
    "idle",
    "lease",
    "steps_scans",
    "with_steps",
]

_UNSEEN = object()

_Rows = Callable[[str, Callable[[bytes, bytes], bool], int], list[tuple[bytes, bytes]]]


def _scanned(txn: ReadTxn) -> _Rows:
    """``claim`` for a read transaction: the same choice, taking nothing."""

    def rows(
        table: str, accept: Callable[[bytes, bytes], bool], limit: int
    ) -> list[tuple[bytes, bytes]]:
        out: list[tuple[bytes, bytes]] = []
        if limit > 0:
            for key, value in txn.scan(table):
                if accept(key, value):
                    out.append((key, value))
                    if len(out) >= limit:
                        break
        return out

    return rows


@attrs.define
class LeaseWatch:
    """What an idle worker's last full look at the leases found, to skip the next ones.

    Why: looking for orphans reads every lease, so an idle worker polling beside 2,000
    runs held by live workers spent most of a core on it. The leases cannot have turned
    orphan without a commit (``changes``), a lease lapsing (``earliest``) or a holder
    dying; while none of the three happened, a look would find what the last one did,
    so only the holders' liveness is checked: a cost in distinct holders, not in runs.
    """

    changes: int = -1
    #: The earliest expiry of any lease seen: from then on some lease may have lapsed.
    earliest: float = float("inf")
    holders: set[WorkerInfo] = attrs.Factory(set)

    def still(self, changes: int, now: float) -> bool:
        """Whether a look now would find no orphan, as the last one did."""
        return (
            changes == self.changes
            and now < self.earliest
            and all(process_alive(h) is not False for h in self.holders)
        )


def _candidates(
    txn: ReadTxn,
    rows: _Rows,
    flow: FlowControl,
    worker: WorkerInfo,
    agents: Collection[str],
    limit: int,
    now: float,
    *,
    orphans: bool = True,
    watch: LeaseWatch | None = None,
) -> list[str]:
    wanted = {a.encode() for a in agents}
    taken: dict[tuple[bytes, str], int] = {}
    # One liveness check per distinct holder per look, not one per lease it holds.
    alive: dict[WorkerInfo, bool | None] = {}

    def holder_alive(holder: WorkerInfo) -> bool | None:
        found = alive.get(holder, _UNSEEN)
        if found is _UNSEEN:
            found = alive[holder] = process_alive(holder)
        return found  # type: ignore[return-value]

    def ready(key: bytes, agent: bytes) -> bool:
        # Oldest first; a run whose key has no free slot waits, queued.
        return (
            agent in wanted
            and txn.get("paused", key) is None
            and flow.slot_free(txn, key, agent, taken)
        )

    def orphaned(key: bytes, raw: bytes) -> bool:
        lease = decode_record(raw, Lease)
        if watch is not None:
            watch.earliest = min(watch.earliest, lease.expires_at)
            watch.holders.add(lease.worker)
        if lease.expires_at > now and (
            lease.worker.id == worker.id or holder_alive(lease.worker) is not False
        ):
            return False
        run_raw = txn.get("runs", key)
        return run_raw is not None and decode_record(run_raw, Run).agent in agents

    found = [key.decode() for key, _ in rows("ready", ready, limit)]
    if orphans:
        found += [key.decode() for key, _ in rows("leases", orphaned, limit - len(found))]
    return found


#: What a look for work reads whatever it finds: the ready runs, the paused ones and the
#: agents (read for each ready run), the first timer, the debounces and the crons.
LOOK = (
    Scan("ready"),
    Scan("paused"),
    Scan("agents"),
    Scan("timers"),
    Scan("debounces"),
    Scan("crons"),
)


#: The rows a lease reads next of the runs it claims (record, lease, cancel request):
#: read with the claim; its pause request was read with the look.
_TAKEN_ALSO = ("runs", "leases", "cancels")


def claiming(agents: Collection[str], limit: int) -> tuple[Claiming, ...]:
    """The claim of ready runs a lease most likely makes, for a prefetch: the oldest
    of a wanted agent. Only a guess, sent with the look for work so the claim costs no
    request of its own when it takes those; when :func:`_candidates` takes others (one
    waits for a full concurrency slot or was paused, a run made ready in the
    transaction comes first), the claim asks. Not paused is not part of the guess: a
    paused run in the queue is rare (``FlowControl.fire`` moves it out), and checking
    every queued run's pause request cost the server a probe a run in the queue."""
    wanted = tuple(sorted(a.encode() for a in agents))
    return (Claiming("ready", wanted, limit, also=_TAKEN_ALSO),)


def idle(
    txn: ReadTxn,
    flow: FlowControl,
    worker: WorkerInfo,
    agents: Collection[str],
    limit: int,
    now: float,
    clock_now: float,
    *,
    orphans: bool = True,
    watch: LeaseWatch | None = None,
) -> bool:
    """Whether a lease call would find nothing to do: a read, for the idle poll.

    ``orphans=False`` skips the look at the leases (a :class:`LeaseWatch` said it would
    find nothing); a ``watch`` given records what the look at the leases saw.
    """
    rows = _scanned(txn)
    txn.prefetch(scans=(*LOOK, Scan("leases")) if orphans else LOOK)
    return (
        not _candidates(txn, rows, flow, worker, agents, limit, now, orphans=orphans, watch=watch)
        and not timers_due(txn, clock_now)
        and not flow.due(txn, clock_now)
    )


def lease(
    txn: WriteTxn,
    flow: FlowControl,
    worker: WorkerInfo,
    agents: Collection[str],
    limit: int,
    ttl: float,
    now: float,
    clock_now: float,
    *,
    steps: bool = True,
) -> list[LeasedRun]:
    """Lease up to ``limit`` runs, each with its step records; see the module.

    ``steps=False`` leaves the records out (empty), for a store that reads them once
    the lease has committed (:func:`with_steps`; ``PostgresStore``: under SERIALIZABLE
    a read of the steps here tied the lease into other workers' step inserts).
    """
    txn.prefetch(scans=LOOK, claims=claiming(agents, limit))
    # Due timers first: a run whose sleep ended is pending from here on.
    fire_timers(txn, clock_now, now)
    # Due debounced runs and cron ticks: one transaction fires each tick once. The log's
    # head is read only for a tick that fires: under SERIALIZABLE every lease reading it
    # would conflict with every emit.
    flow.fire(txn, clock_now, functools.partial(last_seq, txn))
    leased = []

    def claimed(
        table: str, accept: Callable[[bytes, bytes], bool], limit: int
    ) -> list[tuple[bytes, bytes]]:
        # The rows the lease reads next of the runs it takes, read with the claim.
        if limit <= 0:
            return []
        return txn.claim(table, accept=accept, limit=limit, also=_TAKEN_ALSO)

    found = _candidates(txn, claimed, flow, worker, agents, limit, now)
    # Each run's record, lease and cancel request (and its steps, if read here), read
    # together, if the claim did not.
    txn.prefetch(
        gets=[(table, run_id.encode()) for run_id in found for table in _TAKEN_ALSO],
        scans=_steps_of(found) if steps else (),
    )
    for run_id in found:
        key = run_id.encode()
        run = run_in(txn, run_id)
        run = attrs.evolve(run, status="running", attempt=run.attempt + 1, updated_at=now)
        # An orphan still has its dead or lapsed holder's lease: a takeover.
        prior = txn.get("leases", key)
        held = new_lease(txn, run_id, worker, now + ttl, run.attempt)
        txn.put("runs", key, encode_record(run))
        txn.discard("ready", key)
        txn.put("leases", key, encode_lease(held))
        leased.append(
            LeasedRun(
                run=run,
                steps=step_log(txn, run_id) if steps else (),
                lease=held,
                taken_from=None if prior is None else decode_record(prior, Lease).worker,
            )
        )
    return leased


def _steps_of(run_ids: Collection[str]) -> list[Scan]:
    return [Scan("steps", steps_prefix(run_id)) for run_id in run_ids]


def steps_scans(leased: Collection[LeasedRun]) -> list[Scan]:
    """What :func:`with_steps` reads: each leased run's step records."""
    return _steps_of([r.run.id for r in leased])


def with_steps(txn: ReadTxn, leased: list[LeasedRun]) -> list[LeasedRun]:
    """The leased runs, each with its step records as ``txn`` reads them.

    In the lease's own transaction, or after it committed in one that cannot miss a step
    committed later by the run's previous holder (whose lease lapsed): PostgreSQL's
    ``SERIALIZABLE`` (``PostgresBackend.write_then_read``) aborts one of the
    two if that step's transaction read the old lease and this read does not see it.
    A plain snapshot would miss it, and the new holder run that step a second time.
    """
    txn.prefetch(scans=steps_scans(leased))
    return [attrs.evolve(r, steps=step_log(txn, r.run.id)) for r in leased]


def heartbeat(
    txn: WriteTxn, worker: WorkerInfo, run_ids: Collection[str], expires: float
) -> set[str]:
    """Extend this worker's leases on these runs; return the ones it still holds."""
    held = set()
    for run_id in run_ids:
        raw = txn.get("leases", run_id.encode())
        if raw is None:
            continue
        lease = decode_record(raw, Lease)
        if lease.worker.id == worker.id:
            lease = attrs.evolve(lease, expires_at=expires)
            txn.put("leases", run_id.encode(), encode_lease(lease))
            held.add(run_id)
    return held

"""The run state machine: every rule of a run's life, written once, over any backend.

:class:`StoreMachine` is the :class:`~ironflow.store.Store` protocol over the narrow
transactional interface of ``_backend.py``. Each method checks its arguments, then
runs one transaction whose rules live in the modules below, by concern:

- ``_runs.py``: emit and triggers, fencing, recording a step, finish and release,
  cancel (the whole tree of child runs), pause, resume, re-run, spawn;
- ``_leasing.py``: leasing, orphan takeover, heartbeats;
- ``_suspend.py`` and ``_waits.py``: suspension and wake (timers, event waits,
  child runs, deadlines);
- ``_flowctl.py``: filters, concurrency, debounce, cancel-on, cron, pause requests;
- ``_streams.py``: deleting from entity streams (appends are emits);
- ``_projections.py``: projection leases, writes and rebuilds;
- ``_retention.py``: prune; ``_invariants.py``: ``check_valid``.

A backend (LMDB, memory, SQL) supplies storage and transactions, never a rule, so the
stores cannot drift apart; the agreement test (``tests/store/test_agreement.py``) runs
the same operations against each and compares every answer.

Two clocks: ``time.time()`` stamps records and times leases; ``clock`` drives durable
timers (sleeps, wait timeouts, retry backoff, debounce, cron), so a test with a fake
clock can end a seven-day sleep at once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection, Sequence
from contextlib import AbstractContextManager
from typing import Any, TypeVar

from ironflow._pure._ids import new_id
from ironflow._pure._limits import MAX_SEQ
from ironflow._pure._trace import TraceContext, check_trace
from ironflow.errors import InvalidInputError, RunNotFoundError
from ironflow.store import _checks as checks
from ironflow.store import _copies, _leasing, _projections, _runs, _streams
from ironflow.store._backend import Backend, ReadTxn, WriteTxn
from ironflow.store._codec import (
    decode_record,
    dumps,
    encode_record,
    event_data,
    to_json_value,
)
from ironflow.store._flowctl import FlowControl
from ironflow.store._history import History
from ironflow.store._invariants import check_valid
from ironflow.store._keys import (
    partition_key,
    projection_key,
    run_key,
    stream_key,
    u64,
)
from ironflow.store._records import (
    FINISHED,
    AgentSpec,
    EmitResult,
    ErrorInfo,
    Event,
    Lease,
    LeasedRun,
    ProjectionSpec,
    ProjectionState,
    ProjectionStatus,
    ProjectionWrite,
    PruneResult,
    Run,
    StepAck,
    StepRecord,
    SuspendResult,
    Suspension,
    WorkerInfo,
)
from ironflow.store._suspend import suspend
from ironflow.store._wake import Wakeups

__all__ = ["StoreMachine"]


T = TypeVar("T")

#: How often wait_for_run looks again for a run finished by another process.
_FINISH_RECHECK = 0.1
#: The most (worker, agents) callers whose last lease a store remembers (idle watches,
#: backlogs): hints, so forgetting them all costs one full look each, never a wrong
#: answer; a server that outlives many worker processes would otherwise keep them all.
_CALLERS_KEPT = 1024


class StoreMachine:
    """The Store protocol over a :class:`~ironflow.store._backend.Backend`.

    Safe to share between threads. Every write method returns once the backend made
    its transaction durable; each applies whole or leaves nothing.
    """

    def __init__(self, backend: Backend, *, clock: Callable[[], float] = time.time) -> None:
        self._backend = backend
        self._clock = clock
        self._flow = FlowControl(clock)
        self._wakeups = backend.wakeups
        # Per (worker, agents): what its last idle look at the leases found (_leasing).
        self._watches: dict[tuple[str, frozenset[str]], _leasing.LeaseWatch] = {}
        # The (worker, agents) whose last lease took all it asked for: a backlog.
        self._busy: set[tuple[str, frozenset[str]]] = set()
        # Per thread: the wake-up generation seen before its last look for work.
        self._seen = threading.local()
        # Signalled when a projection advances, with a count so a waiter misses nothing.
        self._advanced = threading.Condition()
        self._advances = 0

    # -- plumbing -------------------------------------------------------------------

    def _read(self) -> AbstractContextManager[ReadTxn]:
        return self._backend.read()

    def _write(self, op: Callable[[WriteTxn], T]) -> T:
        return self._backend.write(op)

    def _notify(self) -> None:
        # After the commit: every waiter, in this process and the others, looks again.
        self._wakeups.post()

    def close(self) -> None:
        self._backend.close()

    def __enter__(self) -> StoreMachine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def wakeups(self) -> Wakeups:
        """Posted after every write that may make work, by any process on this data."""
        return self._wakeups

    def changes(self) -> int:
        """A number that grows with every committed write (see ``Backend.changes``)."""
        return self._backend.changes()

    def check_valid(self) -> None:
        """Assert the store's indexes agree with its runs (tests' invariants call it)."""
        with self._read() as txn:
            check_valid(txn)

    # -- agents and events ----------------------------------------------------------

    def register_agents(self, agents: Sequence[AgentSpec]) -> None:
        """Check every spec whole, then store them all, or none (InvalidInputError)."""
        specs = checks.agent_specs(agents)
        encoded = [(spec.id.encode(), encode_record(spec)) for spec in specs]

        def op(txn: WriteTxn) -> None:
            for (key, value), spec in zip(encoded, specs, strict=True):
                if txn.get("agents", key) != value:
                    txn.put("agents", key, value)
                self._flow.registered(txn, spec)

        self._write(op)

    def agents(self) -> list[AgentSpec]:
        with self._read() as txn:
            return [decode_record(raw, AgentSpec) for _, raw in txn.scan("agents")]

    def emit(
        self, name: str, data: Any, *, id: str | None = None, trace: TraceContext | None = None
    ) -> EmitResult:
        checks.event_name(name)
        if id is not None:
            checks.key(id, "an event id")
        check_trace(trace, f"emit {name!r}")
        data = event_data(data, f"event {name!r} data")
        now = time.time()
        clock_now = self._clock()
        result = self._write(
            lambda txn: _runs.emit(txn, self._flow, name, data, id, now, clock_now, trace=trace)
        )
        # Runners of projections wait for new events too, not only for new runs.
        self._notify()
        return result

    def events(self, *, after_seq: int = 0, limit: int = 1000) -> list[Event]:
        """Events of the log after position ``after_seq``, oldest first."""
        out: list[Event] = []
        if limit < 1:
            return out
        with self._read() as txn:
            for _, raw in txn.scan("events", start=u64(max(after_seq, 0) + 1)):
                out.append(decode_record(raw, Event))
                if len(out) >= limit:
                    break
        return out

    # -- leasing ---------------------------------------------------------------------

    def lease_runs(
        self, worker: WorkerInfo, agents: Collection[str], *, limit: int, ttl: float
    ) -> list[LeasedRun]:
        if limit <= 0 or not agents:
            return []
        # Taken before looking: work made after the look wakes the next wait_for_work.
        self._seen.gen = self._wakeups.current()
        now = time.time()
        clock_now = self._clock()
        # An idle poll costs a read transaction, not a durable write; and while nothing
        # was committed, no lease lapsed and no holder died, not even a look at the leases.
        key = (worker.id, frozenset(agents))
        # A caller whose last lease took all it asked for is working through a backlog:
        # the look would find work, and only add a read transaction to the lease's.
        if key not in self._busy:
            changes = self._backend.changes()  # before the look: a commit after it shows
            last = self._watches.get(key)
            skip = last is not None and last.still(changes, now)
            watch = None if skip else _leasing.LeaseWatch(changes=changes)
            with self._read() as txn:
                if _leasing.idle(
                    txn,
                    self._flow,
                    worker,
                    agents,
                    limit,
                    now,
                    clock_now,
                    orphans=not skip,
                    watch=watch,
                ):
                    if watch is not None:
                        if len(self._watches) >= _CALLERS_KEPT:
                            self._watches.clear()
                        self._watches[key] = watch
                    return []
            self._watches.pop(key, None)
        _, leased = self._write_leasing(
            lambda txn: _leasing.lease(
                txn,
                self._flow,
                worker,
                agents,
                limit,
                ttl,
                now,
                clock_now,
                steps=self._steps_in_lease,
            ),
            lambda leased: leased,
        )
        self._took(key, leased, limit)
        return leased

    #: Whether a lease reads its runs' step records in its own transaction; a store
    #: that reads them after the commit (``PostgresStore``) says False and reads them in
    #: :meth:`_write_leasing` (``_leasing.with_steps`` says why that must be serializable).
    _steps_in_lease = True

    def _write_leasing(
        self, op: Callable[[WriteTxn], T], leased: Callable[[T], list[LeasedRun]]
    ) -> tuple[T, list[LeasedRun]]:
        """``op``, a write that leases the runs ``leased`` finds in its result: that
        result, and those runs with their step records (here the op read them)."""
        result = self._write(op)
        return result, leased(result)

    def _took(self, key: tuple[str, frozenset[str]], leased: list[LeasedRun], limit: int) -> None:
        if len(leased) >= limit:
            if len(self._busy) >= _CALLERS_KEPT:
                self._busy.clear()
            self._busy.add(key)
        else:
            self._busy.discard(key)

    def wait_for_work(self, timeout: float) -> None:
        seen = getattr(self._seen, "gen", None)
        if seen is None:
            seen = self._wakeups.current()
        self._seen.gen = self._wakeups.wait(seen, timeout)

    def wait_for_run(self, run_id: str, *, timeout: float) -> Run:
        deadline = time.monotonic() + timeout
        while True:
            seen = self._wakeups.current()  # before looking: a finish after wakes us
            run = self.get_run(run_id)
            remaining = deadline - time.monotonic()
            if run.status in FINISHED or remaining <= 0:
                return run
            # A finish anywhere wakes us; a lost wake-up costs one recheck interval.
            self._wakeups.wait(seen, min(remaining, _FINISH_RECHECK))

    def heartbeat(self, worker: WorkerInfo, run_ids: Collection[str], *, ttl: float) -> set[str]:
        if not run_ids:
            return set()
        ids = list(run_ids)
        return self._write(lambda txn: _leasing.heartbeat(txn, worker, ids, time.time() + ttl))

    # -- steps and run completion ----------------------------------------------------

    def record_step(self, worker: WorkerInfo, step: StepRecord) -> StepAck:
        value = _runs.STEPS.encode(step)
        return self._write(lambda txn: _runs.record_step(txn, self._flow, worker, step, value))

    def finish_run(
        self,
        worker: WorkerInfo,
        run_id: str,
        *,
        status: str,
        output: Any = None,
        error: ErrorInfo | None = None,
        attempt: int,
    ) -> Run:
        run, _ = self._finish(
            worker, run_id, status=status, output=output, error=error, attempt=attempt
        )
        return run

    def finish_and_lease(
        self,
        worker: WorkerInfo,
        run_id: str,
        *,
        status: str,
        output: Any = None,
        error: ErrorInfo | None = None,
        attempt: int,
        agents: Collection[str],
        limit: int,
        ttl: float,
    ) -> list[LeasedRun]:
        _, leased = self._finish(
            worker,
            run_id,
            status=status,
            output=output,
            error=error,
            attempt=attempt,
            lease=(agents, limit, ttl) if limit > 0 and agents else None,
        )
        return leased

    def _finish(
        self,
        worker: WorkerInfo,
        run_id: str,
        *,
        status: str,
        output: Any,
        error: ErrorInfo | None,
        attempt: int,
        lease: tuple[Collection[str], int, float] | None = None,
    ) -> tuple[Run, list[LeasedRun]]:
        """Finish the run and, given ``(agents, limit, ttl)``, lease as
        :meth:`lease_runs` would, in the same transaction: one commit, both or neither."""
        checks.finish_status(status)
        run_key(run_id)
        output = to_json_value(output, f"run {run_id} output", "output")
        if lease is not None:
            # Taken before looking, as lease_runs takes it (see wait_for_work).
            self._seen.gen = self._wakeups.current()
        now = time.time()
        clock_now = self._clock()

        def op(txn: WriteTxn) -> tuple[Run, list[LeasedRun]]:
            run = _runs.finish(
                txn,
                self._flow,
                worker,
                run_id,
                attempt,
                status=status,  # type: ignore[arg-type]  # checked against FINISHED above
                output=output,
                error=error,
                now=now,
                clock_now=clock_now,
                # The same snapshot either way, and what is read sees the finish's writes.
                then=() if lease is None else _leasing.LOOK,
                claims=() if lease is None else _leasing.claiming(lease[0], lease[1]),
            )
            if lease is None:
                return run, []
            agents, limit, ttl = lease
            # After the finish, so a concurrency slot or a parent it frees is seen.
            return run, _leasing.lease(
                txn,
                self._flow,
                worker,
                agents,
                limit,
                ttl,
                now,
                clock_now,
                steps=self._steps_in_lease,
            )

        (run, _), leased = self._write_leasing(op, lambda done: done[1])
        if lease is not None:
            self._took((worker.id, frozenset(lease[0])), leased, lease[1])
        self._notify()
        return run, leased

    def release_run(self, worker: WorkerInfo, run_id: str, *, attempt: int) -> None:
        run_key(run_id)
        self._write(lambda txn: _runs.release(txn, worker, run_id, attempt, time.time()))
        self._notify()

    def request_cancel(self, run_id: str) -> Run:
        run_key(run_id)
        now = time.time()
        run = self._write(
            lambda txn: _runs.cancel_tree(txn, self._flow, run_id, now, self._clock())
        )
        # A parent waiting for this run, now cancelled, is pending again.
        self._notify()
        return run

    def pause_run(self, run_id: str) -> Run:
        run_key(run_id)
        return self._write(lambda txn: _runs.pause(txn, run_id, time.time()))

    def resume_run(self, run_id: str, *, from_step: str | None = None) -> Run:
        run_key(run_id)
        now = time.time()
        if from_step is None:
            run = self._write(lambda txn: _runs.resume(txn, run_id, now))
        else:
            run = self._write(lambda txn: _runs.rerun(txn, run_id, from_step, now))
        self._notify()
        return run

    def fork_run(
        self, run_id: str, *, from_step: str, data: Any = None, id: str | None = None
    ) -> Run:
        run_key(run_id)
        fork_id = new_id("run_") if id is None else checks.new_run_id(id, "fork_run: id")
        checks.step_id(from_step, "fork_run: from_step")
        if data is not None:
            data = event_data(data, f"the data of a fork of run {run_id}")
        now = time.time()
        run = self._write(
            lambda txn: _copies.fork(txn, self._flow, run_id, from_step, data, now, fork_id)
        )
        self._notify()
        return run

    def import_history(self, history: History, *, new_ids: bool = False) -> Run:
        now = time.time()
        clock_now = self._clock()
        run = self._write(
            lambda txn: _copies.import_history(txn, self._flow, history, new_ids, now, clock_now)
        )
        self._notify()
        return run

    # -- suspended runs and child runs -------------------------------------------------

    def suspend_run(
        self, worker: WorkerInfo, run_id: str, suspension: Suspension, *, attempt: int
    ) -> SuspendResult:
        run_key(run_id)
        s = checks.suspension(suspension)

        def op(txn: WriteTxn) -> SuspendResult:
            _runs.check_holder(txn, worker, run_id, attempt)
            run = _runs.run_in(txn, run_id)
            return suspend(txn, run, s, self._clock(), time.time())

        return self._write(op)

    def spawn_run(
        self,
        worker: WorkerInfo,
        parent_id: str,
        step_id: str,
        agent: str,
        data: Any,
        *,
        attempt: int,
        trace: TraceContext | None = None,
    ) -> Run:
        checks.name(agent, "spawn_run: the agent id")
        checks.step_id(step_id, "spawn_run: the step id")
        run_key(parent_id)
        check_trace(trace, f"spawn_run of {agent!r}")
        data = event_data(data, f"spawn of {agent!r} data")
        now = time.time()
        run = self._write(
            lambda txn: _runs.spawn(
                txn, worker, parent_id, attempt, step_id, agent, data, now, trace=trace
            )
        )
        self._notify()
        return run

    # -- entity streams ------------------------------------------------------------------

    def append_to_stream(
        self,
        stream_id: str,
        name: str,
        data: Any,
        *,
        expected_version: int | None = None,
        idempotency_key: str | None = None,
        trace: TraceContext | None = None,
    ) -> Event:
        _, data, idem = _stream_append(stream_id, name, data, idempotency_key)
        check_trace(trace, f"append_to_stream {stream_id!r}")
        if expected_version is not None:
            checks.integer(expected_version, "expected_version (0 for a new stream)", 0, MAX_SEQ)
        now = time.time()
        clock_now = self._clock()

        def op(txn: WriteTxn) -> Event:
            return _streams.append(
                txn,
                self._flow,
                stream_id,
                name,
                data,
                idem,
                expected_version,
                now,
                clock_now,
                trace=trace,
            )

        event = self._write(op)
        self._notify()
        return event

    def append_many_to_stream(
        self,
        stream_id: str,
        appends: Sequence[tuple[str, Any, str | None]],
        *,
        trace: TraceContext | None = None,
    ) -> list[Event]:
        """Several appends to one stream in one transaction, durable together or not at
        all: each ``(name, data, idempotency_key)`` in order, as :meth:`append_to_stream`
        would make it alone (no ``expected_version``). One commit for them all: what the
        LangGraph saver uses for a node's writes and the checkpoint after them. Not in the
        Store protocol (a RemoteStore appends one at a time)."""
        checked = [_stream_append(stream_id, *append) for append in appends]
        check_trace(trace, f"append_many_to_stream {stream_id!r}")
        if not checked:
            return []
        now = time.time()
        clock_now = self._clock()
        events = self._write(
            lambda txn: _streams.append_many(
                txn, self._flow, stream_id, checked, now, clock_now, trace=trace
            )
        )
        self._notify()
        return events

    def read_stream(
        self, stream_id: str, *, from_version: int = 0, limit: int = 1000
    ) -> list[Event]:
        prefix = stream_key(stream_id) + b"\x00"
        out: list[Event] = []
        if limit < 1:
            return out
        with self._read() as txn:
            start = prefix + u64(max(from_version, 0))
            for _, seq in txn.scan("streams", prefix=prefix, start=start):
                out.append(decode_record(txn.get("events", seq) or b"", Event))
                if len(out) >= limit:
                    break
        return out

    def delete_stream_events(self, stream_id: str, versions: Collection[int] | None = None) -> int:
        skey = stream_key(stream_id)
        wanted: frozenset[int] | None = None
        if versions is not None:
            wanted = checks.stream_versions(versions)
            if not wanted:
                return 0
        return self._write(lambda txn: _streams.delete(txn, skey, wanted))

    # -- projections ---------------------------------------------------------------------

    def register_projections(self, specs: Sequence[ProjectionSpec]) -> None:
        checked = checks.projection_specs(specs)
        self._write(lambda txn: _projections.register(txn, checked))
        self._notify()

    def list_projections(self) -> list[ProjectionStatus]:
        with self._read() as txn:
            names = [key.decode() for key, _ in txn.scan("projections")]
            return [_projections.status(txn, name) for name in names]

    def projection_status(self, name: str) -> ProjectionStatus:
        with self._read() as txn:
            return _projections.status(txn, name)

    def get_projection(
        self, name: str, *, partitions: Collection[str] | None = None
    ) -> ProjectionState:
        with self._read() as txn:
            return _projections.state(txn, name, partitions)

    def lease_projection(self, worker: WorkerInfo, name: str, *, ttl: float) -> bool:
        now = time.time()
        # Polling a projection someone else serves costs a read, not a durable write.
        with self._read() as txn:
            _projections.status(txn, name)
            if not _projections.free(txn, name, worker, now):
                return False
        return self._write(lambda txn: _projections.take(txn, name, worker, now, ttl))

    def release_projection(self, worker: WorkerInfo, name: str) -> None:
        self._write(lambda txn: _projections.release(txn, name, worker))
        self._notify()

    def write_projection(self, worker: WorkerInfo, write: ProjectionWrite) -> ProjectionStatus:
        name = write.name
        projection_key(name)
        if write.to_position < write.from_position:
            raise InvalidInputError(
                f"projection {name!r}: a write cannot move from position "
                f"{write.from_position} back to {write.to_position}"
            )
        encoded = [
            (partition_key(name, part), dumps(state, f"projection {name!r} state"))
            for part, state in write.partitions.items()
        ]
        now = time.time()
        status = self._write(lambda txn: _projections.write(txn, worker, write, encoded, now))
        with self._advanced:
            self._advances += 1
            self._advanced.notify_all()
        return status

    def request_projection_rebuild(self, name: str) -> int:
        ticket = self._write(lambda txn: _projections.request_rebuild(txn, name))
        self._notify()
        return ticket

    def wait_for_projection(self, name: str, position: int, *, timeout: float) -> int:
        projection_key(name)
        deadline = time.monotonic() + timeout
        while True:
            with self._advanced:
                seen = self._advances
            with self._read() as txn:
                current = _projections.position(txn, name)
            remaining = deadline - time.monotonic()
            if current >= position or remaining <= 0:
                return current
            with self._advanced:
                if self._advances == seen:
                    # A runner in another process advances it without signalling us: poll.
                    self._advanced.wait(min(remaining, 0.05))

    # -- reading -------------------------------------------------------------------

    def get_run(self, run_id: str) -> Run:
        key = run_key(run_id)
        with self._read() as txn:
            raw = txn.get("runs", key)
            if raw is None:
                raise RunNotFoundError(run_id)
            return decode_record(raw, Run)

    def get_steps(self, run_id: str) -> list[StepRecord]:
        run_key(run_id)
        with self._read() as txn:
            return _runs.steps_of(txn, run_id)

    def get_lease(self, run_id: str) -> Lease | None:
        key = run_key(run_id)
        with self._read() as txn:
            raw = txn.get("leases", key)
            return None if raw is None else decode_record(raw, Lease)

    def list_runs(
        self, *, limit: int = 20, status: str | None = None, agent: str | None = None
    ) -> list[Run]:
        out: list[Run] = []
        if limit < 1:
            return out
        with self._read() as txn:
            for _, raw in txn.scan("runs", reverse=True):
                run = decode_record(raw, Run)
                if (status is None or run.status == status) and (
                    agent is None or run.agent == agent
                ):
                    out.append(run)
                    if len(out) >= limit:
                        break
        return out

    # -- retention ---------------------------------------------------------------------------

    def prune_runs(
        self,
        *,
        older_than: float,
        statuses: Collection[str] | None = None,
        dry_run: bool = False,
    ) -> PruneResult:
        from ironflow.store._retention import prune

        return prune(self._backend, older_than=older_than, statuses=statuses, dry_run=dry_run)


def _stream_append(
    stream_id: str, name: str, data: Any, idempotency_key: str | None
) -> tuple[str, Any, bytes | None]:
    """An append's arguments checked: its name, its data as JSON, its idempotency key
    within the stream (stream key, NUL, the caller's key)."""
    skey = stream_key(stream_id)
    checks.event_name(name)
    idem: bytes | None = None
    if idempotency_key is not None:
        idem = skey + b"\x00" + checks.key(idempotency_key, "an idempotency key").encode()
    data = to_json_value(data, f"stream {stream_id!r} event {name!r} data", "data")
    return name, data, idem

"""PostgresStore: the state machine over PostgreSQL, for stores shared by many hosts.

This module is storage only, as ``_lmdb.py`` is: every rule is the state machine's
(``_machine.py``), run on :class:`~ironflow.store._pgbackend.PostgresBackend`, whose
docstring says what PostgreSQL adds (serializable writes retried, few round trips,
the leasers' lock, wake-ups, lost connections and commit outcomes). What is here: the
store's few PostgreSQL-specific turns of its methods (the leasers' lock around a
lease, the speculative step, a lease's steps read after it commits, listening for
wake-ups once a caller waits) and the methods run again whole after a lost read.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Collection, Sequence
from typing import Any, TypeVar

from ironflow._pure._trace import TraceContext
from ironflow.errors import StoreFormatError
from ironflow.store._backend import WriteTxn
from ironflow.store._leasing import steps_scans, with_steps
from ironflow.store._machine import StoreMachine
from ironflow.store._pgbackend import PostgresBackend
from ironflow.store._pgschema import migrate
from ironflow.store._pgtxn import ReadAfter
from ironflow.store._pgurl import is_postgres_url, safe_url
from ironflow.store._records import (
    EmitResult,
    ErrorInfo,
    Event,
    LeasedRun,
    Run,
    StepAck,
    StepRecord,
    WorkerInfo,
)
from ironflow.store._wake import Wakeups

__all__ = ["PostgresStore", "is_postgres_url", "migrate", "safe_url"]

T = TypeVar("T")


class PostgresStore(StoreMachine):
    """The :class:`~ironflow.store.Store` on PostgreSQL: many servers and workers, on
    many hosts, share one database.

    ``url``: ``postgresql://user:password@host:5432/database``. The database's schema
    must be this version's: create or upgrade it with ``ironflow store migrate --store
    URL``; the store never changes it. ``pool_size``: connections this store may open
    (plus one that listens for wake-ups). ``give_up_after``: how long a call waits for
    an unreachable database before it raises (None: until it is back, as a worker does).
    """

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 8,
        give_up_after: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not isinstance(url, str) or not is_postgres_url(url):
            raise StoreFormatError(f"PostgresStore needs a postgresql:// URL, not {url!r}")
        self.url = url
        self.backend = PostgresBackend(url, pool_size=pool_size, give_up_after=give_up_after)
        super().__init__(self.backend, clock=clock)
        self.backend.on_wake = self._notify

    def __enter__(self) -> PostgresStore:
        return self

    def lease_runs(
        self, worker: WorkerInfo, agents: Collection[str], *, limit: int, ttl: float
    ) -> list[LeasedRun]:
        # A backend concern, not a rule: the machine's lease, one leaser at a time when
        # the leasers' lock comes soon (see the module's docstring).
        with self.backend.leasing():
            return super().lease_runs(worker, agents, limit=limit, ttl=ttl)

    def emit(
        self, name: str, data: Any, *, id: str | None = None, trace: TraceContext | None = None
    ) -> EmitResult:
        # Speculative too: the agents, the waits for its name and the log's head as this
        # store last saw them, checked by the guard (``_pgspec.py``).
        with self.backend.speculating("emit"):
            return super().emit(name, data, id=id, trace=trace)

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
        # Speculative as an emit, and on the stream's head as this store last wrote it
        # (its idempotency key guessed new): a LangGraph thread's appends come from
        # one saver, so its head is usually the one this store wrote.
        with self.backend.speculating("append"):
            return super().append_to_stream(
                stream_id,
                name,
                data,
                expected_version=expected_version,
                idempotency_key=idempotency_key,
                trace=trace,
            )

    def append_many_to_stream(
        self,
        stream_id: str,
        appends: Sequence[tuple[str, Any, str | None]],
        *,
        trace: TraceContext | None = None,
    ) -> list[Event]:
        with self.backend.speculating("append"):
            return super().append_many_to_stream(stream_id, appends, trace=trace)

    def record_step(self, worker: WorkerInfo, step: StepRecord) -> StepAck:
        # Speculative: run on the rows this store remembers, sent with a guard that
        # re-reads them, in one round trip (``_pgspec.py``); the machine's rule as is.
        with self.backend.speculating("record_step"):
            return super().record_step(worker, step)

    #: A lease's step records are read after it commits: read in its SERIALIZABLE
    #: transaction, the steps' index pages tied it into other workers' step inserts,
    #: and the lease was the pivot of most conflicts (docs/benchmarks.md).
    #: They are read in a SERIALIZABLE transaction of one statement sent right after the
    #: lease's COMMIT, in its round trip (``PostgresBackend.write_then_read``).
    _steps_in_lease = False

    def _write_leasing(
        self, op: Callable[[WriteTxn], T], leased: Callable[[T], list[LeasedRun]]
    ) -> tuple[T, list[LeasedRun]]:
        def then(result: T) -> ReadAfter[list[LeasedRun]]:
            runs = leased(result)
            return ReadAfter(steps_scans(runs), lambda txn: with_steps(txn, runs))

        return self.backend.write_then_read(op, then)

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
        # Its lease takes turns with the others, as lease_runs does: without the lock,
        # finishing workers raced for the same ready rows (half their transactions
        # rolled back with four workers, bench.pg_contention).
        with self.backend.leasing():
            return super().finish_and_lease(
                worker,
                run_id,
                status=status,
                output=output,
                error=error,
                attempt=attempt,
                agents=agents,
                limit=limit,
                ttl=ttl,
            )

    # Waiting for work is what needs wake-ups from other processes: listen from then on.

    def wait_for_work(self, timeout: float) -> None:
        self.backend.listen()
        super().wait_for_work(timeout)

    def wait_for_run(self, run_id: str, *, timeout: float) -> Run:
        self.backend.listen()
        return super().wait_for_run(run_id, timeout=timeout)

    @property
    def wakeups(self) -> Wakeups:
        """The wake-ups, listening from now on: whoever waits on them (a server's relay)
        needs other processes' too."""
        self.backend.listen()
        return self._wakeups

    @property
    def commit_observer(self) -> Callable[[float, int], None] | None:
        """Told each write transaction's seconds and writes (always 1); for metrics."""
        return self.backend.commit_observer

    @commit_observer.setter
    def commit_observer(self, observer: Callable[[float, int], None] | None) -> None:
        self.backend.commit_observer = observer

    def __repr__(self) -> str:
        return f"PostgresStore({safe_url(self.url)!r})"


#: The machine's methods that read and write nothing before their reads (the two
#: leases read first, then write): run again whole when PostgreSQL goes away under one
#: of their reads, as a write is run again when it goes away under the write.
_REREAD = (
    "agents",
    "check_valid",
    "events",
    "get_lease",
    "get_projection",
    "get_run",
    "get_steps",
    "lease_projection",
    "lease_runs",
    "list_projections",
    "list_runs",
    "projection_status",
    "read_stream",
    "wait_for_projection",
)


def _rereads(name: str) -> Callable[..., Any]:
    method = getattr(PostgresStore, name)

    @functools.wraps(method)
    def again(self: PostgresStore, *args: Any, **kwargs: Any) -> Any:
        return self.backend.reread(lambda: method(self, *args, **kwargs))

    return again


for _name in _REREAD:
    setattr(PostgresStore, _name, _rereads(_name))

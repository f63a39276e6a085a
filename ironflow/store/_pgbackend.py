"""PostgresBackend: the backend interface's connections and transactions on PostgreSQL.

``_postgres.py``'s :class:`PostgresStore` runs the state machine (``_machine.py``) on
this backend, as ``LmdbStore`` runs it on LMDB's; every rule is the machine's, the
schema is ``_pgschema.py``, a transaction's reads and writes are ``_pgtxn.py``, their
SQL ``_pgsql.py``. This module owns the pool, the transactions' lives, retries and
commit outcomes.
What PostgreSQL adds:

- **Serializable writes, retried.** Each write op runs in one ``SERIALIZABLE``
  transaction. PostgreSQL aborts one of two transactions whose reads and writes
  could not have run one after the other (error 40001, or a deadlock, 40P01); the op
  then runs again from the start on a fresh snapshot, which the backend interface
  allows (``_backend.py``: an op has no effect outside its transaction). So the
  machine's read-check-write rules hold across servers exactly as with one LMDB writer,
  without a lock per rule.
- **Few round trips.** A write transaction runs in psycopg's pipeline mode: BEGIN
  travels with the op's first read; the writes whose answer nobody waits for (``put``,
  ``add``, ``discard``), the commit token's insert and the NOTIFY are one statement,
  sent with COMMIT at the pipeline's end (``PgTxn.flush``). The reads a rule makes
  whatever it finds go together (``get_many``, ``prefetch``: one query, kept for the
  transaction; see ``_pgtxn.py``). Recording a step is one round trip when this store
  remembers the run's lease: the op runs on the rows the store's own commits last read
  or wrote, and one statement, a transaction of its own, inserts the token and the step
  and re-reads those rows as a guard (``_pgspec.py``: a speculative write, and why it
  is sound); otherwise two, the three reads in one query, then the insert with COMMIT.
  Emitting an event is one the same way (the agents, the waits for its name and the
  log's head as this store last saw them, checked in the statement), otherwise two;
  so is a stream append (its stream's head as this store last wrote it, too);
  a lease two, its claim made with its look for work (``_pgtxn.py``) and the leased
  runs' steps read after its COMMIT in the same round trip
  (:meth:`PostgresBackend.write_then_read`).
- **Durable before returning.** Every session sets ``synchronous_commit = on``: a
  commit returns once its WAL is flushed (and, with synchronous replicas configured,
  replicated).
- **Claims that skip.** ``claim`` locks the rows it takes with ``FOR UPDATE SKIP
  LOCKED`` (one query for them all), so two servers leasing at once take different runs.
- **One leaser at a time, if it comes soon.** Leasers on one database want the same
  oldest runs, and under SERIALIZABLE they abort each other (a row changed since a
  snapshot cannot be locked, SKIP LOCKED or not; each walk of ``ready`` reads the rows
  the others take). So a lease first waits for a session advisory lock, before its
  BEGIN (its snapshot comes after the lock), and gives it back right after COMMIT. The
  wait is bounded (``_LEASE_LOCK_WAIT``): a lease that does not get the lock in time
  leases without it, as it would with no lock at all, so a holder that hangs (a host
  gone in the middle of a lease) slows leasing, never stops it. The lock is only an
  optimisation: SERIALIZABLE keeps every rule either way. A connection that may still
  hold it never goes back to the pool (it is closed: PostgreSQL drops a session's locks
  with the session), and each session asks the server for TCP keepalives, so a
  vanished holder's session is dropped in about half a minute, not the OS's hours.
- **Wake-ups.** A transaction that makes work (a ready run, a freed lease, a timer, an
  event, a projection change) sends ``NOTIFY ironflow_work`` as it commits; every store
  listens on its own connection and wakes its idle workers within milliseconds.
- **Lost connections.** A read or write whose connection breaks is retried with
  backoff until PostgreSQL is back, logged once. Each write transaction inserts a
  unique token (``_pgsql.new_token``) into ``ironflow_commits``; a commit whose answer
  was lost is resolved by looking for its token before anything is retried, so an
  acknowledged write is never applied twice nor reported lost (a COMMIT answered with
  a serialization failure is known rolled back: just run again). A speculative step
  carries no token: its own row tells (``_pgspec.py``). Not ``pg_xact_status``: after a
  crash PostgreSQL hands out again the transaction ids that never reached its WAL,
  so a lost transaction's id may name a later one that committed. A read transaction
  cannot be resumed, so a store method whose read lost its connection runs again
  whole (``_REREAD``: the methods that read before they write anything).
- **Reads** run at ``REPEATABLE READ READ ONLY``: one snapshot, no locks. A read never
  decides a write: every write re-reads what it checks in its own transaction.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import random
import secrets
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from ironflow.errors import MissingExtraError, StoreError
from ironflow.store._backend import WriteTxn
from ironflow.store._pgcommits import (
    PRUNE_COMMITS,
    PRUNE_EVERY,
    TOKENS_KEPT,
    Evidence,
    committed,
    end_session,
    landed,
    session_name,
)
from ironflow.store._pgdirect import Direct
from ironflow.store._pgschema import check_version, schema_version
from ironflow.store._pgspec import STALE, Learned, Odds, RowCache, SpecTxn, noting, speculate
from ironflow.store._pgsql import (
    BEGIN_ORDERED_READ,
    CHANNEL,
    LEASE_UNLOCK,
    SESSION,
    lease_lock,
    new_token,
)
from ironflow.store._pgtxn import PgTxn, ReadAfter
from ironflow.store._pgurl import check_url, safe_url, settings_error
from ironflow.store._wake import LocalWakeups, Wakeups

__all__ = ["PostgresBackend", "ReadLost"]

T = TypeVar("T")
U = TypeVar("U")

log = logging.getLogger("ironflow.store")

_MAX_BACKOFF = 2.0
#: Seconds a call waits for a pooled connection (psycopg_pool's default).
_POOL_WAIT = 30.0
#: Seconds an opening store waits for its first pooled connection before it connects
#: on its own to learn why there is none.
_FIRST_WAIT = 2.0
#: How often the listener looks whether its store was closed.
_LISTEN_RECHECK = 0.1
#: How long a lease waits for the leasers' lock before it leases without it (seconds).
_LEASE_LOCK_WAIT = 0.5


def _queue_sync(pipe: Any) -> None:
    """End the pipeline's implicit transaction so far (a Sync) without waiting for its
    answer, which comes with the next one waited for. psycopg has no public call for it
    (``Pipeline.sync`` waits), so its own is used while it exists, else the waiting one."""
    queue = getattr(pipe, "_enqueue_sync", None)
    if queue is None:
        pipe.sync()
    else:
        queue()


def _psycopg() -> Any:
    try:
        import psycopg
        import psycopg_pool
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise MissingExtraError("the PostgreSQL store", "psycopg", "postgres") from exc
    # The pool logs each broken connection it drops and each failed reconnect; the
    # store says once that the database is lost and once that it is back. A level the
    # application set is left alone.
    pool_log = logging.getLogger("psycopg.pool")
    if pool_log.level == logging.NOTSET:
        pool_log.setLevel(logging.ERROR)
    return psycopg, psycopg_pool


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class _Stale(Exception):
    """A speculative write's guard found a remembered row changed: nothing was written;
    the op runs again the normal way (``_pgspec.py``)."""


class ReadLost(StoreError):
    """The connection broke in the middle of a read transaction."""


class _Unknown(Exception):
    """The connection broke after COMMIT was sent: whether it committed is not known."""

    def __init__(
        self,
        token: bytes | None,
        result: object,
        began: float,
        evidence: Evidence | None = None,
        session: str | None = None,
    ) -> None:
        super().__init__(token.hex() if token is not None else repr(evidence))
        #: The name of the session the write was sent on (``_pgcommits.end_session``).
        self.session = session
        #: What tells whether it committed: its commit token, or (a speculative step,
        #: ``_pgspec.py``) the row it inserted.
        self.token = token
        self.evidence = evidence
        self.result = result
        #: When the transaction began (``time.monotonic()``): its token is kept for
        #: ``TOKENS_KEPT`` seconds after that, and only that long can it be looked for.
        self.began = began


class PostgresBackend:
    """The backend interface over a PostgreSQL database (a pool of connections)."""

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 8,
        give_up_after: float | None = None,
        listen: bool = True,
    ) -> None:
        check_url(url)
        psycopg, psycopg_pool = _psycopg()
        self._psycopg = psycopg
        self.url = url
        self.where = f"the database {safe_url(url)}"
        self.give_up_after = give_up_after
        self._closed = False
        #: This store's id in its sessions' names (``_pgcommits.session_name``).
        self.name = secrets.token_hex(4)
        self._numbers = itertools.count(1)
        #: Each pooled connection's session name, looked up after a lost answer.
        self._names: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()
        self._down_since: float | None = None
        self._down_lock = threading.Lock()
        #: Called (from the listener's thread) when another transaction made work.
        self.on_wake: Callable[[], None] | None = None
        #: Told each committed write transaction's seconds (BEGIN to COMMIT answered) and
        #: its number of writes (1: no group commit here); for metrics. None: not timed.
        self.commit_observer: Callable[[float, int], None] | None = None
        self._listens = listen
        self._listener: threading.Thread | None = None
        self._listener_lock = threading.Lock()
        #: Waiters in this process. Other processes hear of work through the NOTIFY sent
        #: with the commit; the listener relays it here (through ``on_wake``).
        self.wakeups: Wakeups = LocalWakeups()
        #: Seconds a lease waits for the leasers' lock; None: leases never take it.
        self.lease_lock_wait: float | None = _LEASE_LOCK_WAIT
        #: Lease transactions aborted by a concurrent one (serialization failure or
        #: deadlock) and run again: what the leasers' lock is there to keep near zero.
        self.lease_conflicts = 0
        self._conflicts_lock = threading.Lock()
        self._leasing = threading.local()
        self._speculating = threading.local()
        #: What this store's committed writes last read or wrote of a few tables: the
        #: guesses a speculative write runs on (``_pgspec.py``).
        self.rows = RowCache()
        self.odds = Odds()  # whether each kind of op is worth speculating now
        #: Sends the speculative statement straight through libpq (``_pgdirect.py``).
        self.direct = Direct(psycopg)
        #: Speculative writes tried, and those whose guard found a row changed.
        self.speculated = 0
        self.stale = 0
        #: When this store next prunes ``ironflow_commits`` (monotonic seconds).
        self._prune_at = time.monotonic() + PRUNE_EVERY * random.random()
        self._prune_lock = threading.Lock()
        self._pool = psycopg_pool.ConnectionPool(
            url,
            min_size=1,
            max_size=pool_size,
            kwargs={"autocommit": True},
            configure=self._configure,
            open=True,
            num_workers=1,
            name="ironflow",
            # A call waits this long for a connection before it is retried or, past
            # give_up_after, raised: a command's --timeout, not the pool's 30 s.
            timeout=_POOL_WAIT if give_up_after is None else min(_POOL_WAIT, give_up_after),
        )
        try:
            found = self._retrying(self._first_look)
            check_version(found, safe_url(self.url))
        except BaseException:
            self._closed = True
            self._pool.close()
            raise

    def _first_look(self) -> int | None:
        """The schema's version, read on the first pooled connection (no connection of
        its own). If the pool gets none, one connection of its own says why: a wrong
        password or a missing database raises at once, since waiting cannot fix it;
        an unreachable database is retried, with libpq's reason in the log."""
        try:
            return schema_version(functools.partial(self._pool.connection, timeout=_FIRST_WAIT))
        except self._psycopg.errors.InsufficientPrivilege as exc:
            raise settings_error(self.url, exc, psycopg=self._psycopg) or exc from None
        except self._psycopg.OperationalError:
            try:
                self._connect().close()
            except self._psycopg.Error as why:
                raise settings_error(self.url, why, psycopg=self._psycopg) or why from None
            raise

    def listen(self) -> None:
        """Start listening for wake-ups (once): a store that never waits for work (a
        command, a reader) never holds a listening connection."""
        if not self._listens or self._listener is not None:
            return
        with self._listener_lock:
            if self._listener is None and not self._closed:
                self._listener = threading.Thread(
                    target=self._listen, name="ironflow-pg-listen", daemon=True
                )
                self._listener.start()

    # -- connections ------------------------------------------------------------------

    def _configure(self, conn: Any) -> None:
        name = session_name(self.name, next(self._numbers))
        conn.execute(SESSION, (name,))
        self._names[conn] = name

    @contextlib.contextmanager
    def leasing(self) -> Iterator[None]:
        """Within: this thread's write transactions are leases, each taken under the
        leasers' lock when it comes within ``lease_lock_wait``."""
        self._leasing.on = True
        try:
            yield
        finally:
            self._leasing.on = False

    @contextlib.contextmanager
    def speculating(self, kind: str) -> Iterator[None]:
        """Within: this thread's write ops (of ``kind``: :attr:`odds`) first run on the
        remembered rows, sent with a guard in one round trip (``_pgspec.py``)."""
        self._speculating.on = kind
        try:
            yield
        finally:
            self._speculating.on = None

    def _connect(self, role: str = "own", **kwargs: Any) -> Any:
        """A connection of its own (not pooled), named for ``role``."""
        return self._psycopg.connect(
            self.url,
            autocommit=True,
            connect_timeout=10,
            application_name=session_name(self.name, role),
            **kwargs,
        )

    def _retrying(self, call: Callable[[], T]) -> T:
        """``call``, again with backoff while PostgreSQL cannot be reached."""
        delay = 0.05
        started = time.monotonic()
        while True:
            if self._closed:
                raise StoreError(f"the store on {self.where} is closed")
            try:
                result = call()
            except self._psycopg.OperationalError as exc:
                if not self._lost(exc, started):
                    raise
                time.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, _MAX_BACKOFF)
                continue
            self._back()
            return result

    def reread(self, call: Callable[[], T]) -> T:
        """``call`` (a store method whose reads all come before any write), run again
        whole with backoff when PostgreSQL went away in the middle of one of its reads."""
        delay = 0.05
        started = time.monotonic()
        while True:
            try:
                return call()
            except ReadLost as exc:
                self._lost(exc.__cause__ or exc, started)
                time.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, _MAX_BACKOFF)

    def _lost(self, exc: BaseException, started: float) -> bool:
        """Note a lost connection (logged once); False when it is time to give up."""
        with self._down_lock:
            if self._down_since is None:
                self._down_since = time.monotonic()
                log.warning(
                    "lost the connection to %s (%s); retrying with backoff %s",
                    self.where,
                    _first_line(exc),
                    "until it is back"
                    if self.give_up_after is None
                    else f"for up to {self.give_up_after:g} s",
                )
        if self.give_up_after is not None and time.monotonic() - started > self.give_up_after:
            raise StoreError(
                f"cannot reach {self.where} after {self.give_up_after:g} s: {_first_line(exc)}"
            ) from exc
        return True

    def _back(self) -> None:
        if self._down_since is not None:
            with self._down_lock:
                if self._down_since is not None:
                    log.warning(
                        "%s is reachable again after %.1f s",
                        self.where,
                        time.monotonic() - self._down_since,
                    )
                    self._down_since = None

    # -- transactions -------------------------------------------------------------------

    @contextlib.contextmanager
    def read(self) -> Iterator[PgTxn]:
        conn = self._retrying(
            lambda: self._begin(b"BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        )
        try:
            yield PgTxn(conn.cursor(binary=True))
        except self._psycopg.OperationalError as exc:
            # Lost under a read, whose body cannot be run again from here: the store
            # runs the whole method again (see _rereads).
            raise ReadLost(
                f"lost the connection to {self.where} during a read ({_first_line(exc)})"
            ) from exc
        finally:
            # A read-only transaction ends the same either way; COMMIT, because psycopg
            # forgets every prepared statement of a connection on seeing a ROLLBACK.
            with contextlib.suppress(self._psycopg.Error):
                conn.execute(b"COMMIT", prepare=False)
            self._pool.putconn(conn)

    def read_serializable(self, op: Callable[[PgTxn], T]) -> T:
        """``op`` in a ``SERIALIZABLE READ ONLY`` transaction, run again until it commits
        (a read: safe to repeat after a serialization failure or a lost connection).
        Unlike :meth:`read`'s snapshot, it is ordered with the concurrent writes: one it
        does not see could have committed after it (``_leasing.with_steps``)."""
        errors = self._psycopg.errors
        delay = 0.002
        started = time.monotonic()
        while True:
            if self._closed:
                raise StoreError(f"the store on {self.where} is closed")
            failed: BaseException | None = None
            try:
                conn = self._pool.getconn()
            except self._psycopg.OperationalError as exc:
                failed = exc
            else:
                try:
                    with conn.pipeline():
                        try:
                            conn.execute(BEGIN_ORDERED_READ, prepare=False)
                            result = op(PgTxn(conn.cursor(binary=True)))
                            conn.execute(b"COMMIT", prepare=False)
                        except BaseException as exc:
                            failed = exc  # as in _attempt: not raised through the sync
                except self._psycopg.Error as exc:
                    failed = failed or exc
                if failed is not None:
                    self._end_failed(conn, failed, unlock=False)
                self._pool.putconn(conn)
            if failed is None:
                self._back()
                return result
            if isinstance(failed, (errors.SerializationFailure, errors.DeadlockDetected)):
                time.sleep(delay * random.random())
                delay = min(delay * 2, 0.2)
            elif isinstance(failed, self._psycopg.OperationalError):
                self._lost(failed, started)
                time.sleep(delay * (0.5 + random.random()))
                delay = min(max(delay, 0.05) * 2, _MAX_BACKOFF)
            else:
                raise failed

    def _begin(self, begin: bytes) -> Any:
        """A pooled connection in a new transaction. A connection broken while pooled
        (PostgreSQL restarted) fails here, before anything was done: safe to retry."""
        conn = self._pool.getconn()
        try:
            conn.execute(begin, prepare=False)
        except BaseException:
            self._pool.putconn(conn)
            raise
        return conn

    def write(self, op: Callable[[WriteTxn], T]) -> T:
        """Run ``op`` in a SERIALIZABLE transaction, again on a serialization failure or
        a lost connection; return its result once committed."""
        return self._write(op, None)[0]

    def write_then_read(
        self, op: Callable[[WriteTxn], T], then: Callable[[T], ReadAfter[U]]
    ) -> tuple[T, U]:
        """:meth:`write`, then ``then(result)``'s read, ordered after the commit as
        :meth:`read_serializable` is: one SERIALIZABLE statement, a transaction of its
        own, sent in the write's pipeline after its COMMIT, no round trip of its own.
        Where it could not be made there (the COMMIT's answer lost, the read refused), it
        is made on its own, after."""
        result, read = self._write(op, then)
        if read is None:
            plan = then(result)
            return result, self.read_serializable(lambda txn: plan.answer(txn))
        return result, read[0]

    def _write(
        self, op: Callable[[WriteTxn], T], then: Callable[[T], ReadAfter[U]] | None
    ) -> tuple[T, tuple[U] | None]:
        """:meth:`write`, and ``then``'s read made in its pipeline (None: not made)."""
        errors = self._psycopg.errors
        delay = 0.002
        started = time.monotonic()
        # Tried once, first: a retry for whatever reason runs the normal way.
        kind: str = getattr(self._speculating, "on", None) or ""
        spec = speculate(self.rows, op) if kind and self.odds.worth(kind) else None
        while True:
            if self._closed:
                raise StoreError(f"the store on {self.where} is closed")
            try:
                if spec is not None:
                    guessed, spec = spec, None
                    result = self._attempt_one(*guessed)
                    self.odds.hit(kind)
                    return result, None
                return self._attempt(op, then)
            except _Stale:
                self.odds.stale(kind)
                continue  # a remembered row was stale: the normal way, at once
            except (errors.SerializationFailure, errors.DeadlockDetected):
                if getattr(self._leasing, "on", False):
                    with self._conflicts_lock:
                        self.lease_conflicts += 1
                # Another transaction won: run the op again on a fresh snapshot.
                time.sleep(delay * random.random())
                delay = min(delay * 2, 0.2)
            except _Unknown as unknown:
                self._lost(unknown.__cause__ or unknown, started)
                if self._retrying(functools.partial(self._resolve, unknown)):
                    return unknown.result, None  # type: ignore[return-value]
                # Not again on a pooled session the same outage broke (lost twice).
                self._pool.check()
            except self._psycopg.OperationalError as exc:
                # Broken before COMMIT was sent: nothing was written; run it again.
                self._lost(exc, started)
                time.sleep(delay * (0.5 + random.random()))
                delay = min(max(delay, 0.05) * 2, _MAX_BACKOFF)

    def _attempt(
        self, op: Callable[[WriteTxn], T], then: Callable[[T], ReadAfter[U]] | None = None
    ) -> tuple[T, tuple[U] | None]:
        """One try of ``op`` in pipeline mode: BEGIN goes with the op's first read; the
        writes whose answer nobody needs (``put``, ``add``, ``discard``), the commit
        token's insert and the NOTIFY are queued and sent as one statement
        (``PgTxn.flush``) with COMMIT, at the pipeline's end, its last round trip. If the
        answer to COMMIT is lost, the token's row tells whether it committed
        (``_committed``). ``then``'s read goes after COMMIT, in a transaction of its own
        in the same round trip; None in its place: not read (the COMMIT failed, or it
        committed and only the read did not)."""
        begun = time.perf_counter() if self.commit_observer is not None else 0.0
        wait = self.lease_lock_wait if getattr(self._leasing, "on", False) else None
        # A pool that cannot connect raises OperationalError: write() waits and retries.
        conn = self._pool.getconn()
        token = new_token()
        began = time.monotonic()
        committing = False
        failed: BaseException | None = None
        done: Any = None  # COMMIT's cursor: answered "COMMIT" once committed
        plan: ReadAfter[U] | None = None
        receive: Callable[[], None] | None = None
        read: PgTxn | None = None
        # Whether this session is known not to hold the leasers' lock: until then the
        # connection is closed rather than pooled (see the finally below).
        unlocked = wait is None
        try:
            try:
                with conn.pipeline() as pipe:
                    try:
                        # Control statements are never prepared (psycopg prepares what
                        # runs five times; a prepared ROLLBACK or BEGIN confuses its cache).
                        if wait is not None:
                            conn.execute(lease_lock(wait), prepare=False)
                            # Its own implicit transaction, ended here: the lease's
                            # snapshot is taken after the lock is. Not waited for: the
                            # server runs what follows after it, in the same round trip.
                            _queue_sync(pipe)
                        conn.execute(b"BEGIN ISOLATION LEVEL SERIALIZABLE", prepare=False)
                        txn = noting(conn.cursor(binary=True), token)
                        result = op(txn)
                        # Before anything is queued after the op: an error here is the op's.
                        plan = None if then is None else then(result)
                        # Its queued writes, the token and the NOTIFY when it made work:
                        # one statement, before COMMIT (so none with COMMIT).
                        txn.flush(notify=txn.wakes)
                        committing = True
                        done = self._commit(conn)
                        if wait is not None:
                            # Given back right after COMMIT, in the same round trip.
                            conn.execute(LEASE_UNLOCK, prepare=False)
                        if plan is not None and plan.scans:
                            # One statement after COMMIT: a transaction of its own
                            # (SERIALIZABLE, the session's default; no BEGIN, no
                            # COMMIT: the pipeline's end commits it). No sync before
                            # it: if anything before failed, COMMIT included, it is
                            # skipped, never run in the aborted transaction (whose
                            # error psycopg would raise in place of the first).
                            read = PgTxn(conn.cursor(binary=True))
                            receive = read.send_whole(plan.scans)
                    except BaseException as exc:
                        # Kept, not raised through the pipeline's end: its sync would
                        # fail again on a lost connection, and psycopg log that.
                        failed = exc
            except self._psycopg.Error as exc:
                # The pipeline's end: COMMIT's answer, or the sync after a failure.
                failed = failed or exc
            if failed is None:
                unlocked = True  # the unlock after COMMIT was answered
            else:
                unlocked = self._end_failed(conn, failed, unlock=not unlocked) or unlocked
                if receive is not None and done is not None and done.statusmessage == "COMMIT":
                    # The write committed; only the read after it failed: not read here.
                    receive = read = None
                    failed = None
            if failed is not None:
                errors = self._psycopg.errors
                lost = isinstance(failed, self._psycopg.OperationalError) and not isinstance(
                    failed, (errors.SerializationFailure, errors.DeadlockDetected)
                )
                if lost and committing:
                    # Whether COMMIT reached the server is unknown: its token decides,
                    # once its session is gone. Never pooled again: it is ended by name.
                    conn.close()
                    raise _Unknown(token, result, began, None, self._names.get(conn)) from failed
                # A serialization failure or deadlock, even at COMMIT (answered: rolled
                # back; the caller runs the op again), a lost connection before COMMIT
                # was sent (nothing was written), or the op's own error.
                raise failed
        finally:
            if not unlocked:
                # It may still hold the leasers' lock (interrupted, or its unlock was not
                # answered): closed, never pooled, since closing the session frees it.
                conn.close()
            self._pool.putconn(conn)
        self._committed_after(begun, Learned.of(txn))
        if plan is None:
            return result, None
        if not plan.scans:
            read = PgTxn(None)
        elif read is None or receive is None:
            return result, None
        else:
            receive()
        read.ended()
        return result, (plan.answer(read),)

    def _attempt_one(self, guessed: SpecTxn, result: T) -> T:
        """One try of a speculative write (``_pgspec.py``): its one statement, a
        transaction of its own, one round trip. _Stale if its guard found a row changed;
        if the answer is lost, the token's row tells whether it committed, or for a
        step, which carries no token, the step's row."""
        begun = time.perf_counter() if self.commit_observer is not None else 0.0
        evidence = guessed.evidence()
        token = None if evidence is not None else new_token()
        began = time.monotonic()
        statement, params, guarded = guessed.statement(token)
        # A pool that cannot connect raises OperationalError: write() waits and retries.
        conn = self._pool.getconn()
        try:
            # A guarded insert that inserted nothing found a row changed (_pgspec.py).
            if self.direct.run(conn, statement, params) != 1 and guarded:
                raise _Stale
        except (_Stale, self._psycopg.Error) as exc:
            errors = self._psycopg.errors
            if isinstance(exc, _Stale) or exc.sqlstate in STALE:
                with self._conflicts_lock:
                    self.stale += 1
                raise _Stale from exc
            if isinstance(exc, self._psycopg.OperationalError) and not isinstance(
                exc, (errors.SerializationFailure, errors.DeadlockDetected)
            ):
                # Sent, perhaps committed (a pooled connection broken before it was sent
                # is looked up too: its token is not found, and the op runs again). Never
                # pooled again: its session is ended by name before the look.
                conn.close()
                raise _Unknown(token, result, began, evidence, self._names.get(conn)) from exc
            raise  # a serialization failure (rolled back: run again) or the op's error
        finally:
            # Autocommit: the connection is idle whatever happened (a broken one the
            # pool drops), with no statement skipped that psycopg counts as prepared.
            self._pool.putconn(conn)
        with self._conflicts_lock:
            self.speculated += 1
        self._committed_after(begun, guessed.learned())
        return result

    def _committed_after(self, begun: float, learned: Learned) -> None:
        """After a write transaction committed, begun at ``begun`` (perf_counter): the
        database is back, the rows read are remembered, the observer told."""
        self._back()
        self.rows.learn(learned)
        watch = self.commit_observer
        if watch is not None:
            watch(time.perf_counter() - begun, 1)
        if time.monotonic() >= self._prune_at:
            self._prune_commits()

    def _prune_commits(self) -> None:
        """Drop old commit tokens, at most once a ``PRUNE_EVERY`` per store. At READ
        COMMITTED, in its own transaction: it reads the whole table, and a SERIALIZABLE
        read of it would tie the writers inserting tokens into its conflicts."""
        with self._prune_lock:
            if time.monotonic() < self._prune_at:
                return
            self._prune_at = time.monotonic() + PRUNE_EVERY
        try:
            with self._pool.connection() as conn, conn.transaction():
                conn.execute(b"SET TRANSACTION ISOLATION LEVEL READ COMMITTED", prepare=False)
                conn.execute(PRUNE_COMMITS, prepare=False)
        except self._psycopg.Error as exc:
            # Housekeeping: the next prune, a minute on, does it.
            log.debug("pruning %s's commit tokens failed: %s", self.where, exc)

    def _end_failed(self, conn: Any, exc: BaseException, *, unlock: bool) -> bool:
        """End a write transaction that failed; its pipeline is closed by now. True when
        the session is known not to hold the leasers' lock (closed, or unlocked).

        One the server answered with an error (a conflict) is kept: a new
        session costs PostgreSQL a process and cold caches, ~10 ms of CPU a conflict
        (``bench.pg_contention``). ``rollback()``, not a ROLLBACK statement (psycopg's
        cache does not always see one), also forgets and deallocates every statement
        psycopg prepared, some of which the refused pipeline skipped. A lost connection,
        or one that cannot roll back, is closed, which frees any lock it held.
        """
        lost = isinstance(exc, self._psycopg.Error) and getattr(exc, "sqlstate", None) is None
        if not lost and not conn.broken:
            try:
                conn.rollback()
                if unlock:
                    conn.execute(LEASE_UNLOCK, prepare=False)
            except self._psycopg.Error:
                pass
            else:
                return True
        conn.close()
        return True

    def _commit(self, conn: Any) -> Any:
        """Queue COMMIT; the end of the pipeline sends it and waits for the answer, which
        the cursor returned holds."""
        return conn.execute(b"COMMIT", prepare=False)

    def _resolve(self, unknown: _Unknown) -> bool:
        """After a lost answer to COMMIT: whether that transaction committed, or a
        StoreError when its token may have been pruned since (nothing is guessed). A
        step is looked for as itself, at any time (``_pgspec.py`` says why). First its
        session is ended and waited for: a statement still running there could commit
        after the look (``_pgcommits.py``)."""
        if unknown.session is not None:
            with self._connect("look") as conn:
                end_session(conn, unknown.session)
        if unknown.evidence is not None:
            with self._connect("look") as conn:
                return landed(conn, unknown.evidence)
        assert unknown.token is not None
        if time.monotonic() - unknown.began > TOKENS_KEPT:
            raise StoreError(
                f"lost the answer to a COMMIT on {self.where} and could not ask whether "
                f"it landed within {TOKENS_KEPT / 60:g} minutes; its outcome is unknown: "
                "check the run or event it was writing before doing it again"
            )
        return self._committed(unknown.token)

    def _committed(self, token: bytes) -> bool:
        """Whether the transaction that wrote ``token`` committed (``_pgcommits.py``)."""
        with self._connect("look") as conn:
            return committed(conn, token)

    def changes(self) -> int:
        """Grows with every transaction of the server that wrote (a cheap read)."""

        def look() -> int:
            with self._pool.connection() as conn:
                row = conn.execute(
                    "SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint"
                ).fetchone()
            return 0 if row is None else int(row[0])

        # A pooled connection PostgreSQL dropped fails here: look again, with backoff.
        return self._retrying(look)

    # -- wake-ups ------------------------------------------------------------------------

    def _listen(self) -> None:
        delay = 0.05
        while not self._closed:
            try:
                with self._connect("listen") as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    delay = 0.05
                    # Anything may have happened while we were not listening.
                    self._woken()
                    while not self._closed:
                        for _ in conn.notifies(timeout=_LISTEN_RECHECK):
                            self._woken()
            except self._psycopg.Error:
                # Lost: listen again with backoff (the loop ends once the store closes).
                time.sleep(delay)
                delay = min(delay * 2, _MAX_BACKOFF)

    def _woken(self) -> None:
        wake = self.on_wake
        if wake is not None:
            wake()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.wakeups.close()
        self._pool.close()
        if self._listener is not None:
            self._listener.join(timeout=_LISTEN_RECHECK * 5)

"""The projection runners a worker hosts: one per projection its module defines.

- One runner at a time advances a projection. It holds a lease in the store, taken
  over at once when its holder is a dead process on this host, else after the TTL.
- Each batch is folded in memory and written with its new position in **one** write
  transaction that checks the lease and the starting position (a fencing check), so
  no event is applied twice or skipped, and a runner that lost its lease writes
  nothing.
- A rebuild folds the whole log into fresh state and replaces the stored state in one
  transaction; for a pure fold the result equals the incremental state.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

from ironflow._agent._memory import WHOLE, ProjectionDefinition, fold_events
from ironflow.errors import ConcurrencyError, LeaseLostError
from ironflow.store import Event, Store, WorkerInfo
from ironflow.store._records import ProjectionStatus, ProjectionWrite

__all__ = ["ProjectionRunner", "ProjectionService"]

log = logging.getLogger("ironflow.projection")

class ProjectionRunner:
    """Advances one projection on behalf of one worker.

    Each :meth:`step` keeps the lease, serves a pending rebuild, or folds one batch of
    the log after the stored position and writes it in one fenced transaction. On any
    error or crash mid-batch nothing of the batch is written; the next step (of this
    runner or of whoever takes the lease) starts again from the stored position.
    """

    def __init__(
        self,
        store: Store,
        definition: ProjectionDefinition,
        worker: WorkerInfo,
        *,
        ttl: float = 15.0,
        batch_size: int = 500,
        cache_limit: int = 10_000,
    ) -> None:
        self.store = store
        self.definition = definition
        self.worker = worker
        self.ttl = ttl
        self.batch_size = batch_size
        self.cache_limit = cache_limit
        self.held = False
        #: True once a step found nothing to do (caught up, or the lease is elsewhere).
        self.idle = False
        self._renew_at = 0.0
        self._retry_at = 0.0
        # Partition states as last written, valid while the stored generation matches.
        self._cache: dict[str, Any] = {}
        self._cache_generation = -1

    @property
    def name(self) -> str:
        return self.definition.name

    def _forget(self) -> None:
        self._cache = {}
        self._cache_generation = -1

    def _lost(self) -> None:
        self.held = False
        self._forget()

    def ensure_lease(self) -> bool:
        """Take or renew the lease when due; return whether this runner holds it."""
        now = time.monotonic()
        if self.held and now < self._renew_at:
            return True
        if not self.held and now < self._retry_at:
            return False
        held = self.store.lease_projection(self.worker, self.name, ttl=self.ttl)
        if not held:
            # A live worker serves it; asking again every round would only load the store.
            self._retry_at = now + min(1.0, self.ttl / 3)
            self._lost()
            return False
        self.held = True
        self._renew_at = now + self.ttl / 3
        return True

    def step(self) -> int:
        """One round of work; return how many log events it consumed (0: nothing to do)."""
        try:
            return self._step()
        except BaseException:
            self._forget()  # a fold may have mutated cached state before it failed
            raise

    def _step(self) -> int:
        if not self.ensure_lease():
            self.idle = True
            return 0
        status = self.store.projection_status(self.name)
        if status.runner is None or status.runner.id != self.worker.id:
            self._lost()
            self.idle = True
            return 0
        if status.rebuild_pending:
            self.idle = False
            return self._rebuild(status)
        events = self.store.events(after_seq=status.position, limit=self.batch_size)
        if not events:
            self.idle = True
            return 0
        self.idle = False
        if status.generation != self._cache_generation:
            self._forget()
        parts = self._load(events)
        touched = fold_events(self.definition, events, parts)
        write = ProjectionWrite(
            name=self.name,
            from_position=status.position,
            to_position=events[-1].seq,
            partitions=touched,
        )
        self._commit(write, touched)
        return len(events)

    def _load(self, events: Sequence[Event]) -> dict[str, Any]:
        """The stored state of every partition these events touch (cached, or read)."""
        keys = {self.definition.partition_of(e) for e in events if self.definition.matches(e.name)}
        missing = [k for k in keys if k not in self._cache]
        if missing:
            stored = self.store.get_projection(self.name, partitions=missing)
            if not self.definition.partitioned:
                self._cache[WHOLE] = stored.state
            else:
                self._cache.update(stored.state)
        return {k: self._cache[k] for k in keys if k in self._cache}

    def _commit(self, write: ProjectionWrite, touched: dict[str, Any]) -> ProjectionStatus | None:
        """Write a batch; on a lost lease or a moved position, drop it (and the cache)."""
        try:
            status = self.store.write_projection(self.worker, write)
        except LeaseLostError:
            log.info("projection %s: another worker took it over; batch dropped", self.name)
            self._lost()
            return None
        except ConcurrencyError:
            self._forget()
            return None
        if len(self._cache) + len(touched) > self.cache_limit:
            self._cache = {}
        self._cache.update(touched)
        self._cache_generation = status.generation
        return status

    def _rebuild(self, status: ProjectionStatus) -> int:
        self._rebuild_once(status)
        return 1

    def _rebuild_once(self, status: ProjectionStatus) -> ProjectionStatus | None:
        parts, position, count = self.fold_log()
        write = ProjectionWrite(
            name=self.name,
            from_position=status.position,
            to_position=position,
            partitions=parts,
            rebuild_ticket=status.rebuild_requested,
        )
        self._forget()
        done = self._commit(write, parts if len(parts) <= self.cache_limit else {})
        if done is not None:
            log.info(
                "projection %s: rebuilt from %d event(s), position %d", self.name, count, position
            )
        return done

    def fold_log(self) -> tuple[dict[str, Any], int, int]:
        """Fold the whole log from seq 0 into fresh state: (partitions, position, events)."""
        parts: dict[str, Any] = {}
        touched: dict[str, Any] = {}
        position = count = 0
        while True:
            events = self.store.events(after_seq=position, limit=self.batch_size)
            if not events:
                break
            touched.update(fold_events(self.definition, events, parts))
            # Continue from the stored (JSON) form, exactly as incremental batches do.
            parts.update(touched)
            position = events[-1].seq
            count += len(events)
        return touched, position, count

    def rebuild_now(self) -> ProjectionStatus:
        """Rebuild the projection here and now (taking its lease); return its new status.

        Raises :class:`~ironflow.errors.LeaseLostError` if a live worker holds the lease.
        """
        if not self.ensure_lease():
            raise LeaseLostError(
                f"projection {self.name!r} is served by another live worker; ask it to "
                "rebuild (ironflow projection rebuild NAME without --module)"
            )
        done = self._rebuild_once(self.store.projection_status(self.name))
        if done is None:
            raise LeaseLostError(
                f"projection {self.name!r} was taken over by another worker during the "
                "rebuild; nothing was written. Run the rebuild again"
            )
        return self.store.projection_status(self.name)

    def catch_up(self, *, max_rounds: int = 1_000_000) -> None:
        """Step until the projection is caught up with the log (or the lease is elsewhere)."""
        for _ in range(max_rounds):
            if self.step() == 0:
                return

    def release(self) -> None:
        """Give the lease back, so another worker can take the projection over at once."""
        if self.held:
            self._lost()
            self.store.release_projection(self.worker, self.name)


class ProjectionService:
    """Runs a worker's projection runners on one thread until stopped.

    A runner whose fold raises is retried with a growing delay (up to 30 s), and the
    error is logged: the projection stays at the event it cannot apply instead of
    skipping it.
    """

    def __init__(
        self,
        store: Store,
        definitions: Sequence[ProjectionDefinition],
        worker: WorkerInfo,
        *,
        ttl: float = 15.0,
        poll_interval: float = 0.05,
    ) -> None:
        self.store = store
        self.runners = [ProjectionRunner(store, d, worker, ttl=ttl) for d in definitions]
        self.poll_interval = poll_interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._retry_at: dict[str, float] = {}
        self._delay: dict[str, float] = {}
        self._rounds = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="ironflow-projections", daemon=True)
        self._thread.start()

    def caught_up(self) -> bool:
        """Whether every runner has found nothing to do since the service started."""
        return self._rounds > 0 and all(r.idle for r in self.runners)

    def _loop(self) -> None:
        while not self._stop.is_set():
            progressed = False
            now = time.monotonic()
            for runner in self.runners:
                if self._retry_at.get(runner.name, 0.0) > now:
                    continue
                try:
                    progressed = runner.step() > 0 or progressed
                    self._delay.pop(runner.name, None)
                except Exception as exc:
                    delay = min(self._delay.get(runner.name, 0.25) * 2, 30.0)
                    self._delay[runner.name] = delay
                    self._retry_at[runner.name] = now + delay
                    log.error(
                        "projection %s: %s: %s (retrying in %.1fs; the projection waits at "
                        "this event)",
                        runner.name,
                        type(exc).__name__,
                        exc,
                        delay,
                    )
            self._rounds += 1
            if not progressed:
                self.store.wait_for_work(self.poll_interval)

    def stop(self) -> None:
        """Stop the thread after its current round and release every lease."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        for runner in self.runners:
            try:
                runner.release()
            except Exception as exc:  # the lease lapses after its TTL anyway
                log.warning("projection %s: could not release its lease: %s", runner.name, exc)


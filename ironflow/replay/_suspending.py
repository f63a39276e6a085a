"""Suspending a run at a step that waits: a sleep, a wait for an event or a child run,
a retry's pause.

The wait is handed to the store, which either finds it over already (the step's record
comes back) or holds the run until it is due, and the engine stops the handler. Separate
because suspending has its own rules, written once here for sync and async runs: an
async run lets its gathered sibling steps finish and be recorded before it lets go, and
two waits for events never take the same event.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs

from ironflow.errors import LeaseLostError, StoreError
from ironflow.replay._positions import _from_record, _Positions
from ironflow.replay._recorded import _Slot
from ironflow.replay._stops import _Abandon, _Cancel, _Suspend
from ironflow.store import StepRecord, SuspendResult, Suspension

__all__ = ["_Suspending"]

if TYPE_CHECKING:
    # Imported where used instead: asyncio adds about 20 ms to `import ironflow`,
    # and a worker serving only sync agents never needs it.
    import asyncio


class _Suspending(_Positions):
    """The steps that wait: the store takes the wait, or finds it over already."""

    # -- suspending: sleeps, waits, retries ---------------------------------------------

    def suspend(self, base_id: str, input: Any, wait: Suspension, output_type: Any = Any) -> Any:
        """A step that waits (for a time, an event or a child run): its value, or an
        awaitable of it in an async run.

        ``wait`` gives the kind and what ends it; its position, step id and input are
        filled in here. Recorded: the recorded output. Else the store either finds the
        wait already over (the record is written and returned at once) or suspends the
        run, and this raises the engine's stop: the handler unwinds, and the worker
        lets go of the run until the store makes it pending again.
        """
        slot = self.begin(base_id, input)
        if wait.kind == "event":
            self._event_waits.add(slot.position)
        if self.is_async:
            return self.handed_out(slot, self._suspend_step_async(slot, wait, output_type))
        if slot.entry is not None:
            return self.replayed(slot, output_type)
        with self._watch(slot):
            record = self._suspend_blocking(slot, self._filled(slot, wait))
            return _from_record(record, output_type)

    async def _suspend_step_async(self, slot: _Slot, wait: Suspension, output_type: Any) -> Any:
        self.started(slot)
        if slot.entry is not None:
            return self.replayed(slot, output_type)
        with self._watch(slot):
            # Filled under the suspension lock: the events a gathered sibling wait took
            # are in the record by then, so two waits never take the same event.
            record = await self._suspend_async(slot, lambda: self._filled(slot, wait))
            return _from_record(record, output_type)

    def _filled(self, slot: _Slot, wait: Suspension) -> Suspension:
        """``wait`` for this slot; resumed at the same wait, its start and wake-up time.

        A wait for an event skips the events every other wait of this run took, at any
        position: under ``asyncio.gather`` a later position may take its event first.
        Called where no other wait can take an event meanwhile (the handler's own
        thread in a sync run; under the suspension lock in an async one).
        """
        prior = self.run.suspension
        s = attrs.evolve(
            wait,
            position=slot.position,
            step_id=slot.step_id,
            input=slot.input,
            deadline=self.deadline,
        )
        if wait.kind == "event":
            outputs = (
                self.recorded[p].output
                for p in sorted(self._event_waits)
                if p != slot.position and p in self.recorded
            )
            taken = tuple(
                out["seq"]
                for out in outputs
                if isinstance(out, dict)
                and out.get("name") == wait.event
                and isinstance(out.get("seq"), int)
            )
            s = attrs.evolve(s, after_seq=self.run.event.seq, skip=taken)
        if (
            prior is not None
            and (prior.kind, prior.position, prior.step_id) == (s.kind, s.position, s.step_id)
            and prior.since
        ):
            # Woken early (a clock behind the store's): the wait keeps its own times.
            s = attrs.evolve(s, since=prior.since, wake_at=prior.wake_at, wake_in=None)
        return s

    def _suspend_blocking(self, slot: _Slot, suspension: Suspension) -> StepRecord:
        try:
            result = self.store.suspend_run(
                self.worker, self.run_id, suspension, attempt=self.attempt
            )
        except LeaseLostError as lost:
            self._raise_stop(_Abandon(), lost)
        except StoreError as failed:
            # The handler must not go on past a wait the store never took (a handler's
            # `except Exception` must not see this): stop, and leave the run leased, so it
            # is taken up again when the lease lapses.
            self._raise_stop(_Abandon(failed), failed)
        return self._suspended_or_record(slot, result)

    async def _suspend_async(self, slot: _Slot, suspension: Callable[[], Suspension]) -> StepRecord:
        import asyncio

        if self._suspend_lock is None:
            self._suspend_lock = asyncio.Lock()
        async with self._suspend_lock:
            if self.suspended:
                raise self.halt(_Suspend())
            # Let gathered sibling steps finish and be recorded before letting go.
            while self._in_flight > 0:
                waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                self._idle_waiters.append(waiter)
                await waiter
            if self.cancel_requested:
                raise self.halt(_Cancel())
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self.pool, self._suspend_blocking, slot, suspension())

    def _suspended_or_record(self, slot: _Slot, result: SuspendResult) -> StepRecord:
        if result.cancel_requested:
            self.cancel_requested = True
            raise self.halt(_Cancel())
        if result.suspended:
            self.suspended = True
            raise self.halt(_Suspend())
        record = result.step
        assert record is not None, "suspend_run neither suspended nor returned the record"
        self.recorded[slot.position] = record
        self.steps_executed += 1
        return record

    def _flight(self, delta: int) -> None:
        self._in_flight += delta
        if self._in_flight == 0:
            waiters, self._idle_waiters = self._idle_waiters, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

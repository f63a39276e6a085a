"""Flow control inside the state machine's write transactions.

Everything here runs in the transaction of the store call that needs it, so each
decision is atomic with the write it leads to:

- **filters and versions** at emit: an agent whose filter the event fails gets no run;
  a new run is stamped with the agent's code version;
- **concurrency**: a run of an agent with a limit holds a *slot* (agent, key value)
  from its lease until it finishes, suspends or is handed back; a new run is
  ``queued`` when its key's unfinished runs already fill the limit; a run is leased only
  if its key has a free slot, oldest first, so runs of one key start in order. A slot
  is counted by the lease the run holds, so every way a lease ends frees it, and a
  dead worker's run keeps its slot until it is taken over and finishes;
- **debounce**: the first event of a burst creates a ``queued`` run; later ones only
  replace its event and push its start back; when due (quiet for the period, or
  ``max_wait`` after the first) it becomes pending;
- **cancel-on**: each new run of an agent with ``cancel_on`` is indexed by (event
  pattern, agent, key value); a matching event cancels the indexed unfinished runs. A
  missing (or null) value matches nothing: a run whose trigger lacks the field is not
  indexed, and a cancel event that lacks it cancels nothing;
- **cron**: each schedule keeps the time it last fired in the store; the lease call
  that finds it due creates the run and moves the time on in one transaction, so
  several workers fire each tick once.
"""

from __future__ import annotations

import datetime as _dt
import functools
from collections.abc import Callable, Sequence

import attrs

from ironflow._pure._cron import parse_cron
from ironflow._pure._filters import compile_filter
from ironflow._pure._ids import new_id
from ironflow.errors import DefinitionError, FilterError
from ironflow.store._backend import ReadTxn, WriteTxn
from ironflow.store._codec import decode_record, dumps, encode_record, loads
from ironflow.store._flowspec import FlowSpec, key_of, key_text
from ironflow.store._keys import sep as _sep
from ironflow.store._records import FINISHED, AgentSpec, Event, Run
from ironflow.store._triggers import trigger_matches

__all__ = ["CATCH_UP_BATCH", "FlowControl", "spec_of"]

# The tables of flow control (see _backend.py): ``slots`` (agent, key, run) for the
# unfinished runs of agents with a concurrency limit; ``debounces`` (agent, key) ->
# debounce state; ``cancel_keys`` (pattern, agent, key, run) for cancel-on; ``crons``
# (agent, index) -> cron state; ``paused`` run -> b"" for pause requests.

#: Marks a slot count as filled from the leases (see FlowControl.slot_free).
_SCANNED = (b"", "")

#: A cron trigger that catches up creates at most this many runs per lease call.
CATCH_UP_BATCH = 100


@functools.lru_cache(maxsize=256)
def _spec_of(raw: bytes) -> AgentSpec:
    return decode_record(raw, AgentSpec)


def spec_of(raw: bytes) -> AgentSpec:
    """The agent spec stored as ``raw`` (decoded once per distinct value)."""
    return _spec_of(bytes(raw))


class FlowControl:
    """The flow-control rules of a store, with the one cache they keep."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        # run id -> (agent, concurrency key): a run's key never changes, and the lease
        # path would otherwise decode every queued run on every poll.
        self._slot_keys: dict[bytes, tuple[bytes, str] | None] = {}

    # -- agents ----------------------------------------------------------------------

    def spec(self, txn: ReadTxn, agent: bytes) -> AgentSpec | None:
        raw = txn.get("agents", agent)
        return None if raw is None else spec_of(raw)

    def registered(self, txn: WriteTxn, spec: AgentSpec) -> None:
        """An agent was (re-)registered: start the clock of each new or changed schedule."""
        now = self._clock()
        flow = spec.flow
        crons = flow.crons if flow is not None else ()
        prefix = spec.id.encode() + b"\x00"
        stale = [
            key
            for key, _ in txn.scan("crons", prefix=prefix)
            if int(key[len(prefix) :]) >= len(crons)
        ]
        for key in stale:
            txn.delete("crons", key)
        for i, cron in enumerate(crons):
            key = prefix + str(i).encode()
            raw = txn.get("crons", key)
            state = loads(raw) if raw is not None else None
            if state is not None and (state["cron"], state["timezone"]) == (
                cron.cron,
                cron.timezone,
            ):
                continue
            schedule = parse_cron(cron.cron, cron.timezone)
            state = {
                "cron": cron.cron,
                "timezone": cron.timezone,
                "last": now,
                "next": schedule.next_after(now),
            }
            txn.put("crons", key, dumps(state))

    # -- emit: filters, versions, debounce, concurrency status, cancel-on ---------------

    def admits(self, spec: AgentSpec, event: Event) -> bool:
        """Whether the agent's filter (if any) lets this event start a run.

        A filter that does not parse (stored before registration checked filters)
        admits nothing: one agent's broken spec must not break every emit.
        """
        flow = spec.flow
        if flow is None or flow.filter is None:
            return True
        try:
            compiled = compile_filter(flow.filter)
        except FilterError:
            return False
        return compiled.matches(event)

    def new_run(
        self,
        txn: WriteTxn,
        spec: AgentSpec,
        event: Event,
        now: float,
        *,
        fold: bool = True,
        run_id: str | None = None,
    ) -> str:
        """Create the agent's run for ``event`` (or, unless ``fold`` is False, fold it
        into a debounced one), with the id ``run_id`` if given.

        Returns the id of the run the event went to.
        """
        flow = spec.flow or FlowSpec()
        if flow.debounce is not None and fold:
            return self._debounce(txn, spec, flow, event, now)
        run = self._make_run(txn, spec, flow, event, now, run_id)
        key = run.id.encode()
        txn.put("runs", key, encode_record(run))
        txn.put("ready", key, spec.id.encode())
        return run.id

    def _make_run(
        self,
        txn: WriteTxn,
        spec: AgentSpec,
        flow: FlowSpec,
        event: Event,
        now: float,
        run_id: str | None = None,
    ) -> Run:
        slot_key: str | None = None
        status = "pending"
        run_id = run_id or new_id("run_")
        if flow.concurrency is not None:
            slot_key = key_text(flow.concurrency.key, event.data)
            # Queued if the key's unfinished runs (running, or ahead in line) fill it.
            limit = flow.concurrency.limit
            if self._in_line(txn, spec.id, slot_key, limit) >= limit:
                status = "queued"
            txn.put("slots", _sep(spec.id, slot_key, run_id), b"")
        run = Run(
            id=run_id,
            agent=spec.id,
            status=status,  # type: ignore[arg-type]
            event=event,
            created_at=now,
            updated_at=now,
            version=flow.version,
            concurrency_key=slot_key,
        )
        for cancel in flow.cancel_on:
            if cancel.match is not None and key_of(cancel.match, event.data) is None:
                continue  # a run whose trigger lacks the field: no cancel event matches it
            index = _sep(cancel.event, spec.id, key_text(cancel.match, event.data), run.id)
            txn.put("cancel_keys", index, b"")
        return run

    def _debounce(
        self, txn: WriteTxn, spec: AgentSpec, flow: FlowSpec, event: Event, now: float
    ) -> str:
        debounce = flow.debounce
        assert debounce is not None
        clock = self._clock()  # the store's timer clock: what fire() compares against
        key = _sep(spec.id, key_text(debounce.key, event.data))
        raw = txn.get("debounces", key)
        if raw is not None and loads(raw)["due"] <= clock:
            # The last burst went quiet, though no lease call started its run yet: it
            # starts now, and this event begins the next burst.
            self._start_debounced(txn, key, loads(raw)["run"], clock)
            raw = None
        if raw is not None:
            state = loads(raw)
            run_raw = txn.get("runs", state["run"].encode())
            if run_raw is not None:
                run = decode_record(run_raw, Run)
                if run.status == "queued":
                    # The burst goes on: the run takes this event and starts later.
                    due = clock + debounce.period
                    if debounce.max_wait is not None:
                        due = min(due, state["first"] + debounce.max_wait)
                    run = attrs.evolve(run, event=event, updated_at=now)
                    txn.put("runs", run.id.encode(), encode_record(run))
                    txn.put("debounces", key, dumps({**state, "due": due}))
                    return run.id
        run = self._make_run(txn, spec, flow, event, now)
        run = attrs.evolve(run, status="queued")
        txn.put("runs", run.id.encode(), encode_record(run))
        due = clock + debounce.period
        if debounce.max_wait is not None:
            due = min(due, clock + debounce.max_wait)
        txn.put("debounces", key, dumps({"run": run.id, "first": clock, "due": due}))
        return run.id

    def _start_debounced(self, txn: WriteTxn, key: bytes, run_id: str, now: float) -> bool:
        """End a burst: its queued run becomes pending. False if it is gone or done."""
        txn.delete("debounces", key)
        run_raw = txn.get("runs", run_id.encode())
        if run_raw is None:
            return False
        run = decode_record(run_raw, Run)
        if run.status != "queued":
            return False
        run = attrs.evolve(run, status="pending", updated_at=now)
        txn.put("runs", run.id.encode(), encode_record(run))
        txn.put("ready", run.id.encode(), run.agent.encode())
        return True

    def cancel_matching(self, txn: WriteTxn, event: Event, specs: Sequence[AgentSpec]) -> list[str]:
        """The unfinished runs to cancel because of this event: those of ``specs`` (the
        agents, as the caller read them in this transaction) that cancel on it whose
        trigger event has the same key value.

        Drops the index entries it passes; the caller cancels the runs.
        """
        doomed: list[str] = []
        for spec in specs:
            if spec.flow is None:
                continue
            for rule in spec.flow.cancel_on:
                if not trigger_matches(rule.event, event.name):
                    continue
                if rule.match is not None and key_of(rule.match, event.data) is None:
                    continue  # a missing (or null) value matches nothing
                prefix = _sep(rule.event, spec.id, key_text(rule.match, event.data)) + b"\x00"
                hits = [key for key, _ in txn.scan("cancel_keys", prefix=prefix)]
                for index in hits:
                    run_id = index[len(prefix) :].decode()
                    run_raw = txn.get("runs", run_id.encode())
                    if run_raw is not None and loads(run_raw)["event"]["id"] == event.id:
                        continue  # the run this very event started
                    txn.delete("cancel_keys", index)
                    if run_raw is None or loads(run_raw)["status"] in FINISHED:
                        continue
                    doomed.append(run_id)
        return doomed

    def forget(self, txn: WriteTxn, run_id: str) -> None:
        """A queued (debouncing) run is cancelled: drop its debounce state."""
        found = next(
            (key for key, raw in txn.scan("debounces") if loads(raw)["run"] == run_id), None
        )
        if found is not None:
            txn.delete("debounces", found)

    # -- concurrency slots -------------------------------------------------------------

    def _in_line(self, txn: WriteTxn, agent: str, slot_key: str, limit: int) -> int:
        """Unfinished runs of the agent with this key, counted up to ``limit``, oldest
        first, dropping entries of finished ones on the way (a run cancelled while it
        slept, or pruned, ended without finish_run)."""
        prefix = _sep(agent, slot_key) + b"\x00"
        count = 0
        stale: list[bytes] = []
        for key, _ in txn.scan("slots", prefix=prefix):
            raw = txn.get("runs", key[len(prefix) :])
            if raw is None or loads(raw)["status"] in FINISHED:
                stale.append(key)
                continue
            count += 1
            if count >= limit:
                break
        for key in stale:
            txn.delete("slots", key)
        return count

    def _slot_of(self, txn: ReadTxn, run_id: bytes) -> tuple[bytes, str] | None:
        """The run's (agent, concurrency key), or None for a run without a limit."""
        if run_id in self._slot_keys:
            return self._slot_keys[run_id]
        raw = txn.get("runs", run_id)
        if raw is None:
            return None
        run = loads(raw)
        key = run.get("concurrency_key")
        slot = None if key is None else (run["agent"].encode(), key)
        if len(self._slot_keys) > 100_000:
            self._slot_keys.clear()
        self._slot_keys[run_id] = slot
        return slot

    def slot_free(
        self, txn: ReadTxn, run_id: bytes, agent: bytes, taken: dict[tuple[bytes, str], int]
    ) -> bool:
        """Whether a ready run may be leased now, counting the slots this call took.

        ``taken`` starts empty for each scan of the ready runs; the first run with a
        limit fills it from the leases held now (few, unlike the runs in line).
        """
        spec = self.spec(txn, agent)
        if spec is None or spec.flow is None or spec.flow.concurrency is None:
            return True
        slot = self._slot_of(txn, run_id)
        if slot is None:
            return True
        if _SCANNED not in taken:
            taken[_SCANNED] = 0
            for leased, _ in txn.scan("leases"):
                held = self._slot_of(txn, leased)
                if held is not None:
                    taken[held] = taken.get(held, 0) + 1
        busy = taken.get(slot, 0)
        if busy >= spec.flow.concurrency.limit:
            return False
        taken[slot] = busy + 1
        return True

    def finished(self, txn: WriteTxn, run: Run) -> None:
        """A run finished: drop its slot entry and pause request.

        Its cancel-on entries are left, since finding them would cost a read of the
        agent's spec on every finish: a matching event drops them when it finds the run
        finished, and ``prune`` drops what is left with the run.
        """
        if run.concurrency_key is not None:
            txn.discard("slots", _sep(run.agent, run.concurrency_key, run.id))
        txn.discard("paused", run.id.encode())

    # -- timers: debounces and crons ---------------------------------------------------

    def due(self, txn: ReadTxn, now: float) -> bool:
        """Whether a debounced run or a cron tick is due (a read, for the idle poll)."""
        for _, raw in txn.scan("debounces"):
            if loads(raw)["due"] <= now:
                return True
        for _, raw in txn.scan("crons"):
            state = loads(raw)
            if state["next"] is not None and state["next"] <= now:
                return True
        return False

    def fire(self, txn: WriteTxn, now: float, last_seq: Callable[[], int]) -> list[str]:
        """Start every due debounced run and cron tick; return the new pending runs.
        ``last_seq``: the event log's head, asked for only if a cron tick fires.

        Then a paused run that became pending meanwhile (a sleep ended, a debounce
        fired) leaves the ready queue as ``paused``.
        """
        started: list[str] = []
        for key, raw in list(txn.scan("debounces")):
            state = loads(raw)
            if state["due"] <= now and self._start_debounced(txn, key, state["run"], now):
                started.append(state["run"])
        for key, raw in list(txn.scan("crons")):
            state = loads(raw)
            if state["next"] is None or state["next"] > now:
                continue
            agent, index = key.split(b"\x00")
            spec = self.spec(txn, agent)
            if spec is None or spec.flow is None or int(index) >= len(spec.flow.crons):
                txn.delete("crons", key)
                continue
            cron = spec.flow.crons[int(index)]
            try:
                schedule = parse_cron(cron.cron, cron.timezone)
            except DefinitionError:
                # Stored before registration checked schedules: it never fires, and
                # never stops another agent's tick or lease.
                txn.delete("crons", key)
                continue
            if cron.catch_up:
                ticks = schedule.ticks_between(state["last"], now, limit=CATCH_UP_BATCH)
            else:
                # After downtime, one run for all the missed ticks: the latest one.
                latest = schedule.latest_at(now, not_before=state["last"])
                ticks = [latest] if latest is not None else []
            for tick in ticks:
                run_id = self._cron_run(txn, spec, int(index), cron.cron, tick, now, last_seq())
                started.append(run_id)
            last = ticks[-1] if cron.catch_up and len(ticks) == CATCH_UP_BATCH else now
            state = {**state, "last": last, "next": schedule.next_after(last)}
            txn.put("crons", key, dumps(state))
        for key, _ in list(txn.scan("paused")):
            if txn.get("ready", key) is not None:
                txn.delete("ready", key)
                run = decode_record(txn.get("runs", key) or b"", Run)
                run = attrs.evolve(run, status="paused", updated_at=now)
                txn.put("runs", key, encode_record(run))
        return started

    def _cron_run(
        self,
        txn: WriteTxn,
        spec: AgentSpec,
        index: int,
        expression: str,
        tick: float,
        now: float,
        last_seq: int,
    ) -> str:
        at = _dt.datetime.fromtimestamp(tick, _dt.UTC).isoformat().replace("+00:00", "Z")
        # Not in the event log (like a spawned run's event): its id names the tick.
        event = Event(
            id=f"cron:{spec.id}:{index}:{int(tick)}",
            name=f"cron.{spec.id}",
            data={"cron": expression, "tick": at},
            ts=now,
            seq=last_seq,
        )
        run = self._make_run(txn, spec, spec.flow or FlowSpec(), event, now)
        key = run.id.encode()
        txn.put("runs", key, encode_record(run))
        txn.put("ready", key, spec.id.encode())
        return run.id

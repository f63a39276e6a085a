"""The agreement test: every store answers every operation as the MemoryStore does.

A Hypothesis state machine applies the same operations (emit, an entity stream's append
and delete, lease, record a step, suspend, spawn, a fake clock that moves and so wakes
runs, cancel, pause, resume, re-run, fork, import, a worker that crashes, finish,
finish-and-lease, release, heartbeat) to each store of ``backends.BACKENDS`` in turn,
and after every operation asserts that each answered exactly as the oracle did (the same
result, or the same error) and that each holds the same runs, steps, leases, events and
streams, and checks each store's invariants (``check_valid``). Runs and events get
random ids, and records carry wall-clock times: ids are compared by the order they were
first seen in, and wall-clock times are left out; times on the store's timer clock (a
shared fake clock) are compared exactly.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from ironflow.store import AgentSpec, Run, StepRecord, Store, Suspension
from ironflow.store._codec import converter
from ironflow.store._flowspec import CancelOn, ConcurrencyLimit, Debounce, FlowSpec
from ironflow.testing import FakeClock, StandInWorker
from tests.store.backends import Opened, opened_all

AGENTS = [
    AgentSpec("plain", ("job.*",)),
    AgentSpec("limited", ("job.go",), flow=FlowSpec(concurrency=ConcurrencyLimit(1, "data.k"))),
    AgentSpec("filtered", ("job.go",), flow=FlowSpec(filter="data.k == 1")),
    AgentSpec(
        "cancellable",
        ("order.created",),
        flow=FlowSpec(cancel_on=(CancelOn("order.cancelled", "data.k"),)),
    ),
    AgentSpec("debounced", ("burst",), flow=FlowSpec(debounce=Debounce(5.0, "data.k"))),
    AgentSpec("child", ("never.emitted",)),
]
AGENT_IDS = [a.id for a in AGENTS]
EVENTS = ["job.go", "job.other", "order.created", "order.cancelled", "burst", "pay"]
WORKERS = 3
STREAMS = ["s1", "s2"]

_ID = re.compile(r"(?:run|evt)_[0-9A-HJKMNP-TV-Z]{26}")
#: Fields stamped by the wall clock (or by the client, for an event's time): not compared.
_WALL = frozenset({"created_at", "updated_at", "ts", "expires_at", "at"})


@attrs.define
class _Side:
    """One backend under test, and its ids in the order it first showed them."""

    name: str
    opened: Opened
    canonical: dict[str, str] = attrs.Factory(dict)
    actual: dict[str, str] = attrs.Factory(dict)

    @property
    def store(self) -> Store:
        return self.opened.store

    def id(self, canonical: str) -> str:
        return self.actual[canonical]

    def _canon(self, found: re.Match[str]) -> str:
        real = found.group(0)
        if real not in self.canonical:
            name = f"<{real[:3]}{len(self.canonical) + 1}>"
            self.canonical[real] = name
            self.actual[name] = real
        return self.canonical[real]

    def normal(self, value: Any) -> Any:
        """``value`` with ids made canonical and wall-clock times dropped."""
        if attrs.has(type(value)) or isinstance(value, list | tuple | set):
            value = converter.unstructure(
                sorted(value) if isinstance(value, set) else value  # type: ignore[type-var]
            )
        if isinstance(value, dict):
            return {k: None if k in _WALL else self.normal(v) for k, v in sorted(value.items())}
        if isinstance(value, list | tuple):
            return [self.normal(v) for v in value]
        if isinstance(value, str):
            return _ID.sub(self._canon, value)
        return value


def _outcome(side: _Side, call: Callable[[_Side], Any]) -> Any:
    try:
        return ("ok", side.normal(call(side)))
    except Exception as exc:  # the error's type is the answer; its text names ids
        return ("raised", type(exc).__name__)


class Agreement(RuleBasedStateMachine):
    """Apply each operation to every backend; they must agree with the oracle."""

    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="ironflow-agree-"))
        self.clock = FakeClock(start=1_000_000.0)
        self._stores = opened_all(self.tmp, self.clock)
        self.sides = [_Side(name, opened) for name, opened in self._stores.__enter__().items()]
        self.workers = [StandInWorker() for _ in range(WORKERS)]
        self.spawned = 0

    def teardown(self) -> None:
        for worker in self.workers:
            worker.kill()
        self._stores.__exit__(None, None, None)
        shutil.rmtree(self.tmp, ignore_errors=True)

    # -- applying an operation everywhere ----------------------------------------------

    @property
    def oracle(self) -> _Side:
        return self.sides[0]

    def each(self, call: Callable[[_Side], Any]) -> Any:
        """Apply ``call`` to every backend; assert they all answered as the oracle did."""
        expected = _outcome(self.oracle, call)
        for side in self.sides[1:]:
            got = _outcome(side, call)
            assert got == expected, f"{side.name} answered {got}, the oracle {expected}"
        return expected

    # -- what the oracle holds, to choose operations from ------------------------------

    def runs(self) -> list[Run]:
        return list(reversed(self.oracle.store.list_runs(limit=10_000)))

    def ids(self) -> list[str]:
        return [self.oracle.normal(r.id) for r in self.runs()]

    def held(self) -> list[tuple[int, str]]:
        out = []
        for run in self.runs():
            lease = self.oracle.store.get_lease(run.id)
            for w, worker in enumerate(self.workers):
                if lease is not None and lease.worker.id == worker.info.id:
                    out.append((w, self.oracle.normal(run.id)))
        return out

    def run_of(self, canonical: str) -> Run:
        return self.oracle.store.get_run(self.oracle.id(canonical))

    def next_position(self, canonical: str) -> int:
        return len(self.oracle.store.get_steps(self.oracle.id(canonical)))

    # -- rules ---------------------------------------------------------------------------

    @initialize()
    def register(self) -> None:
        self.each(lambda s: s.store.register_agents(AGENTS))

    @rule(
        name=st.sampled_from(EVENTS),
        k=st.sampled_from([0, 1, None]),
        event_id=st.sampled_from([None, None, "E1", "E2"]),
    )
    def emit(self, name: str, k: int | None, event_id: str | None) -> None:
        data = {} if k is None else {"k": k}
        self.each(lambda s: s.store.emit(name, data, id=event_id))

    @rule(
        stream=st.sampled_from(STREAMS),
        name=st.sampled_from(["pay", "job.go"]),
        k=st.sampled_from([0, 1]),
        expected=st.sampled_from([None, None, 0, 1, 2]),
        key=st.sampled_from([None, "k1"]),
    )
    def append(
        self, stream: str, name: str, k: int, expected: int | None, key: str | None
    ) -> None:
        """An entity stream append: an event of the log too (it may start or wake runs)."""
        self.each(
            lambda s: s.store.append_to_stream(
                stream, name, {"k": k}, expected_version=expected, idempotency_key=key
            )
        )

    @rule(stream=st.sampled_from(STREAMS), versions=st.sampled_from([None, (1,), (2, 3)]))
    def delete_from_stream(self, stream: str, versions: tuple[int, ...] | None) -> None:
        self.each(lambda s: s.store.delete_stream_events(stream, versions))

    @rule(w=st.integers(0, WORKERS - 1), limit=st.integers(1, 3))
    def lease(self, w: int, limit: int) -> None:
        info = self.workers[w].info
        self.each(lambda s: s.store.lease_runs(info, AGENT_IDS, limit=limit, ttl=600))

    @precondition(lambda self: self.held())
    @rule(data=st.data(), failed=st.booleans(), stale=st.booleans(), again=st.booleans())
    def record_step(self, data: st.DataObject, failed: bool, stale: bool, again: bool) -> None:
        """The next step; or, ``again``, the last one once more (a retry: a no-op)."""
        w, run = data.draw(st.sampled_from(self.held()))
        attempt = self.run_of(run).attempt - (1 if stale else 0)
        position = max(0, self.next_position(run) - (1 if again else 0))
        info = self.workers[w].info

        def call(s: _Side) -> Any:
            step = StepRecord(
                run_id=s.id(run),
                position=position,
                id=f"s{position}",
                status="failed" if failed else "completed",
                input={"p": position},
                output=None if failed else {"p": position},
                started_at=1.0,
                ended_at=2.0,
                attempt=attempt,
            )
            return s.store.record_step(info, step)

        self.each(call)

    @precondition(lambda self: self.ids())
    @rule(data=st.data(), w=st.integers(0, WORKERS - 1))
    def write_without_the_lease(self, data: st.DataObject, w: int) -> None:
        """Fencing: a worker writes to a run it may not hold."""
        run = data.draw(st.sampled_from(self.ids()))
        info = self.workers[w].info
        attempt = self.run_of(run).attempt
        step = StepRecord("", 99, "stray", "completed", None, None, 1.0, 2.0, attempt=attempt)
        self.each(lambda s: s.store.record_step(info, attrs.evolve(step, run_id=s.id(run))))
        self.each(lambda s: s.store.release_run(info, s.id(run), attempt=attempt))

    @precondition(lambda self: self.held())
    @rule(
        data=st.data(),
        kind=st.sampled_from(["sleep", "event", "event-k", "child"]),
        wake_in=st.sampled_from([None, 0.0, 5.0, 50.0]),
    )
    def suspend(self, data: st.DataObject, kind: str, wake_in: float | None) -> None:
        w, run = data.draw(st.sampled_from(self.held()))
        position = self.next_position(run)
        parent = self.run_of(run)
        info = self.workers[w].info
        children = [self.oracle.normal(r.id) for r in self.runs() if r.parent_id == parent.id]
        if kind == "child" and not children:
            kind = "sleep"
        child = data.draw(st.sampled_from(children)) if kind == "child" else None

        def call(s: _Side) -> Any:
            if kind == "sleep":
                wait = Suspension(
                    kind="sleep", position=position, step_id="sleep", wake_in=wake_in or 5.0
                )
            elif kind == "child":
                assert child is not None
                wait = Suspension(
                    kind="child",
                    position=position,
                    step_id="spawn.child.result",
                    child_id=s.id(child),
                    wake_in=wake_in,
                )
            else:
                wait = Suspension(
                    kind="event",
                    position=position,
                    step_id="wait.pay",
                    event="pay",
                    match={"k": 1} if kind == "event-k" else None,
                    after_seq=parent.event.seq,
                    wake_in=wake_in,
                )
            return s.store.suspend_run(info, s.id(run), wait, attempt=parent.attempt)

        self.each(call)

    @precondition(lambda self: self.held())
    @rule(data=st.data(), step=st.sampled_from(["spawn.child", "spawn.child#2"]))
    def spawn(self, data: st.DataObject, step: str) -> None:
        w, run = data.draw(st.sampled_from(self.held()))
        info = self.workers[w].info
        attempt = self.run_of(run).attempt
        self.spawned += 1
        n = self.spawned
        self.each(
            lambda s: s.store.spawn_run(info, s.id(run), step, "child", {"n": n}, attempt=attempt)
        )

    @rule(seconds=st.sampled_from([1.0, 6.0, 60.0]))
    def time_passes(self, seconds: float) -> None:
        """The fake clock moves; the next lease fires what is due."""
        self.clock.advance(seconds)

    @precondition(lambda self: self.ids())
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        run = data.draw(st.sampled_from(self.ids()))
        self.each(lambda s: s.store.request_cancel(s.id(run)))

    @precondition(lambda self: self.ids())
    @rule(data=st.data(), pause=st.booleans())
    def pause_or_resume(self, data: st.DataObject, pause: bool) -> None:
        run = data.draw(st.sampled_from(self.ids()))
        if pause:
            self.each(lambda s: s.store.pause_run(s.id(run)))
        else:
            self.each(lambda s: s.store.resume_run(s.id(run)))

    @precondition(lambda self: self.ids())
    @rule(data=st.data())
    def rerun(self, data: st.DataObject) -> None:
        run = data.draw(st.sampled_from(self.ids()))
        steps = [s.id for s in self.oracle.store.get_steps(self.oracle.id(run))]
        from_step = data.draw(st.sampled_from([*steps, "no-such-step"]))
        self.each(lambda s: s.store.resume_run(s.id(run), from_step=from_step))

    @precondition(lambda self: self.ids())
    @rule(data=st.data(), changed=st.booleans())
    def fork(self, data: st.DataObject, changed: bool) -> None:
        run = data.draw(st.sampled_from(self.ids()))
        steps = [s.id for s in self.oracle.store.get_steps(self.oracle.id(run))]
        from_step = data.draw(st.sampled_from([*steps, "no-such-step"]))
        new_data = {"k": 2} if changed else None
        self.each(lambda s: s.store.fork_run(s.id(run), from_step=from_step, data=new_data))

    @precondition(lambda self: self.ids())
    @rule(data=st.data())
    def import_a_copy(self, data: st.DataObject) -> None:
        """A run's history, exported from each store, imported into it under new ids.

        Each store exports its own copy: a history carries the ids its steps recorded
        (an awaited event's id in a wait's output), and each store names those its own
        way, so the oracle's history would carry ids the others never made.
        """
        from ironflow.store._history import export_history

        run = data.draw(st.sampled_from(self.ids()))
        self.each(
            lambda s: s.store.import_history(export_history(s.store, s.id(run)), new_ids=True)
        )

    @rule(w=st.integers(0, WORKERS - 1))
    def crash(self, w: int) -> None:
        """kill -9 of a worker: its leases are free at once for the others."""
        self.workers[w].kill()
        self.workers[w] = StandInWorker()

    @precondition(lambda self: self.held())
    @rule(
        data=st.data(),
        status=st.sampled_from(["completed", "failed", "cancelled"]),
        stale=st.booleans(),
    )
    def finish(self, data: st.DataObject, status: str, stale: bool) -> None:
        w, run = data.draw(st.sampled_from(self.held()))
        info = self.workers[w].info
        attempt = self.run_of(run).attempt - (1 if stale else 0)
        self.each(
            lambda s: s.store.finish_run(
                info, s.id(run), status=status, output={"done": run}, attempt=attempt
            )
        )

    @precondition(lambda self: self.held())
    @rule(
        data=st.data(),
        status=st.sampled_from(["completed", "failed"]),
        stale=st.booleans(),
        limit=st.integers(1, 2),
    )
    def finish_and_lease(self, data: st.DataObject, status: str, stale: bool, limit: int) -> None:
        """The finish and the next lease in one transaction (a worker with a backlog)."""
        w, run = data.draw(st.sampled_from(self.held()))
        info = self.workers[w].info
        attempt = self.run_of(run).attempt - (1 if stale else 0)
        self.each(
            lambda s: s.store.finish_and_lease(
                info,
                s.id(run),
                status=status,
                output={"done": run},
                attempt=attempt,
                agents=AGENT_IDS,
                limit=limit,
                ttl=600,
            )
        )

    @precondition(lambda self: self.held())
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        w, run = data.draw(st.sampled_from(self.held()))
        info = self.workers[w].info
        attempt = self.run_of(run).attempt
        self.each(lambda s: s.store.release_run(info, s.id(run), attempt=attempt))

    @rule(w=st.integers(0, WORKERS - 1))
    def heartbeat(self, w: int) -> None:
        info = self.workers[w].info
        mine = [run for v, run in self.held() if v == w] + ["<run-none>"]
        self.each(lambda s: s.store.heartbeat(info, [s.actual.get(r, r) for r in mine], ttl=600))

    # -- after every rule --------------------------------------------------------------

    @invariant()
    def every_store_holds_the_same_and_is_valid(self) -> None:
        def snapshot(s: _Side) -> Any:
            store = s.store
            runs = store.list_runs(limit=10_000)
            return {
                "runs": runs,
                "steps": [store.get_steps(r.id) for r in runs],
                "leases": [store.get_lease(r.id) for r in runs],
                "events": store.events(limit=10_000),
                "streams": [store.read_stream(name) for name in STREAMS],
            }

        self.each(snapshot)
        for side in self.sides:
            side.opened.check_valid()


# The profile (tests/conftest.py) sets how many examples: quick in make test, thorough
# with HYPOTHESIS_PROFILE=thorough.
Agreement.TestCase.settings = settings(settings.default, stateful_step_count=30)
TestAgreement = Agreement.TestCase

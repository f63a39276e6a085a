"""Crash runs at random boundaries around each waiting primitive, and check they end as if not.

One agent sleeps, waits for an event, asks for an approval, calls a tool that fails
twice before it succeeds (retries), spawns a child run and waits for its result. A
series of "worker processes" (a real :class:`~ironflow.Worker` over a
:class:`~ironflow.testing.CrashingStore`, each on a fresh ``LmdbStore`` of the same
data directory, leases under a :class:`~ironflow.testing.StandInWorker` pid) serve it;
each may die at one boundary: in the agent's code, before or after a step record, a
suspension, a spawn, a lease or the run's finish. Between processes the outside world
moves: the store's clock passes the sleep, the event is emitted, the approval given.

After every process the store's indexes must agree with its runs; at the end the run
must have completed with the uncrashed run's output, each step recorded once, each
side effect run at most once more per crash, exactly one child spawned, and the
timers fired across restarts. A second property cancels the run at a random point and
checks that nothing of it ever executes again.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from typing import Any

import attrs
from hypothesis import event, given
from hypothesis import strategies as st

from ironflow import AgentContext, Worker, agent, current_step, tool
from ironflow._agent._primitives import approval_event
from ironflow.store import LmdbStore, Run
from ironflow.testing import CrashingStore, FakeClock, StandInWorker
from tests.helpers import serve_until_idle_or_crash
from tests.property._world import LEASE_TTL, Crash, World, check_recorded_once, world

SIGNAL = "prims.signal"


@tool
def effect(label: str) -> str:
    world().executed()
    return label.upper()


@tool(retries=3, backoff=0)
def flaky(label: str) -> str:
    """Fails on its first two tries, whatever crashed in between: the tries are durable."""
    world().executed()
    info = current_step()
    assert info is not None
    if info.retry < 2:
        raise RuntimeError(f"{label}: try {info.retry + 1} fails")
    return f"{label} after {info.retry} retries"


@agent(id="prims-kid", triggers=[])
def kid(ctx: AgentContext) -> str:
    return str(effect(label=f"kid-{ctx.event.data['key']}"))


@agent(id="prims", triggers=["prims.go"])
def prims(ctx: AgentContext) -> dict[str, Any]:
    w = world()
    key = ctx.event.data["key"]
    w.boundary()
    first = effect(label=f"first-{key}")
    w.boundary()
    ctx.sleep("1h")
    w.boundary()
    signal = ctx.wait_for_event(SIGNAL, match={"key": key})
    w.boundary()
    answer = ctx.approve("go", {"first": first})
    w.boundary()
    tried = flaky(label=f"flaky-{key}")
    w.boundary()
    child = ctx.spawn(kid, {"key": key})
    w.boundary()
    child_output = child.result()
    w.boundary()
    last = effect(label=f"last-{key}")
    return {
        "first": first,
        "signal": signal.data if signal is not None else None,
        "approved": answer.approved,
        "approver": answer.approver,
        "tried": tried,
        "child": child_output,
        "last": last,
    }


PRIMS_IDS = [
    "tool.effect",
    "sleep",
    f"wait.{SIGNAL}",
    "approve.go",
    "tool.flaky",
    "spawn.prims-kid",
    "spawn.prims-kid.result",
    "tool.effect#2",
]
#: Crashes a process may die of: in the agent's code, at a store call of the run, or in
#: the release of a drain begun at a boundary.
KINDS = (
    "before",
    "during",
    "record_step:before",
    "record_step:after",
    "suspend_run:before",
    "suspend_run:after",
    "spawn_run:before",
    "spawn_run:after",
    "release_run:before",
    "release_run:after",
    "lease_runs:after",
    "finish_run:before",
    "finish_run:after",
)
#: Where each kind can fire: the positions whose step makes that call (a boundary kind
#: fires at its boundary, one before each step, even in replayed code).
_STEP_TARGETS = {
    "during": (0, 4, 7),  # our tools' bodies: effect, each try of flaky, effect#2
    "record_step": (0, 4, 5, 7),  # the waits' records are written by the store
    "suspend_run": (1, 2, 3, 4, 6),  # sleep, event, approval, a retry's backoff, the child
    "spawn_run": (5,),
}


@attrs.frozen
class Planned:
    """A crash to aim ``offset`` step positions from where the run resumes."""

    kind: str
    offset: int


@attrs.define
class Outside:
    """What the world outside the workers has done for one run so far."""

    signal_sent: bool = False
    approval_sent: bool = False
    approve: bool = True


class Harness:
    """One data directory, one fake clock, and the processes that served the run."""

    def __init__(self, w: World) -> None:
        self.w = w
        self.clock = FakeClock()
        self.outside: dict[str, Outside] = {}

    def emit(self, key: str, *, approve: bool = True) -> str:
        run_id = self.w.emit("prims.go", {"key": key}, [_definition(prims)])
        self.outside[run_id] = Outside(approve=approve)
        return run_id

    @contextlib.contextmanager
    def store(self) -> Any:
        s = LmdbStore(self.w.path, sync=False, clock=self.clock)
        try:
            yield s
        finally:
            s.close()

    def serve_once(self, run_id: str, crash: Crash | None) -> bool:
        """One worker process over the data directory; True if it crashed."""
        inner = LmdbStore(self.w.path, sync=False, clock=self.clock)
        fault = crash.store_fault(run_id) if crash is not None else None
        store = CrashingStore(inner, *([fault] if fault is not None else []))
        process = StandInWorker()
        try:
            with self.w.incarnation(store, crash):
                worker = Worker(
                    [prims, kid],
                    store=store,
                    concurrency=2,
                    lease_ttl=LEASE_TTL,
                    poll_interval=0.01,
                )
                worker.info = process.info
                serve_until_idle_or_crash(worker)
            if store.crashed:
                self.w.crashes[run_id] += 1
            inner.check_valid()
            return store.crashed
        finally:
            process.kill()
            inner.close()

    def move_outside_world(self, run_id: str) -> None:
        """Do what the run waits for: pass its sleep, emit its event, give its approval."""
        with self.store() as s:
            run = s.get_run(run_id)
            s_ = run.suspension
            if run.status == "sleeping":
                self.clock.advance("1h")
            elif run.status == "waiting" and s_ is not None and s_.event == SIGNAL:
                self.send_signal(s, run)
            elif run.status == "waiting" and s_ is not None and s_.step_id == "approve.go":
                self.send_approval(s, run)

    def send_signal(self, s: LmdbStore, run: Run) -> None:
        outside = self.outside[run.id]
        if not outside.signal_sent:
            outside.signal_sent = True
            s.emit(SIGNAL, {"key": run.event.data["key"], "n": 7})

    def send_approval(self, s: LmdbStore, run: Run) -> None:
        outside = self.outside[run.id]
        if not outside.approval_sent:
            outside.approval_sent = True
            s.emit(*approval_event(run.id, "go", approved=outside.approve, approver="ann"))

    def aim(self, run_id: str, planned: Planned) -> Crash:
        """The crash ``planned.offset`` steps from where the run resumes, where it can fire.

        A step kind aims at a position not yet recorded whose step makes its call, and not
        the one the run waits at now (its call is made); a boundary kind at any boundary
        near the resume point. A kind with nothing left to fire at dies at the lease.
        """
        with self.store() as s:
            run = s.get_run(run_id)
            recorded = {step.position for step in s.get_steps(run_id)}
        resume_at = min(set(range(len(PRIMS_IDS) + 1)) - recorded)
        method = planned.kind.partition(":")[0]
        if method in ("lease_runs", "finish_run"):
            return Crash(planned.kind)
        if method == "before" or (method == "release_run" and resume_at < len(PRIMS_IDS)):
            position = min(max(resume_at + planned.offset, 0), len(PRIMS_IDS) - 1)
            return Crash(planned.kind, position)
        waiting_at = run.suspension.position if run.suspension is not None else None
        targets = [
            p
            for p in _STEP_TARGETS.get(method, ())
            if p >= resume_at and p not in recorded and p != waiting_at
        ]
        if not targets:
            return Crash("lease_runs:after")
        return Crash(planned.kind, targets[min(max(planned.offset, 0), len(targets) - 1)])

    def drive(self, run_id: str, plan: list[Planned], *, max_rounds: int = 40) -> Run:
        """Serve the run through ``plan``, then until it ends.

        Each planned crash is aimed once and stays armed, process after process, until
        it fires: a process that suspends the run before reaching it passes it on.
        """
        for planned in plan:
            crash = self.aim(run_id, planned)
            for _ in range(max_rounds):
                crashed = self.serve_once(run_id, crash)
                self.move_outside_world(run_id)
                if crashed:
                    break
            else:
                raise AssertionError(f"{crash} was aimed where it could fire, but never did")
        for _ in range(max_rounds):
            with self.store() as s:
                run = s.get_run(run_id)
            if run.status in ("completed", "failed", "cancelled"):
                return run
            self.serve_once(run_id, None)
            self.move_outside_world(run_id)
        raise AssertionError(f"run {run_id} did not finish: {run}")


def _definition(fn: Any) -> Any:
    from ironflow._agent._dsl import AgentDefinition

    return AgentDefinition.must_from_fn(fn)


_planned = st.builds(
    Planned,
    st.sampled_from([k for k in KINDS if k != "finish_run:after"]),
    st.integers(min_value=-1, max_value=2),
)
#: One to four crashes; one after the finish's write ends the run, so it comes last.
crash_plans = st.tuples(
    st.lists(_planned, max_size=3),
    st.one_of(_planned, st.builds(Planned, st.just("finish_run:after"), st.just(0))),
).map(lambda t: [*t[0], t[1]])


def _reference(h: Harness, key: str, approve: bool) -> Any:
    run_id = h.emit(f"{key}", approve=approve)
    run = h.drive(run_id, [])
    assert run.status == "completed", run
    return run.output


@given(
    plan=crash_plans,
    early_signal=st.booleans(),
    early_approval=st.booleans(),
    approve=st.booleans(),
)
def test_crashes_around_each_primitive_never_change_the_outcome(
    plan: list[Planned], early_signal: bool, early_approval: bool, approve: bool
) -> None:
    """Whatever the crashes, the run completes once, as the uncrashed run did, spawning once."""
    with World.temporary() as w:
        h = Harness(w)
        reference = _reference(h, "ref", approve)
        run_id = h.emit("ref", approve=approve)
        with h.store() as s:
            run = s.get_run(run_id)
            # An event and an approval sent after the run started, before it waits, count.
            if early_signal:
                h.send_signal(s, run)
            if early_approval:
                h.send_approval(s, run)
        run = h.drive(run_id, plan)
        crashes = w.crashes[run_id]
        event(f"crashes: {crashes}")
        assert run.status == "completed", run
        assert run.output == reference, (run.output, reference)
        with h.store() as s:
            steps = s.get_steps(run_id)
            children = [
                r for r in s.list_runs(limit=100, agent="prims-kid") if r.parent_id == run_id
            ]
            s.check_valid()
        check_recorded_once(steps, PRIMS_IDS)
        assert len(steps) == len(PRIMS_IDS)
        assert len(children) == 1, f"spawned {len(children)} children"
        # Each side effect ran once, plus at most once per crash (flaky: its three tries).
        counts = w.counts(run_id)
        assert 1 <= counts["tool.effect"] <= 1 + crashes
        assert 1 <= counts["tool.effect#2"] <= 1 + crashes
        assert 3 <= counts["tool.flaky"] <= 3 + crashes
        kid_runs = w.counts(children[0].id)
        assert 1 <= kid_runs["tool.effect"] <= 1 + sum(w.crashes.values())
        flaky_step = steps[PRIMS_IDS.index("tool.flaky")]
        assert flaky_step.tries is not None and len(flaky_step.tries) == 2


@given(
    plan=crash_plans,
    cancel_after=st.integers(min_value=1, max_value=7),
    answer_last=st.booleans(),
)
def test_a_cancelled_run_never_executes_another_step(
    plan: list[Planned], cancel_after: int, answer_last: bool
) -> None:
    """Cancelled after some processes (crashed or not), the run runs nothing more, ever."""
    with World.temporary() as w:
        h = Harness(w)
        run_id = h.emit("cancel-me")
        for i in range(cancel_after):
            h.serve_once(run_id, h.aim(run_id, plan[i]) if i < len(plan) else None)
            if answer_last or i < cancel_after - 1:
                h.move_outside_world(run_id)
        with h.store() as s:
            before = s.get_run(run_id)
            cancelled = s.request_cancel(run_id)
            recorded = len(s.get_steps(run_id))
        executed = Counter(w.executions)
        event(f"cancelled while {before.status}")
        # Everything the outside world could do, and more workers: nothing of it runs.
        for _ in range(3):
            h.serve_once(run_id, None)
            with h.store() as s:
                run = s.get_run(run_id)
                h.send_signal(s, run)
                h.send_approval(s, run)
            h.clock.advance("1d")
        with h.store() as s:
            run = s.get_run(run_id)
            steps = s.get_steps(run_id)
            s.check_valid()
        own = {k: n for k, n in w.executions.items() if k[0] == run_id}
        assert own == {k: n for k, n in executed.items() if k[0] == run_id}, (
            "a step of the cancelled run executed after the cancellation"
        )
        assert len(steps) == recorded, "a step was recorded after the cancellation"
        if before.status in ("completed", "failed"):
            assert run.status == before.status
        elif recorded == len(PRIMS_IDS):
            # Orphaned after its last step: no boundary is left to stop at, so it may end
            # completed, as the steps it had already taken say.
            assert run.status in ("cancelled", "completed"), (before.status, cancelled, run)
        else:
            assert run.status == "cancelled", (before.status, cancelled, run)

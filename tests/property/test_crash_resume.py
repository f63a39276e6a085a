"""Crash a run at random step boundaries, restart it, and check it ends as if never crashed.

The state machine's rules are "emit a run", "one worker incarnation attempts it,
maybe crashing at a boundary" and "an incarnation stalls past its lease and another
overtakes it" (a second live execution racing the first); after every rule the
invariants check that each step position is recorded once with the uncrashed run's id,
that a recorded step never runs again, and that each crash (or overtaken stall) costs
at most one extra execution. A run that ends must end completed, with the uncrashed
run's output. See ``_world.py`` for how an incarnation is made to die, or to stall and
be taken over."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import attrs
from hypothesis import event, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    rule,
)

from ironflow import AgentContext, Worker, agent, tool
from ironflow._agent._dsl import AgentDefinition
from ironflow.store import StepRecord
from ironflow.testing import CrashingStore, StandInWorker
from tests.helpers import serve_until_idle_or_crash
from tests.property._world import (
    KINDS,
    LEASE_TTL,
    Crash,
    World,
    check_attempt,
    check_race,
    check_recorded_once,
    world,
)
from tests.support.postgres import fresh_database, release_database


@attrs.frozen
class Page:
    text: str
    words: int


@tool
def fetch(doc: str) -> Page:
    world().executed()
    return Page(text=f"<{doc}>", words=len(doc.split()))


@tool
def score(text: str, bonus: int = 0) -> int:
    world().executed()
    return sum(map(ord, text)) % 97 + bonus


def stamp(text: str, r: float) -> str:
    """A ctx.step body: ``r`` is part of its recorded input, so a replay that drew a new
    random number instead of the recorded one would be caught as non-determinism."""
    world().executed()
    return text.upper()


@agent(id="crashy", triggers=["crash.doc"])
def crashy(ctx: AgentContext) -> dict[str, Any]:
    w = world()
    doc = ctx.event.data["doc"]
    w.boundary()
    page = fetch(doc=doc)
    w.boundary()
    when = ctx.now()
    w.boundary()
    uid = ctx.uuid()
    w.boundary()
    r = ctx.random()
    w.boundary()
    shout = ctx.step("stamp", stamp, page.text, r)
    w.boundary()
    again = fetch(doc=shout)
    w.boundary()
    total = score(text=again.text, bonus=page.words)
    return {
        "result": {
            "page": page.text,
            "shout": shout,
            "again": again.text,
            "score": total,
            # Recorded outputs come back as the tool's declared class, replayed or not.
            "types": [type(page).__name__, type(again).__name__],
        },
        "seen": {"now": when.isoformat(), "uuid": str(uid), "random": r},
    }


CRASHY_IDS = ["tool.fetch", "now", "uuid", "random", "stamp", "tool.fetch#2", "tool.score"]
#: Steps whose body is ours, so their executions are counted.
COUNTED = {"tool.fetch", "stamp", "tool.fetch#2", "tool.score"}
COUNTED_POSITIONS = [p for p, step_id in enumerate(CRASHY_IDS) if step_id in COUNTED]

docs = st.text(alphabet="abc xyz", min_size=1, max_size=12)
#: What an incarnation may die of here: the step kinds, a drain's release, the run's.
CRASHY_KINDS = (*KINDS, "release_run:before", "release_run:after")
crashes = st.tuples(
    st.sampled_from((*CRASHY_KINDS, "no crash")), st.integers(min_value=-2, max_value=2)
)


def aim(kind: str, offset: int, resume: int) -> Crash:
    """The crash of ``kind`` about ``offset`` steps from where the run resumes, where it
    can still fire.

    Boundary kinds ("before", a drain's release) fire in replayed code too, so they aim
    anywhere near the resume point; "during" only in a body of ours not yet recorded,
    ``record_step`` at a position not yet recorded. A kind with nothing left to fire at
    (the run's steps are all recorded, its finish is left) dies at the lease instead.
    """
    last = len(CRASHY_IDS) - 1
    if kind in ("lease_runs:after", "finish_run:before", "finish_run:after"):
        return Crash(kind)
    if kind == "before" or (kind.startswith("release_run") and resume <= last):
        return Crash(kind, min(max(resume + offset, 0), last))
    if kind == "during":
        targets = [p for p in COUNTED_POSITIONS if p >= resume]
    elif kind.startswith("record_step"):
        targets = list(range(resume, last + 1))
    else:
        targets = []
    if not targets:
        return Crash("lease_runs:after")
    return Crash(kind, targets[min(max(offset, 0), len(targets) - 1)])


def check_output(output: Any, reference: Any, steps: list[StepRecord]) -> None:
    """The uncrashed run's result, and exactly the now/uuid/random values recorded."""
    assert output["result"] == reference["result"], (output, reference)
    recorded = {s.id: s.output for s in steps}
    assert output["seen"] == {
        "now": recorded["now"],
        "uuid": recorded["uuid"],
        "random": recorded["random"],
    }, (output["seen"], recorded)


@settings(stateful_step_count=12)
class CrashResumeMachine(RuleBasedStateMachine):
    """Rules: emit a run; let a worker attempt it and maybe crash. Invariants after each."""

    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="ironflow-crash-"))
        self.world = World(self.location())
        self._active_world = self.world.active()
        self._active_world.__enter__()
        self.runs: dict[str, str] = {}  # run id -> doc
        self.references: dict[str, Any] = {}  # doc -> the uncrashed run's output
        self.active: str | None = None
        self.recorded_counts: dict[str, dict[str, int]] = {}  # run -> step -> executions

    def location(self) -> Path | str:
        """Where the world's store lives: a data directory here."""
        return self.tmp / "data"

    def released(self) -> None:
        """Give back what :meth:`location` took (the directory goes with ``tmp``)."""

    # -- rules ---------------------------------------------------------------------

    def _emit(self, doc: str) -> None:
        if doc not in self.references:
            ref_id = self.world.emit(
                "crash.doc", {"doc": doc}, [AgentDefinition.must_from_fn(crashy)]
            )
            reference = self.world.run_to_completion(crashy, ref_id)
            assert reference.status == "completed", reference
            self.references[doc] = reference.output
        run_id = self.world.emit("crash.doc", {"doc": doc}, [AgentDefinition.must_from_fn(crashy)])
        self.runs[run_id] = doc
        self.active = run_id

    @rule(doc=docs, crash=crashes)
    def attempt(self, doc: str, crash: tuple[str, int]) -> None:
        """One incarnation attempts the active run (emitting one from ``doc`` if none is)."""
        if self.active is None:
            self._emit(doc)
        run_id = self.active
        assert run_id is not None
        planned: Crash | None = None
        kind, offset = crash
        if kind != "no crash":
            _, steps = self.world.snapshot(run_id)
            planned = aim(kind, offset, len(steps))
        attempt = self.world.attempt(crashy, run_id, planned)
        event(f"crash {planned.kind if planned else None}")
        assert attempt.crashed == (planned is not None), f"{planned} was aimed but did not fire"
        check_attempt(attempt)
        if attempt.run.status not in ("running", "pending"):
            self.active = None

    @rule(
        doc=docs,
        stall=st.sampled_from(["before", "during"]),
        offset=st.integers(min_value=0, max_value=3),
        crash=crashes,
    )
    def a_stalled_incarnation_is_overtaken(
        self, doc: str, stall: str, offset: int, crash: tuple[str, int]
    ) -> None:
        """One incarnation stalls past its lease, a second takes the run over (maybe dying),
        then the first goes on: it must stop at its next write, having written nothing."""
        if self.active is None:
            self._emit(doc)
        run_id = self.active
        assert run_id is not None
        _, steps = self.world.snapshot(run_id)
        resume_at = len(steps)
        # Only the bodies of these steps call World.executed(), where "during" can stall.
        ahead = [p for p in COUNTED_POSITIONS if p >= resume_at]
        if stall == "during" and ahead:
            position = ahead[min(offset, len(ahead) - 1)]
        else:
            stall = "before"
            position = min(resume_at + offset, len(CRASHY_IDS) - 1)
        kind, crash_offset = crash

        def overtaker_crash(recorded: int) -> Crash | None:
            # Aimed from where the overtaker finds the run: the stalled one may have
            # recorded steps before it stalled.
            return aim(kind, crash_offset, recorded) if kind != "no crash" else None

        race = self.world.race(crashy, run_id, Crash(stall, position), overtaker_crash)
        planned = race.overtaker_crash
        event(f"stalled {stall}; overtaker crash {planned.kind if planned else None}")
        check_race(race, Crash(stall, position), len(CRASHY_IDS))
        assert race.overtaker.crashed == (planned is not None), f"{planned} did not fire"
        check_attempt(race.overtaker)
        # The stalled incarnation lost the run: like a crash, it may cost one execution.
        self.world.crashes[run_id] += 1
        if race.store_after[0].status not in ("running", "pending"):
            self.active = None

    # -- invariants ---------------------------------------------------------------

    @invariant()
    def each_position_recorded_once_and_recorded_steps_never_rerun(self) -> None:
        for run_id in self.runs:
            run, steps = self.world.snapshot(run_id)
            check_recorded_once(steps, CRASHY_IDS)
            assert all(s.status == "completed" for s in steps), steps
            counts = {s.id: self.world.executions[(run_id, s.id)] for s in steps if s.id in COUNTED}
            before = self.recorded_counts.get(run_id, {})
            for step_id, n in before.items():
                assert counts[step_id] == n, f"recorded {step_id} executed again"
            self.recorded_counts[run_id] = counts
            # Each crash leaves at most one step executed without its record.
            crashes = self.world.crashes[run_id]
            recorded = {s.id for s in steps}
            extra = sum(
                n - (1 if step_id in recorded else 0)
                for (rid, step_id), n in self.world.executions.items()
                if rid == run_id
            )
            assert 0 <= extra <= crashes, f"{extra} extra executions after {crashes} crash(es)"
            for (rid, step_id), n in self.world.executions.items():
                if rid == run_id:
                    assert n <= 1 + crashes, f"{step_id} executed {n} times, {crashes} crash(es)"
            if run.status != "running" and run.status != "pending":
                assert run.status == "completed", run
                assert len(steps) == len(CRASHY_IDS)
                check_output(run.output, self.references[self.runs[run_id]], steps)

    def teardown(self) -> None:
        try:
            if self.active is not None:
                # However it crashed, one clean incarnation finishes the run as if never.
                run = self.world.run_to_completion(crashy, self.active)
                assert run.status == "completed", run
                self.active = None
                self.each_position_recorded_once_and_recorded_steps_never_rerun()
        finally:
            self._active_world.__exit__(None, None, None)
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.released()


TestCrashResume = CrashResumeMachine.TestCase
TestCrashResume.__doc__ = (
    "Random crashes at step boundaries never change what a run records or returns."
)


class CrashResumeOnPostgres(CrashResumeMachine):
    """The same machine with every incarnation on a PostgresStore of one database."""

    def location(self) -> Path | str:
        self.url = fresh_database()
        return self.url

    def released(self) -> None:
        release_database(self.url)


TestCrashResumeOnPostgres = CrashResumeOnPostgres.TestCase
# Each example costs PostgreSQL round trips, not LMDB's microseconds: fewer of them in
# the quick profile (the thorough profile runs its full count).
TestCrashResumeOnPostgres.settings = settings(
    TestCrashResume.settings, max_examples=max(5, settings.default.max_examples // 4)
)


# -- the same, through the real Worker ---------------------------------------------------

#: Kinds a worker may die of before its last crash; the finish's write ends the run, so
#: a crash after it comes last, if at all.
WORKER_KINDS = (
    "before",
    "during",
    "record_step:before",
    "record_step:after",
    "release_run:before",
    "release_run:after",
    "lease_runs:after",
    "finish_run:before",
)
_entry = st.tuples(st.sampled_from(WORKER_KINDS), st.integers(min_value=-1, max_value=3))
_last = st.one_of(_entry, st.just(("finish_run:after", 0)))
worker_crashes = st.tuples(st.lists(_entry, max_size=2), _last).map(lambda t: [*t[0], t[1]])


@given(doc=docs, plan=worker_crashes)
def test_worker_resumes_a_crashed_run_from_its_last_recorded_step(
    doc: str, plan: list[tuple[str, int]]
) -> None:
    """Worker.run(until_idle=True) dies per a crash plan (one to three crashes, each aimed
    where it can fire, and each firing); new workers finish the run unchanged."""
    _crash_plan(doc, plan, postgres=False)


@settings(max_examples=max(5, settings.default.max_examples // 4))
@given(doc=docs, plan=worker_crashes)
def test_worker_resumes_a_crashed_run_on_postgres(doc: str, plan: list[tuple[str, int]]) -> None:
    """The same crash plans, with every worker on PostgresStore."""
    _crash_plan(doc, plan, postgres=True)


def _crash_plan(doc: str, plan: list[tuple[str, int]], *, postgres: bool) -> None:
    with World.temporary(postgres=postgres) as w:
        defn = AgentDefinition.must_from_fn(crashy)
        ref_id = w.emit("crash.doc", {"doc": doc}, [defn])
        reference = w.run_to_completion(crashy, ref_id)
        run_id = w.emit("crash.doc", {"doc": doc}, [defn])
        for kind, offset in plan:
            _, steps = w.snapshot(run_id)
            crash = aim(kind, offset, len(steps))
            event(f"worker crash {crash.kind}")
            assert _serve_once(w, run_id, crash), f"{crash} was aimed but did not fire"
        if w.snapshot(run_id)[0].status != "completed":
            _serve_once(w, run_id, None)
        event(f"worker crashes: {w.crashes[run_id]}")
        run, steps = w.snapshot(run_id)
        assert run.status == "completed", run
        check_recorded_once(steps, CRASHY_IDS)
        assert len(steps) == len(CRASHY_IDS)
        check_output(run.output, reference.output, steps)
        crashes = w.crashes[run_id]
        for step_id in COUNTED:
            n = w.executions[(run_id, step_id)]
            assert 1 <= n <= 1 + crashes, f"{step_id} executed {n} times"


def _serve_once(w: World, run_id: str, crash: Crash | None) -> bool:
    """One worker process: a real Worker over a CrashingStore, its lease under a stand-in
    pid. True if it crashed."""
    inner = w._open()
    fault = crash.store_fault(run_id) if crash is not None else None
    store = CrashingStore(inner, *([fault] if fault is not None else []))
    process = StandInWorker()
    before = w.counts(run_id)
    try:
        with w.incarnation(store, crash):
            worker = Worker([crashy], store=store, concurrency=1, lease_ttl=LEASE_TTL)
            worker.info = process.info
            serve_until_idle_or_crash(worker)
        if store.crashed:
            w.crashes[run_id] += 1
        else:
            assert inner.get_run(run_id).status == "completed"
        recorded = {s.id for s in inner.get_steps(run_id)}
        executed = w.counts(run_id) - before
        assert not [s for s in executed if executed[s] > 1], executed
        lost = [s for s in executed if s not in recorded]
        assert len(lost) <= (1 if store.crashed else 0), lost
        return store.crashed
    finally:
        process.kill()
        inner.close()

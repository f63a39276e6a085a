"""Projection runners crashed at random points end in the state of a fresh fold.

The state machine's rules add events (emitted, or appended to entity streams), let the
current runner fold a batch, crash it inside its fold, between its fold and its write,
or right after its write committed (then a new runner, under another worker identity,
takes the lease over from the dead one), and ask for rebuilds. After every rule the
stored state must be exactly the fold of the log up to the stored position: no event
applied twice, none skipped.
At the end a fresh runner catches up to the fold of the whole log, and a rebuild from
the log gives the very state incremental folding built.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from ironflow import Event, projection
from ironflow._agent._memory import ProjectionDefinition
from ironflow._worker._projections import ProjectionRunner
from ironflow.store import LmdbStore
from tests.memory._helpers import Crash, RecordingStore, dead_worker

INITIAL = {"seqs": [], "sum": 0}
#: Armed by a rule: the fold raises Crash on its ``crash_at``-th call from now.
CONTROL: dict[str, Any] = {"calls": 0, "crash_at": None}


def fold(state: dict[str, Any], event: Event) -> dict[str, Any]:
    CONTROL["calls"] += 1
    if CONTROL["crash_at"] is not None and CONTROL["calls"] >= CONTROL["crash_at"]:
        CONTROL["crash_at"] = None
        raise Crash("the runner's process died inside its fold")
    # Order-sensitive on purpose: a reordered, repeated or skipped event changes it.
    return {
        "seqs": [*state["seqs"], event.seq],
        "sum": (state["sum"] * 3 + event.data["v"]) % 1_000_000_007,
    }


whole = projection(name="whole", events=["a.*"], initial_state=INITIAL)(fold)
keyed = projection(
    name="keyed", events=["a.*"], initial_state=INITIAL, partition_by=lambda e: e.data["k"]
)(fold)


def expected(events: list[Event], upto: int, partitioned: bool) -> Any:
    """The fold of the log up to ``upto``, computed independently of the runner."""
    parts: dict[str, Any] = {}
    for e in events:
        if e.seq > upto or not e.name.startswith("a."):
            continue
        key = e.data["k"] if partitioned else ""
        state = parts.get(key, INITIAL)
        parts[key] = {
            "seqs": [*state["seqs"], e.seq],
            "sum": (state["sum"] * 3 + e.data["v"]) % 1_000_000_007,
        }
    return parts if partitioned else parts.get("", INITIAL)


class ProjectionCrashes(RuleBasedStateMachine):
    partitioned = False

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="ironflow-proj-"))
        self.inner = LmdbStore(self.dir, sync=False)
        self.store = RecordingStore(self.inner)
        self.fn = keyed if self.partitioned else whole
        self.defn = ProjectionDefinition.must_from_fn(self.fn)
        self.inner.register_projections([self.defn.spec()])
        self.runner = self._new_runner()
        self.crashes = 0
        CONTROL.update(calls=0, crash_at=None)

    def _new_runner(self) -> ProjectionRunner:
        # A dead identity: whoever comes next takes its lease over at once.
        return ProjectionRunner(self.store, self.defn, dead_worker("runner"), ttl=60.0)  # type: ignore[arg-type]

    def _step(self, batch: int) -> None:
        self.runner.batch_size = batch
        try:
            self.runner.step()
        except Crash:
            self.crashes += 1
            self.runner = self._new_runner()  # the dead runner's memory is gone with it

    @rule(
        name=st.sampled_from(["a.x", "a.y", "b.z"]), k=st.sampled_from("pqr"), v=st.integers(0, 9)
    )
    def emit(self, name: str, k: str, v: int) -> None:
        self.inner.emit(name, {"k": k, "v": v})

    @rule(name=st.sampled_from(["a.x", "b.z"]), k=st.sampled_from("pq"), v=st.integers(0, 9))
    def append(self, name: str, k: str, v: int) -> None:
        self.inner.append_to_stream(f"stream-{k}", name, {"k": k, "v": v})

    @rule(batch=st.integers(1, 4))
    def step(self, batch: int) -> None:
        self._step(batch)

    @rule(batch=st.integers(1, 4), at=st.integers(1, 4))
    def crash_inside_fold(self, batch: int, at: int) -> None:
        CONTROL["crash_at"] = CONTROL["calls"] + at
        self._step(batch)
        CONTROL["crash_at"] = None

    @rule(batch=st.integers(1, 4))
    def crash_before_write(self, batch: int) -> None:
        """The runner dies between its fold and its write: nothing of the batch is stored."""
        worker = self.runner.worker.id

        def die() -> None:
            raise Crash("the runner's process died between its fold and its write")

        self.store.before_write[worker] = die
        self._step(batch)
        self.store.before_write.pop(worker, None)  # nothing to fold: no write to die before

    @rule(batch=st.integers(1, 4))
    def crash_after_write(self, batch: int) -> None:
        self.store.crash_after_write = True
        self._step(batch)
        self.store.crash_after_write = False

    @rule()
    def request_rebuild(self) -> None:
        self.inner.request_projection_rebuild(self.defn.name)

    @rule()
    def restart_without_crash(self) -> None:
        self.runner.release()
        self.runner = self._new_runner()

    @invariant()
    def stored_state_is_the_fold_up_to_its_position(self) -> None:
        state = self.inner.get_projection(self.defn.name)
        events = self.inner.events(limit=10_000)
        assert state.position <= (events[-1].seq if events else 0)
        assert state.state == expected(events, state.position, self.partitioned)

    @precondition(lambda self: True)
    @invariant()
    def successful_writes_chain(self) -> None:
        position = 0
        for commit in self.store.commits:
            if commit.write.rebuild_ticket is None:
                assert commit.write.from_position == position, "a write overlapped another"
            position = commit.write.to_position

    def teardown(self) -> None:
        try:
            CONTROL["crash_at"] = None
            runner = self._new_runner()
            runner.catch_up()
            incremental = self.inner.get_projection(self.defn.name)
            events = self.inner.events(limit=10_000)
            assert incremental.position == (events[-1].seq if events else 0)
            assert incremental.state == expected(events, incremental.position, self.partitioned)
            self.inner.request_projection_rebuild(self.defn.name)
            runner.catch_up()
            rebuilt = self.inner.get_projection(self.defn.name)
            assert (rebuilt.state, rebuilt.position) == (incremental.state, incremental.position)
            self.inner.check_valid()
        finally:
            self.inner.close()
            shutil.rmtree(self.dir, ignore_errors=True)


class PartitionedProjectionCrashes(ProjectionCrashes):
    partitioned = True


TestProjectionCrashes = ProjectionCrashes.TestCase
TestPartitionedProjectionCrashes = PartitionedProjectionCrashes.TestCase

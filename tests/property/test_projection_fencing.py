"""Two runners serving one projection never both advance it.

Both runners hold dead worker identities, so each may take the lease from the other
at any moment: the worst case a real takeover can produce. A rule may make one runner
lose its lease *while its batch is in flight* (the other runner steps in just before
its write reaches the store). The fenced write must then fail, so the successful
writes form one unbroken chain of positions and the state is exactly the fold.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from ironflow import Event, Worker, projection
from ironflow._agent._memory import ProjectionDefinition
from ironflow._worker._projections import ProjectionRunner
from ironflow.store import LmdbStore
from tests.memory._helpers import RecordingStore, dead_worker


@projection(name="tally", events=["t.*"], initial_state={"seqs": []})
def tally(state: dict[str, Any], event: Event) -> dict[str, Any]:
    return {"seqs": [*state["seqs"], event.seq]}


def matching_seqs(store: LmdbStore, upto: int) -> list[int]:
    return [e.seq for e in store.events(limit=10_000) if e.seq <= upto and e.name.startswith("t.")]


def assert_chain(recording: RecordingStore) -> None:
    position = 0
    # Threads may append to the record out of commit order; the generation is the store's.
    for commit in sorted(recording.commits, key=lambda c: c.status.generation):
        assert commit.write.from_position == position, "two runners advanced from one position"
        position = commit.write.to_position


class TwoRunners(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="ironflow-fence-"))
        self.inner = LmdbStore(self.dir, sync=False)
        self.store = RecordingStore(self.inner)
        defn = ProjectionDefinition.must_from_fn(tally)
        self.inner.register_projections([defn.spec()])
        self.runners = {
            name: ProjectionRunner(self.store, defn, dead_worker(name), ttl=60.0)  # type: ignore[arg-type]
            for name in ("A", "B")
        }
        self.preempted = 0

    @rule(name=st.sampled_from(["t.a", "t.b", "other"]), n=st.integers(1, 3))
    def emit(self, name: str, n: int) -> None:
        for _ in range(n):
            self.inner.emit(name, {})

    @rule(
        who=st.sampled_from("AB"),
        batch=st.integers(1, 3),
        preempt=st.sampled_from(["no", "steal", "steal and advance"]),
    )
    def step(self, who: str, batch: int, preempt: str) -> None:
        runner = self.runners[who]
        other = self.runners["B" if who == "A" else "A"]
        runner.batch_size = batch
        if preempt != "no":

            def take_over() -> None:
                # The other runner takes the lease mid-batch, and maybe advances too.
                other.held = False
                if preempt == "steal":
                    assert other.ensure_lease()
                else:
                    other.step()

            self.store.before_write[runner.worker.id] = take_over
        commits = len(self.store.commits)
        runner.step()
        self.store.before_write.pop(runner.worker.id, None)
        if preempt != "no" and any(
            c.worker == runner.worker.id for c in self.store.commits[commits:]
        ):
            raise AssertionError("a runner wrote after losing its lease mid-batch")

    @invariant()
    def one_chain_and_the_exact_fold(self) -> None:
        assert_chain(self.store)
        state = self.inner.get_projection("tally")
        assert state.state == {"seqs": matching_seqs(self.inner, state.position)}

    def teardown(self) -> None:
        try:
            self.runners["A"].catch_up()
            self.runners["B"].catch_up()
            state = self.inner.get_projection("tally")
            last = self.inner.events(limit=10_000)
            assert state.position == (last[-1].seq if last else 0)
            assert state.state == {"seqs": matching_seqs(self.inner, state.position)}
        finally:
            self.inner.close()
            shutil.rmtree(self.dir, ignore_errors=True)


TestTwoRunners = TwoRunners.TestCase


def test_two_workers_racing_for_one_projection_never_both_advance_it(tmp_path: Path) -> None:
    """Two workers whose leases look dead to each other race on threads; writes stay one chain."""
    inner = LmdbStore(tmp_path / "d", sync=False)
    recording = RecordingStore(inner)
    workers = [
        Worker(projections=[tally], store=recording, poll_interval=0.001)  # type: ignore[arg-type]
        for _ in range(2)
    ]
    for worker in workers:
        worker.info = dead_worker("racer")
    threads = [threading.Thread(target=w.run, kwargs={"ready_message": False}) for w in workers]
    for t in threads:
        t.start()
    try:
        for i in range(150):
            inner.emit("t.n" if i % 3 else "other", {"i": i})
        assert inner.wait_for_projection("tally", 150, timeout=30) == 150
    finally:
        for w in workers:
            w.stop()
        for t in threads:
            t.join(timeout=30)
    # A worker still running would meet the store closed under it, after this test.
    assert not any(t.is_alive() for t in threads), "a worker did not stop"
    assert_chain(recording)
    assert inner.get_projection("tally").state == {"seqs": matching_seqs(inner, 150)}
    assert {c.worker for c in recording.commits} <= {w.info.id for w in workers}
    inner.close()

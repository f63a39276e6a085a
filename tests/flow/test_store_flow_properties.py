"""Random workloads against the store's flow control, with workers dying at random.

- concurrency: at every instant, at most ``limit`` runs per key hold a lease, however
  workers lease, finish, hand back and die; and each key's runs start in emit order;
- cron: several stores polling a schedule as the clock jumps fire each tick once, and
  one run per jump (the latest tick) unless catching up;
- debounce: each burst of events (gaps shorter than the period) starts one run,
  carrying the burst's last event.
"""

from __future__ import annotations

import shutil
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from ironflow._worker._identity import this_worker
from ironflow.store import AgentSpec, LmdbStore
from ironflow.store._flowspec import ConcurrencyLimit, CronTrigger, Debounce, FlowSpec
from ironflow.testing import StandInWorker
from tests.helpers import examples

LIMIT = 2
KEYS = ("a", "b", "c")


class ConcurrencyMachine(RuleBasedStateMachine):
    """Rules: emit, lease (by one of three workers), finish or hand back, kill a worker."""

    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="ironflow-conc-"))
        self.store = LmdbStore(self.tmp / "data", sync=False)
        self.store.register_agents(
            [
                AgentSpec(
                    id="c",
                    triggers=("job",),
                    flow=FlowSpec(concurrency=ConcurrencyLimit(LIMIT, "data.key")),
                )
            ]
        )
        self.workers = [StandInWorker() for _ in range(3)]
        self.held: dict[int, list[str]] = defaultdict(list)  # worker slot -> run ids
        self.emitted: dict[str, list[str]] = defaultdict(list)  # key -> run ids in order
        self.started: dict[str, list[str]] = defaultdict(list)  # key -> first leases in order
        self.key_of: dict[str, str] = {}

    @rule(key=st.sampled_from(KEYS))
    def emit(self, key: str) -> None:
        (run_id,) = self.store.emit("job", {"key": key}).run_ids
        self.emitted[key].append(run_id)
        self.key_of[run_id] = key

    @rule(w=st.integers(0, 2), limit=st.integers(1, 4))
    def lease(self, w: int, limit: int) -> None:
        for lr in self.store.lease_runs(self.workers[w].info, ["c"], limit=limit, ttl=600):
            run_id = lr.run.id
            for other in self.held.values():
                if run_id in other:
                    other.remove(run_id)  # taken over from a dead worker
            self.held[w].append(run_id)
            key = self.key_of[run_id]
            if run_id not in self.started[key]:
                self.started[key].append(run_id)

    @precondition(lambda self: any(self.held.values()))
    @rule(data=st.data(), finish=st.booleans())
    def settle(self, data: Any, finish: bool) -> None:
        w = data.draw(st.sampled_from([w for w, ids in self.held.items() if ids]))
        run_id = data.draw(st.sampled_from(self.held[w]))
        self.held[w].remove(run_id)
        if finish:
            attempt = self.store.get_run(run_id).attempt
            self.store.finish_run(self.workers[w].info, run_id, status="completed", attempt=attempt)
        else:
            attempt = self.store.get_run(run_id).attempt
            self.store.release_run(self.workers[w].info, run_id, attempt=attempt)

    @rule(w=st.integers(0, 2))
    def kill(self, w: int) -> None:
        # Its runs stay leased to a dead pid until another worker takes them over.
        self.workers[w].kill()
        self.workers[w] = StandInWorker()
        self.held[w] = []  # the new process in this slot holds nothing

    @invariant()
    def at_most_limit_per_key_hold_a_lease(self) -> None:
        busy: dict[str, int] = defaultdict(int)
        for run in self.store.list_runs(limit=10_000, status="running"):
            if self.store.get_lease(run.id) is not None:
                busy[self.key_of[run.id]] += 1
        assert all(n <= LIMIT for n in busy.values()), dict(busy)

    @invariant()
    def each_key_starts_in_emit_order(self) -> None:
        for key, started in self.started.items():
            assert started == self.emitted[key][: len(started)], key

    def teardown(self) -> None:
        self.store.check_valid()
        for w in self.workers:
            w.kill()
        self.store.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


TestConcurrency = ConcurrencyMachine.TestCase
TestConcurrency.settings = settings(
    max_examples=examples(25), stateful_step_count=30, deadline=None
)


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


MINUTE = 60.0
START = 1_800_000_000.0 - 1_800_000_000.0 % MINUTE


@given(
    jumps=st.lists(st.integers(0, 400), min_size=1, max_size=12),
    pollers=st.lists(st.integers(0, 2), min_size=1, max_size=4),
    catch_up=st.booleans(),
)
@settings(max_examples=examples(30), deadline=None)
def test_cron_fires_each_tick_once_across_stores(
    jumps: list[int], pollers: list[int], catch_up: bool
) -> None:
    """Three workers poll after each clock jump: no tick twice; one run per jump with
    missed ticks unless catch_up, which runs every tick."""
    clock = Clock(START)
    tmp = Path(tempfile.mkdtemp(prefix="ironflow-cron-"))
    store = LmdbStore(tmp / "data", sync=False, clock=clock)
    try:
        store.register_agents(
            [
                AgentSpec(
                    id="tick",
                    triggers=(),
                    flow=FlowSpec(crons=(CronTrigger("* * * * *", catch_up=catch_up),)),
                )
            ]
        )
        workers = [this_worker(f"w{i}") for i in range(3)]
        ticks: list[str] = []
        for jump in jumps:
            before = clock.now
            clock.now += jump
            crossed = int(clock.now // MINUTE) - int(before // MINUTE)
            new: list[str] = []
            for p in pollers:
                for lr in store.lease_runs(workers[p], ["tick"], limit=1000, ttl=60):
                    new.append(lr.run.event.data["tick"])
            expected = crossed if catch_up else min(crossed, 1)
            assert len(new) == expected, (jump, crossed, new)
            ticks += new
        assert len(set(ticks)) == len(ticks)
        assert ticks == sorted(ticks)
    finally:
        store.close()
        shutil.rmtree(tmp, ignore_errors=True)


@given(gaps=st.lists(st.floats(0.0, 12.0), min_size=1, max_size=25), poll=st.booleans())
@settings(max_examples=examples(40), deadline=None)
def test_debounce_starts_one_run_per_burst_with_its_last_event(
    gaps: list[float], poll: bool
) -> None:
    """Events with gaps below the 5 s period form a burst: one run each, the last event."""
    clock = Clock(START)
    tmp = Path(tempfile.mkdtemp(prefix="ironflow-debounce-"))
    store = LmdbStore(tmp / "data", sync=False, clock=clock)
    try:
        store.register_agents(
            [AgentSpec(id="d", triggers=("ping",), flow=FlowSpec(debounce=Debounce(5.0)))]
        )
        me = this_worker()
        bursts: list[list[int]] = []
        started: list[Any] = []
        for n, gap in enumerate(gaps):
            clock.now += gap
            if poll:  # a worker polls at random moments; without, only the end
                started += [
                    lr.run.event.data["n"] for lr in store.lease_runs(me, ["d"], limit=50, ttl=60)
                ]
            if not bursts or gap >= 5.0:
                bursts.append([])
            bursts[-1].append(n)
            store.emit("ping", {"n": n})
        clock.now += 5.0
        started += [lr.run.event.data["n"] for lr in store.lease_runs(me, ["d"], limit=50, ttl=60)]
        assert started == [burst[-1] for burst in bursts]
        store.check_valid()
    finally:
        store.close()
        shutil.rmtree(tmp, ignore_errors=True)

"""The observer interface itself: what it is told, and that a failing observer changes nothing."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ironflow import AgentContext, StepFailedError, Worker, agent, tool
from ironflow.replay._engine import Execution, Outcome, StepInfo
from ironflow.replay._observer import AttemptObserver, Observer, StepOutcome
from ironflow.store import LmdbStore, StepRecord, WorkerInfo
from ironflow.testing import FakeClock
from tests.helpers import serve_until_idle_or_crash


@tool
def ok(n: int) -> int:
    """Add one."""
    return n + 1


@tool
def bad() -> None:
    """Fail."""
    raise ValueError("no")


@agent(id="watched", triggers=["watched.go"])
def watched(ctx: AgentContext) -> int:
    a = ok(n=1)
    ctx.sleep("1h")
    with contextlib.suppress(StepFailedError):
        bad()
    return a


class Recorder(Observer):
    """Writes down every call, as (attempt, what, details)."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, str, Any]] = []

    def attempt(self, execution: Execution, taken_from: WorkerInfo | None) -> AttemptObserver:
        recorder, attempt = self, execution.attempt

        class Watch(AttemptObserver):
            def enter(self) -> Any:
                recorder.calls.append((attempt, "enter", None))
                return "scope"

            def exit(self, scope: Any) -> None:
                recorder.calls.append((attempt, "exit", scope))

            def step_started(self, step: StepInfo, input: Any) -> Any:
                recorder.calls.append((attempt, "start", step.step_id))
                return step.step_id

            def step_ended(
                self,
                token: Any,
                step: StepInfo,
                outcome: StepOutcome,
                record: StepRecord | None,
                error: BaseException | None,
            ) -> None:
                recorder.calls.append((attempt, "end", (token, outcome, record is not None)))

            def ended(self, outcome: Outcome) -> None:
                recorder.calls.append((attempt, "ended", outcome.status))

        return Watch()


class Broken(Observer):
    """Raises from every method it has."""

    def attempt(self, execution: Execution, taken_from: WorkerInfo | None) -> AttemptObserver:
        class Boom(AttemptObserver):
            def __getattribute__(self, name: str) -> Any:
                if name in ("enter", "exit", "step_started", "step_ended", "ended"):
                    raise RuntimeError(f"broken {name}")
                return super().__getattribute__(name)

        return Boom()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(tmp_path: Path, clock: FakeClock) -> Iterator[LmdbStore]:
    s = LmdbStore(tmp_path / "data", sync=False, clock=clock)
    yield s
    s.close()


def test_an_observer_sees_executed_steps_only_with_their_outcomes(
    store: LmdbStore, clock: FakeClock
) -> None:
    """Attempt 1 runs ok and suspends at the sleep; attempt 2 replays both (no calls) and
    runs bad, which fails; each attempt is entered, exited and ended once."""
    recorder = Recorder()
    worker = Worker([watched], store=store, poll_interval=0.01, observers=[recorder])
    [run_id] = store.emit("watched.go", {}).run_ids
    serve_until_idle_or_crash(worker)
    clock.advance(3601)
    worker = Worker([watched], store=store, poll_interval=0.01, observers=[recorder])
    serve_until_idle_or_crash(worker)
    assert store.get_run(run_id).output == 2
    assert recorder.calls == [
        (1, "enter", None),
        (1, "start", "tool.ok"),
        (1, "end", ("tool.ok", "completed", True)),
        (1, "start", "sleep"),
        (1, "end", ("sleep", "suspended", False)),
        (1, "exit", "scope"),
        (1, "ended", "suspended"),
        (2, "enter", None),
        (2, "start", "tool.bad"),
        (2, "end", ("tool.bad", "failed", True)),
        (2, "exit", "scope"),
        (2, "ended", "completed"),
    ]


def test_an_observer_that_raises_changes_nothing(
    store: LmdbStore, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Every hook of one observer raises: the run's steps and output are as unwatched, the
    other observer still sees everything, and each failure is logged once per worker."""
    recorder = Recorder()
    Worker([watched], store=store)  # registers the agent
    [run_id] = store.emit("watched.go", {}).run_ids
    with caplog.at_level(logging.ERROR, logger="ironflow.observe"):
        for _ in range(2):
            worker = Worker(
                [watched], store=store, poll_interval=0.01, observers=[Broken(), recorder]
            )
            serve_until_idle_or_crash(worker)
            clock.advance(3601)
    assert store.get_run(run_id).output == 2
    assert [s.id for s in store.get_steps(run_id)] == ["tool.ok", "sleep", "tool.bad"]
    assert [c[1] for c in recorder.calls].count("end") == 3
    failures = [r.getMessage() for r in caplog.records if r.name == "ironflow.observe"]
    # Once per method and worker (two workers ran it), however many steps each ran.
    assert sorted(failures) == sorted(
        f"observer Broken.attempt.<locals>.Boom failed in {m}; the run goes on (this is "
        "logged once)"
        for m in ("enter", "exit", "step_started", "step_ended", "ended")
        for _worker in range(2)
    )

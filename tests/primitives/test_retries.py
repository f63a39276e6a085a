"""@tool(retries=..., timeout=...) and @agent(timeout=...): tries recorded, limits enforced."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from typing import Any

import pytest

from ironflow import (
    AgentContext,
    DefinitionError,
    NonRetryableError,
    StepFailedError,
    Worker,
    agent,
    current_step,
    tool,
)
from ironflow.replay._engine import RetryPolicy
from ironflow.store import LmdbStore
from ironflow.testing import FakeClock
from tests.primitives.conftest import emit, serving, wait_status, wait_until

tries: Counter[str] = Counter()
seen_retry: list[int] = []
release = threading.Event()


class Flaky(Exception):
    pass


@tool(retries=3, backoff=0)
def flaky(key: str, fail_times: int) -> str:
    tries[key] += 1
    info = current_step()
    assert info is not None
    seen_retry.append(info.retry)
    if tries[key] <= fail_times:
        raise Flaky(f"try {tries[key]} of {key} failed")
    return f"{key} ok after {tries[key]}"


@tool(retries=5, backoff=0, non_retryable=(KeyError,))
def picky(kind: str) -> None:
    tries[kind] += 1
    if kind == "key":
        raise KeyError("not there")
    raise NonRetryableError("refused for good")


@tool(retries=2, backoff="10s", max_backoff="15s")
def slow_retry(key: str) -> str:
    tries[key] += 1
    if tries[key] < 3:
        raise Flaky("again")
    return "done"


@tool(timeout=0.2)
def sleepy_sync(seconds: float) -> str:
    release.wait(seconds)
    return "awake"


@tool(timeout="200ms", retries=1, backoff=0)
async def sleepy_async(seconds: float) -> str:
    tries["sleepy_async"] += 1
    await asyncio.sleep(seconds if tries["sleepy_async"] == 1 else 0)
    return "awake"


@agent(id="retrier", triggers=["retry"])
def retrier(ctx: AgentContext) -> Any:
    data = ctx.event.data
    try:
        return flaky(key=data["key"], fail_times=data["fail"])
    except StepFailedError as exc:
        return {"failed": exc.error_type, "message": exc.message}


@agent(id="picker", triggers=["pick"])
def picker(ctx: AgentContext) -> Any:
    try:
        picky(kind=ctx.event.data["kind"])
    except StepFailedError as exc:
        return exc.error_type
    return None


@agent(id="backoff", triggers=["backoff"])
def backoff_agent(ctx: AgentContext) -> str:
    return slow_retry(key=ctx.event.data["key"])


@agent(id="timeouts", triggers=["timeouts"])
def timeouts(ctx: AgentContext) -> Any:
    try:
        return sleepy_sync(seconds=60)  # released by the test once the step timed out
    except StepFailedError as exc:
        return exc.error_type


@agent(id="async-timeouts", triggers=["async.timeouts"])
async def async_timeouts(ctx: AgentContext) -> str:
    return str(await sleepy_async(seconds=5))


# The run deadlines below leave the worker 2 s to reach the first step: a shorter one
# fails these tests whenever a loaded machine stalls the worker that long.
@agent(id="bounded", triggers=["bounded"], timeout=2)
def bounded(ctx: AgentContext) -> str:
    ctx.sleep("2h")
    return "too late"


@tool
def blocking(seconds: float) -> str:
    release.wait(seconds)
    return "done"


@agent(id="bounded-step", triggers=["bounded.step"], timeout=2)
def bounded_step(ctx: AgentContext) -> str:
    return blocking(seconds=60)  # released by the test once the run timed out


def test_a_flaky_tool_is_tried_again_and_each_failed_try_is_kept(store: LmdbStore) -> None:
    """Two failures then success: one completed record holding both failed tries."""
    seen_retry.clear()
    run_id = emit(store, "retry", {"key": "a", "fail": 2}, retrier)
    with serving(store, [retrier]):
        run = wait_status(store, run_id, "completed")
    assert run.output == "a ok after 3"
    assert seen_retry == [0, 1, 2]
    [step] = store.get_steps(run_id)
    assert step.status == "completed" and step.tries is not None
    assert [t.error.message for t in step.tries] == ["try 1 of a failed", "try 2 of a failed"]
    assert all(t.error.type == "Flaky" for t in step.tries)
    store.check_valid()


def test_retries_run_out_and_the_step_fails_with_every_try_kept(store: LmdbStore) -> None:
    """retries=3 means four tries; the last failure is the step's error, three in tries."""
    run_id = emit(store, "retry", {"key": "b", "fail": 10}, retrier)
    with serving(store, [retrier]):
        run = wait_status(store, run_id, "completed")
    assert run.output == {"failed": "Flaky", "message": "try 4 of b failed"}
    [step] = store.get_steps(run_id)
    assert step.status == "failed" and step.tries is not None and len(step.tries) == 3


@pytest.mark.parametrize("kind", ["key", "refused"])
def test_non_retryable_errors_fail_at_once(store: LmdbStore, kind: str) -> None:
    """NonRetryableError, or a class in non_retryable=, fails the step on its first try."""
    run_id = emit(store, "pick", {"kind": kind}, picker)
    Worker([picker], store=store).run(until_idle=True, ready_message=False)
    assert tries[kind] == 1
    expected = "KeyError" if kind == "key" else "NonRetryableError"
    assert store.get_run(run_id).output == expected
    assert store.get_steps(run_id)[0].tries is None


def test_backoff_sleeps_in_the_store_between_tries(
    timed_store: LmdbStore, clock: FakeClock
) -> None:
    """Between tries the run is `sleeping` until its backoff (5-10 s, then 7.5-15 s) is over."""
    run_id = emit(timed_store, "backoff", {"key": "c"}, backoff_agent)
    with serving(timed_store, [backoff_agent]):
        run = wait_status(timed_store, run_id, "sleeping")
        s = run.suspension
        assert s is not None and s.kind == "retry" and len(s.tries) == 1
        assert s.wake_at is not None and 5 <= s.wake_at - s.since <= 10
        assert timed_store.get_lease(run_id) is None
        clock.advance(10)
        run = wait_until_tries(timed_store, run_id, 2)
        s = run.suspension
        assert s is not None and s.wake_at is not None and 7.5 <= s.wake_at - s.since <= 15
        clock.advance(15)
        run = wait_status(timed_store, run_id, "completed")
    assert run.output == "done" and tries["c"] == 3


def wait_until_tries(store: LmdbStore, run_id: str, n: int) -> Any:
    return wait_until(
        lambda: (
            (r := store.get_run(run_id)).status == "sleeping"
            and r.suspension is not None
            and len(r.suspension.tries) == n
            and r
        ),
        what=f"{n} failed tries",
    )


def test_the_retry_delay_grows_with_jitter_and_a_cap() -> None:
    """Delays double per try from backoff, jittered to 50-100%, and never pass max_backoff."""
    policy = RetryPolicy(retries=10, backoff=1.0, max_backoff=8.0)
    for failed, top in ((1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (9, 8.0)):
        delays = [policy.delay(failed) for _ in range(50)]
        assert all(top / 2 <= d <= top for d in delays), (failed, delays)


def test_a_sync_tool_past_its_timeout_fails_with_a_step_timeout(store: LmdbStore) -> None:
    """The step fails (StepTimeoutError recorded) while the tool's thread is left behind."""
    release.clear()
    run_id = emit(store, "timeouts", {}, timeouts)
    started = time.monotonic()
    try:
        Worker([timeouts], store=store).run(until_idle=True, ready_message=False)
        # Far less than the tool's 60 s: the run went on at the 0.2 s timeout. The margin
        # is wide so that a loaded machine cannot fail this.
        assert time.monotonic() - started < 30
    finally:
        release.set()  # the left-behind tool thread returns now
    assert store.get_run(run_id).output == "StepTimeoutError"
    [step] = store.get_steps(run_id)
    assert step.error is not None and "still running after 0.2s" in step.error.message


def test_an_async_tool_past_its_timeout_is_cancelled_and_retried(store: LmdbStore) -> None:
    """A timed-out try counts as failed: the retry succeeds and the record keeps the timeout."""
    run_id = emit(store, "async.timeouts", {}, async_timeouts)
    with serving(store, [async_timeouts]):
        run = wait_status(store, run_id, "completed", "failed")
    assert run.output == "awake"
    [step] = store.get_steps(run_id)
    assert step.tries is not None and step.tries[0].error.type == "StepTimeoutError"


def test_a_run_past_its_timeout_fails_even_while_sleeping(
    timed_store: LmdbStore, clock: FakeClock
) -> None:
    """@agent(timeout=...) wakes a run sleeping past its deadline and fails it there."""
    run_id = emit(timed_store, "bounded", {}, bounded)
    with serving(timed_store, [bounded]):
        run = wait_status(timed_store, run_id, "sleeping")
        s = run.suspension
        assert s is not None and s.deadline == pytest.approx(run.created_at + 2)
        # The deadline is wall-clock time from the run's start; the timer the store's clock.
        wait_until(lambda: time.time() > run.created_at + 2, what="the run's deadline")
        clock.advance(3)  # past the deadline on the store's clock too
        run = wait_status(timed_store, run_id, "failed")
    assert run.error is not None and run.error.type == "RunTimeoutError"
    assert "timeout of 2s" in run.error.message
    assert timed_store.get_steps(run_id) == []
    timed_store.check_valid()


def test_a_step_in_flight_at_the_run_deadline_is_cut_short(store: LmdbStore) -> None:
    """The step running when the run's time runs out is recorded failed; the run fails."""
    release.clear()
    run_id = emit(store, "bounded.step", {}, bounded_step)
    try:
        Worker([bounded_step], store=store).run(until_idle=True, ready_message=False)
    finally:
        release.set()  # the left-behind tool thread returns now
    run = store.get_run(run_id)
    assert run.status == "failed" and run.error is not None
    assert run.error.type == "RunTimeoutError"
    [step] = store.get_steps(run_id)
    assert step.status == "failed" and step.error is not None
    assert step.error.type == "StepTimeoutError"


def test_bad_retry_options_fail_at_decoration() -> None:
    """A negative retry count, a bad backoff or a non-exception class is a DefinitionError."""

    def work() -> None:
        return None

    def handler(ctx: AgentContext) -> None:
        return None

    with pytest.raises(DefinitionError, match="retries must be"):
        tool(retries=-1)(work)
    with pytest.raises(DefinitionError, match="backoff: 'later' is not a duration"):
        tool(retries=1, backoff="later")(work)
    with pytest.raises(DefinitionError, match="non_retryable must list exception classes"):
        tool(retries=1, non_retryable=(int,))(work)  # type: ignore[arg-type]
    with pytest.raises(DefinitionError, match="timeout: 'soonish' is not a duration"):
        agent(id="x", timeout="soonish")(handler)

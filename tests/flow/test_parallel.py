"""ctx.parallel and ctx.map: one memoized step per branch, positions taken in index order."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from ironflow import AgentContext, StepFailedError, agent, tool
from ironflow.errors import NonDeterminismError
from ironflow.store import LmdbStore
from tests.flow._helpers import replay, run_agent, step_ids

calls: list[str] = []
_lock = threading.Lock()
_now_running = 0
_most_running = 0


@pytest.fixture(autouse=True)
def _reset() -> None:
    global _now_running, _most_running
    calls.clear()
    _now_running = _most_running = 0


def _branch(label: str, fail: bool = False) -> Any:
    def run() -> str:
        global _now_running, _most_running
        with _lock:
            calls.append(label)
            _now_running += 1
            _most_running = max(_most_running, _now_running)
        try:
            time.sleep(0.01)  # let siblings overlap, so the limit is what bounds them
            if fail:
                raise ValueError(f"{label} broke")
            return label.upper()
        finally:
            with _lock:
                _now_running -= 1

    return run


@tool
def shout(word: str) -> str:
    calls.append(f"shout:{word}")
    return word.upper()


@agent(id="fan-out", triggers=["fan.out"])
def fan_out(ctx: AgentContext) -> Any:
    n = ctx.event.data["n"]
    limit = ctx.event.data.get("limit")
    results = ctx.parallel("b", [_branch(f"b{i}") for i in range(n)], concurrency=limit)
    tail = shout(word="done")
    return {"results": results, "tail": tail}


def test_parallel_returns_results_in_order_each_branch_a_step(store: LmdbStore) -> None:
    """Branches are the steps parallel.<name>[i] at positions 0..n-1; the next step follows."""
    run = run_agent(store, fan_out, {"n": 4})
    assert run.status == "completed", run.error
    assert run.output == {"results": ["B0", "B1", "B2", "B3"], "tail": "DONE"}
    steps = store.get_steps(run.id)
    assert [(s.position, s.id) for s in steps] == [
        (0, "parallel.b[0]"),
        (1, "parallel.b[1]"),
        (2, "parallel.b[2]"),
        (3, "parallel.b[3]"),
        (4, "tool.shout"),
    ]


def test_concurrency_bounds_the_branches_running_at_once(store: LmdbStore) -> None:
    """With concurrency=2, never more than two branches run at the same time."""
    run = run_agent(store, fan_out, {"n": 6, "limit": 2})
    assert run.status == "completed", run.error
    assert sorted(calls[:-1]) == [f"b{i}" for i in range(6)]
    assert 1 <= _most_running <= 2


def test_a_replay_runs_no_branch_again(store: LmdbStore) -> None:
    """Replaying a finished run returns each branch's record without calling it."""
    run = run_agent(store, fan_out, {"n": 3})
    calls.clear()
    outcome = replay(store, run.id, fan_out)
    assert outcome.status == "completed"
    assert outcome.output == run.output
    assert calls == []


@agent(id="fail-fast", triggers=["fail.fast"])
def fail_fast(ctx: AgentContext) -> Any:
    branches = [_branch("a"), _branch("b", fail=True), _branch("c"), _branch("d")]
    try:
        ctx.parallel("p", branches, concurrency=1)
    except StepFailedError as exc:
        return {"failed": exc.step_id}
    return "no error"


def test_fail_fast_stops_starting_branches_and_raises_the_failure(store: LmdbStore) -> None:
    """A failed branch raises StepFailedError naming it; no later branch starts."""
    run = run_agent(store, fail_fast, {})
    assert run.output == {"failed": "parallel.p[1]"}
    assert calls == ["a", "b"]
    assert [(s.id, s.status) for s in store.get_steps(run.id)] == [
        ("parallel.p[0]", "completed"),
        ("parallel.p[1]", "failed"),
    ]
    calls.clear()
    outcome = replay(store, run.id, fail_fast)
    assert outcome.output == {"failed": "parallel.p[1]"}, "the record decides, the same way"
    assert calls == []


@agent(id="collect", triggers=["collect"])
def collect(ctx: AgentContext) -> Any:
    branches = [_branch("a"), _branch("b", fail=True), _branch("c")]
    results = ctx.parallel("p", branches, on_error="collect")
    return [r if isinstance(r, str) else f"error:{r.step_id}" for r in results]


def test_collect_runs_every_branch_and_puts_errors_in_place(store: LmdbStore) -> None:
    """on_error='collect' returns each failure's StepFailedError at its index."""
    run = run_agent(store, collect, {})
    assert run.status == "completed", run.error
    assert run.output == ["A", "error:parallel.p[1]", "C"]
    assert sorted(calls) == ["a", "b", "c"]


@agent(id="mapper", triggers=["map.it"])
def mapper(ctx: AgentContext) -> Any:
    return ctx.map("shout", ctx.event.data["words"], shout, concurrency=2)


def test_map_records_each_item_as_its_steps_input(store: LmdbStore) -> None:
    """ctx.map calls fn(item) as map.<name>[i]; a tool inside a branch is part of its step."""
    run = run_agent(store, mapper, {"words": ["x", "y", "z"]})
    assert run.status == "completed", run.error
    assert run.output == ["X", "Y", "Z"]
    steps = store.get_steps(run.id)
    assert [(s.id, s.input) for s in steps] == [
        ("map.shout[0]", "x"),
        ("map.shout[1]", "y"),
        ("map.shout[2]", "z"),
    ]


@agent(id="mapper2", triggers=["map.other"])
def mapper_over_other_items(ctx: AgentContext) -> Any:
    return ctx.map("shout", ["x", "CHANGED", "z"], shout)


def test_map_over_other_items_on_replay_is_non_determinism(store: LmdbStore) -> None:
    """A replay whose items differ from the recorded inputs fails, never mixing results."""
    run = run_agent(store, mapper, {"words": ["x", "y", "z"]})
    outcome = replay(store, run.id, mapper_over_other_items)
    assert outcome.status == "failed"
    assert outcome.error is not None and outcome.error.type == NonDeterminismError.__name__


@agent(id="async-fan", triggers=["async.fan"])
async def async_fan(ctx: AgentContext) -> Any:
    async def slow(label: str) -> str:
        calls.append(label)
        await asyncio.sleep(0.001)
        return label * 2

    results = await ctx.parallel(
        "mixed", [lambda: slow("a"), _branch("s"), lambda: slow("c")], concurrency=2
    )
    mapped = await ctx.map("twice", [1, 2, 3], lambda n: n * 2)
    return {"parallel": results, "map": mapped, "after": await shout(word="ok")}


def test_async_agents_await_parallel_and_map(store: LmdbStore) -> None:
    """In an async agent the same calls are awaitable; sync and async branches mix."""
    run = run_agent(store, async_fan, {})
    assert run.status == "completed", run.error
    assert run.output == {"parallel": ["aa", "S", "cc"], "map": [2, 4, 6], "after": "OK"}
    assert step_ids(store, run.id) == [
        "parallel.mixed[0]",
        "parallel.mixed[1]",
        "parallel.mixed[2]",
        "map.twice[0]",
        "map.twice[1]",
        "map.twice[2]",
        "tool.shout",
    ]


@agent(id="bad-parallel", triggers=["bad.parallel"])
def bad_parallel(ctx: AgentContext) -> Any:
    ctx.parallel("p", [shout(word="called, not passed")])  # type: ignore[list-item]


def test_a_result_instead_of_a_callable_is_a_clear_error(store: LmdbStore) -> None:
    """Passing a branch's result rather than the function fails the run saying so."""
    run = run_agent(store, bad_parallel, {})
    assert run.status == "failed"
    assert run.error is not None and "not a callable" in run.error.message


@agent(id="nested", triggers=["nested"])
def nested(ctx: AgentContext) -> Any:
    return ctx.parallel("outer", [lambda: ctx.parallel("inner", [_branch("x")])])


def test_a_parallel_inside_a_branch_is_refused(store: LmdbStore) -> None:
    """Steps do not nest: a branch calling ctx.parallel fails that branch, saying so."""
    run = run_agent(store, nested, {})
    assert run.status == "failed"
    assert run.error is not None and "steps do not nest" in run.error.message
    assert calls == []

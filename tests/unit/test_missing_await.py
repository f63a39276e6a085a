"""A step called without ``await`` in an async agent fails the run and says so.

It used to complete the run with the step never run: only Python's "coroutine
'_Executing.run_async' was never awaited" warning, naming the engine, hinted at it.
"""

from __future__ import annotations

import asyncio
import gc
import warnings
from typing import Any

from ironflow import AgentContext, MissingAwaitError, agent, tool
from ironflow.store import LmdbStore
from ironflow.testing import run_once

sent: list[str] = []


@tool
async def notify(user: str) -> dict[str, Any]:
    sent.append(user)
    return {"ok": True}


@agent(id="forgets-await", triggers=["forgets-await"])
async def forgets_await(ctx: AgentContext) -> dict[str, Any]:
    notify(user="ada")  # type: ignore[unused-coroutine]  # the mistake under test
    return {"done": True}


@agent(id="uses-unawaited", triggers=["uses-unawaited"])
async def uses_unawaited(ctx: AgentContext) -> Any:
    reply = notify(user="bo")
    return reply["ok"]  # type: ignore[index]  # the mistake under test


@agent(id="sleeps-unawaited", triggers=["sleeps-unawaited"])
async def sleeps_unawaited(ctx: AgentContext) -> str:
    ctx.sleep("1h")  # the mistake under test
    return "woke"


@agent(id="gathers-and-awaits", triggers=["gathers-and-awaits"])
async def gathers_and_awaits(ctx: AgentContext) -> list[Any]:
    first = notify(user="cy")
    task = asyncio.ensure_future(notify(user="di"))
    return [await first, await task, *(await asyncio.gather(notify(user="ed")))]


def _run_quietly(store: LmdbStore, fn: Any) -> tuple[Any, list[str]]:
    """The run, and the RuntimeWarnings Python raised about coroutines never awaited."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = run_once(store, fn, {})
        gc.collect()
    return run, [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]


def test_a_tool_called_without_await_fails_the_run_naming_the_step(store: LmdbStore) -> None:
    sent.clear()
    run, warned = _run_quietly(store, forgets_await)
    assert run.status == "failed"
    assert run.error is not None and run.error.type == MissingAwaitError.__name__
    assert "'tool.notify' was called without `await`" in run.error.message
    assert "Put `await` before the call" in run.error.message
    assert sent == []  # it never ran, and the run does not pass for done
    assert not [w for w in warned if "never awaited" in w], warned


def test_the_handlers_own_error_comes_after_the_missing_await(store: LmdbStore) -> None:
    """``reply["ok"]`` on the coroutine raises TypeError: the cause is named first, and
    the traceback still points at the handler's line."""
    run, warned = _run_quietly(store, uses_unawaited)
    assert run.status == "failed" and run.error is not None
    assert run.error.type == MissingAwaitError.__name__
    assert "'tool.notify' was called without `await`" in run.error.message
    assert "then raised TypeError: 'coroutine' object is not subscriptable" in run.error.message
    assert run.error.traceback is not None
    assert 'return reply["ok"]' in run.error.traceback
    assert not [w for w in warned if "never awaited" in w], warned


def test_a_sleep_without_await_fails_too(store: LmdbStore) -> None:
    run, _ = _run_quietly(store, sleeps_unawaited)
    assert run.status == "failed" and run.error is not None
    assert run.error.type == MissingAwaitError.__name__ and "'sleep'" in run.error.message


def test_calls_awaited_later_gathered_or_made_tasks_are_not_forgotten(
    store: LmdbStore,
) -> None:
    sent.clear()
    run, _ = _run_quietly(store, gathers_and_awaits)
    assert run.status == "completed", run.error
    assert sorted(sent) == ["cy", "di", "ed"]

"""Sticky stops and refused nesting: what user code cannot turn into a completed run."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest

from ironflow import AgentContext, NonDeterminismError, Worker, agent, tool
from ironflow.store import LmdbStore, Store
from ironflow.testing import CrashingStore, Fault, StandInWorker
from tests.helpers import serve_until_idle_or_crash

calls: list[str] = []


@pytest.fixture(autouse=True)
def _reset_calls() -> None:
    calls.clear()


@tool
def step_a() -> str:
    calls.append("a")
    return "a"


@tool
def step_b() -> str:
    calls.append("b")
    return "b"


@tool
def step_c() -> str:
    calls.append("c")
    return "c"


def _die_after_first_step(store: LmdbStore, v1: Any, name: str) -> str:
    """Run ``v1`` until its worker dies right after recording position 0; the run's id."""
    crashing = CrashingStore(store, Fault("record_step", "after", position=0))
    with StandInWorker() as process:
        worker = Worker([v1], store=crashing)  # registers the agent's triggers
        worker.info = process.info
        run_id = store.emit(name, {}).run_ids[0]
        serve_until_idle_or_crash(worker)
    assert [s.id for s in store.get_steps(run_id)] == ["tool.step_a"]
    return run_id


@agent(id="diverging", triggers=["diverge"])
def diverging_v1(ctx: AgentContext) -> str:
    step_a()
    step_c()
    return "v1"


def _finish_with(store: Store, v2: Any, run_id: str) -> Any:
    Worker([v2], store=store).run(until_idle=True, ready_message=False)
    return store.get_run(run_id)


def test_a_caught_divergence_still_fails_the_run_and_mixes_no_histories(
    store: LmdbStore,
) -> None:
    """Code that catches NonDeterminismError and goes on: the run fails, nothing more runs."""
    run_id = _die_after_first_step(store, diverging_v1, "diverge")
    calls.clear()

    @agent(id="diverging", triggers=["diverge"])
    def v2(ctx: AgentContext) -> str:
        with contextlib.suppress(Exception):  # try: ... except Exception: pass
            step_b()  # the record holds tool.step_a here
        step_c()  # raises the divergence again: never run, never recorded
        return "v2"

    run = _finish_with(store, v2, run_id)
    assert run.status == "failed"
    assert run.error is not None and run.error.type == "NonDeterminismError"
    assert "'tool.step_a'" in run.error.message and "'tool.step_b'" in run.error.message
    assert [s.id for s in store.get_steps(run_id)] == ["tool.step_a"]
    assert calls == []


def test_a_handler_that_swallows_every_divergence_and_returns_still_fails(
    store: LmdbStore,
) -> None:
    """Each later step re-raises the first divergence; returning does not complete the run."""
    run_id = _die_after_first_step(store, diverging_v1, "diverge")
    calls.clear()
    seen: list[str] = []

    @agent(id="diverging", triggers=["diverge"])
    def v2(ctx: AgentContext) -> str:
        for step in (step_b, step_c, step_a):
            try:
                step()
            except NonDeterminismError as exc:
                seen.append(f"{exc.position}:{exc.attempted}")
        return "v2"

    run = _finish_with(store, v2, run_id)
    assert run.status == "failed" and run.output is None
    assert run.error is not None and run.error.type == "NonDeterminismError"
    # The first divergence, raised again at each later call (position 0 every time).
    assert seen == ["0:'tool.step_b'"] * 3
    assert calls == []
    assert [s.id for s in store.get_steps(run_id)] == ["tool.step_a"]


@agent(id="diverging-async", triggers=["diverge-async"])
async def diverging_async_v1(ctx: AgentContext) -> str:
    await step_a()
    await step_c()
    return "v1"


def test_an_async_divergence_swallowed_by_gather_still_fails_the_run(store: LmdbStore) -> None:
    """gather(return_exceptions=True) over a diverging step: the run fails, step_c never runs."""
    import asyncio

    run_id = _die_after_first_step(store, diverging_async_v1, "diverge-async")
    calls.clear()

    @agent(id="diverging-async", triggers=["diverge-async"])
    async def v2(ctx: AgentContext) -> str:
        async def first() -> Any:
            return await step_b()

        await asyncio.gather(first(), return_exceptions=True)
        with contextlib.suppress(Exception):
            await step_c()
        return "v2"

    run = _finish_with(store, v2, run_id)
    assert run.status == "failed"
    assert run.error is not None and run.error.type == "NonDeterminismError"
    assert calls == []
    assert [s.id for s in store.get_steps(run_id)] == ["tool.step_a"]

"""Sticky stops and refused nesting: what user code cannot turn into a completed run."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import pytest

from ironflow import AgentContext, NonDeterminismError, Worker, agent, tool
from ironflow.errors import StoreError
from ironflow.store import LmdbStore, Store
from ironflow.testing import CrashingStore, Fault, StandInWorker, replay, run_once
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


class _UnrecordableSteps:
    """The store as a full disk leaves it: every ``record_step`` fails, the rest works."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.refused = 0

    def record_step(self, worker: Any, step: Any) -> Any:
        self.refused += 1
        raise StoreError("cannot write to the data directory: No space left on device")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@agent(id="gathering", triggers=["gather"])
async def gathering(ctx: AgentContext) -> Any:
    import asyncio

    return await asyncio.gather(step_a(), return_exceptions=True)


def test_an_unrecorded_step_swallowed_by_gather_never_completes_the_run(
    store: LmdbStore,
) -> None:
    """gather(return_exceptions=True) returns the engine's stop as a value: the run is
    handed back, neither completed nor failed, and nothing is recorded."""
    failing = _UnrecordableSteps(store)
    worker = Worker([gathering], store=failing)  # type: ignore[arg-type]
    store.emit("gather", {})
    worker.run(until_idle=True, ready_message=False)
    (run,) = store.list_runs()
    assert failing.refused == 1 and calls == ["a"]
    assert run.status == "running" and run.output is None  # leased until its lease lapses
    assert store.get_steps(run.id) == []


@agent(id="swallowing", triggers=["swallow"])
def swallowing(ctx: AgentContext) -> str:
    for step in (step_a, step_b):
        try:
            step()
        except BaseException:  # the user code this test is about
            calls.append("swallowed")
    return "done"


def test_a_stop_swallowed_by_except_baseexception_is_raised_again_at_the_next_step(
    store: LmdbStore,
) -> None:
    """The first stop is raised again at the next step call (step_b never runs) and
    decides the outcome when the handler returns."""
    failing = _UnrecordableSteps(store)
    worker = Worker([swallowing], store=failing)  # type: ignore[arg-type]
    store.emit("swallow", {})
    worker.run(until_idle=True, ready_message=False)
    (run,) = store.list_runs()
    assert calls == ["a", "swallowed", "swallowed"]
    assert run.status == "running" and run.output is None
    assert store.get_steps(run.id) == []


#: What the tool ``cancelled_meanwhile`` does while it runs (a test sets it).
meanwhile: list[Callable[[], Any]] = []


@tool
def cancelled_meanwhile() -> str:
    for action in meanwhile:
        action()
    calls.append("meanwhile")
    return "ok"


@agent(id="cancel-swallowing", triggers=["cancel-swallow"])
async def cancel_swallowing(ctx: AgentContext) -> str:
    import asyncio

    async def later(step: Callable[[], Any]) -> Any:
        return await step()  # the step is called inside the gathered task

    await cancelled_meanwhile()
    await asyncio.gather(later(step_b), return_exceptions=True)
    await asyncio.gather(later(step_c), return_exceptions=True)
    return "done"


@pytest.mark.parametrize(("stop", "status"), [("cancel", "cancelled"), ("drain", "pending")])
def test_a_cancel_or_drain_swallowed_by_gather_decides_the_outcome(
    store: LmdbStore, stop: str, status: str
) -> None:
    """A cancellation or a drain is a stop like the others: kept, raised again at the
    next step, and the outcome when the handler returns (cancelled; handed back)."""
    worker = Worker([cancel_swallowing], store=store)
    run_id = store.emit("cancel-swallow", {}).run_ids[0]
    action = (lambda: store.request_cancel(run_id)) if stop == "cancel" else worker.stop
    meanwhile[:] = [action]
    try:
        worker.run(until_idle=True, ready_message=False)
    finally:
        meanwhile.clear()
    run = store.get_run(run_id)
    assert run.status == status, (run.status, run.output)
    assert run.output is None
    assert calls == ["meanwhile"]
    assert [s.id for s in store.get_steps(run_id)] == ["tool.cancelled_meanwhile"]


# -- nesting -------------------------------------------------------------------------


@agent(id="nesting", triggers=["nest"])
def nesting(ctx: AgentContext) -> str:
    return ctx.step("outer", lambda: str(ctx.now()))  # type: ignore[no-any-return]


def test_a_step_called_inside_a_step_is_refused_saying_so(store: LmdbStore) -> None:
    """ctx.now() inside ctx.step: the outer step fails with the reason; no inner record,
    so the run replays the same (before, it recorded `now` at 1, and no replay fit)."""
    run = run_once(store, nesting)
    assert run.status == "failed"
    assert run.error is not None and run.error.type == "DefinitionError"
    assert "'now' was called inside the step 'outer'" in run.error.message
    assert "steps do not nest" in run.error.message
    assert [(s.position, s.id, s.status) for s in store.get_steps(run.id)] == [
        (0, "outer", "failed")
    ]
    again = replay(store, run.id, nesting)
    assert (again.status, again.error and again.error.type) == ("failed", "DefinitionError")


@agent(id="nesting-async", triggers=["nest-async"])
async def nesting_async(ctx: AgentContext) -> str:
    async def outer() -> str:
        return str(await ctx.uuid())

    return await ctx.step("outer", outer)  # type: ignore[no-any-return]


def test_an_async_step_called_inside_a_step_is_refused(store: LmdbStore) -> None:
    """The same in an async run: the inner call never takes a position."""
    run = run_once(store, nesting_async)
    assert run.status == "failed"
    assert run.error is not None and "'uuid' was called inside the step 'outer'" in (
        run.error.message
    )
    assert [s.id for s in store.get_steps(run.id)] == ["outer"]


@agent(id="nesting-branches", triggers=["nest-branches"])
def nesting_branches(ctx: AgentContext) -> list[str]:
    results = ctx.parallel(
        "p",
        [lambda: str(ctx.now()), lambda: str(ctx.uuid()), lambda: "plain"],
        on_error="collect",
    )
    return [r if isinstance(r, str) else f"{r.error_type}: {r.message}" for r in results]


def test_a_step_called_inside_a_parallel_branch_is_refused(store: LmdbStore) -> None:
    """Inside ctx.parallel branches the inner calls would race for positions: refused."""
    run = run_once(store, nesting_branches)
    assert run.status == "completed", run.error
    first, second, third = run.output
    assert first.startswith(
        "DefinitionError: the step 'now' was called inside the step 'parallel.p[0]'"
    )
    assert second.startswith(
        "DefinitionError: the step 'uuid' was called inside the step 'parallel.p[1]'"
    )
    assert third == "plain"
    assert [s.id for s in store.get_steps(run.id)] == [
        "parallel.p[0]",
        "parallel.p[1]",
        "parallel.p[2]",
    ]


def test_a_tool_called_inside_a_step_is_still_an_ordinary_call(store: LmdbStore) -> None:
    """Tools are not refused inside a step: they run as part of it, unrecorded."""

    @agent(id="tool-in-step", triggers=["tool-in-step"])
    def tool_in_step(ctx: AgentContext) -> str:
        return ctx.step("outer", lambda: step_a() + step_b())  # type: ignore[no-any-return]

    run = run_once(store, tool_in_step)
    assert (run.status, run.output) == ("completed", "ab")
    assert [s.id for s in store.get_steps(run.id)] == ["outer"]


@agent(id="stops-at-second", triggers=["stops.second"])
def stops_at_second(ctx: AgentContext) -> str:
    step_a()
    step_b()
    return "done"


@agent(id="stops-at-second-async", triggers=["stops.second.async"])
async def stops_at_second_async(ctx: AgentContext) -> str:
    step_a()
    step_b()
    return "done"


@pytest.mark.parametrize("fn", [stops_at_second, stops_at_second_async])
def test_a_stopped_execution_is_freed_at_once_and_keeps_its_stop(store: LmdbStore, fn: Any) -> None:
    """The kept stop's traceback held the execution's frames, and the execution the stop:
    a cycle that kept the run and all its recorded steps alive until a full garbage
    collection (issue 13 target 6). Refcounting alone must free it now; the stop is
    still kept (stickiness itself is tested above)."""
    import asyncio
    import functools
    import gc
    import threading
    import weakref

    from ironflow._agent._context import AgentContext as Context
    from ironflow._agent._dsl import AgentDefinition
    from ironflow._worker._identity import this_worker
    from ironflow.replay._engine import Execution

    defn = AgentDefinition.must_from_fn(fn)
    store.register_agents([defn.spec()])
    store.emit(defn.triggers[0], {})
    me = this_worker()
    stopping = threading.Event()
    stopping.set()  # a drain: the first unrecorded step stops the handler
    [leased] = store.lease_runs(me, [defn.id], limit=1, ttl=60)
    gc.collect()
    gc.disable()
    try:
        execution = Execution(store, me, leased, stopping=stopping, is_async=defn.is_async)
        handler = functools.partial(defn.fn, Context(execution, defn))
        if defn.is_async:
            outcome = asyncio.run(execution.execute_async(handler))
        else:
            outcome = execution.execute(handler)
        assert outcome.status == "released" and calls == []
        kept = execution.stopped
        assert kept is not None and kept.__traceback__ is None  # kept, without frames
        execution.settle(outcome)
        gone = weakref.ref(execution)
        del execution, handler
        assert gone() is None, "the stopped execution outlived its last reference"
    finally:
        gc.enable()

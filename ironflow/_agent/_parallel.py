"""Parallel steps: ``ctx.parallel`` and ``ctx.map``.

Each branch is one step, ``parallel.<name>[i]`` or ``map.<name>[i]``, memoized on its
own. Every branch's position is taken when ``ctx.parallel``/``ctx.map`` is *called*, in
index order, before any branch runs: so the positions, and the positions of the steps
after it, are the same on every replay however the branches interleave, and a crash
leaves each finished branch recorded and re-runs only the ones that were not.

Inside a branch, steps do not nest: a tool a branch calls is an ordinary call, part of
the branch's step (as inside any step).
"""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal

from ironflow.errors import DefinitionError, StepFailedError
from ironflow.replay._engine import Execution
from ironflow.replay._recorded import _Slot
from ironflow.replay._stops import _Cancel, _Drain
from ironflow.store._codec import to_json_value

__all__ = ["run_map", "run_parallel"]

OnError = Literal["fail_fast", "collect"]


def _return_type(fn: Callable[..., Any]) -> Any:
    annotations = getattr(fn, "__annotations__", None)
    if not annotations or "return" not in annotations:
        return Any
    ret = annotations["return"]
    return Any if isinstance(ret, str) else ret


def _check(kind: str, name: Any, concurrency: Any, on_error: Any) -> None:
    if not isinstance(name, str) or not name:
        raise DefinitionError(f"ctx.{kind} needs a non-empty name, not {name!r}")
    if concurrency is not None and (
        not isinstance(concurrency, int) or isinstance(concurrency, bool) or concurrency < 1
    ):
        raise DefinitionError(
            f"ctx.{kind}({name!r}): concurrency must be a positive int or None, not {concurrency!r}"
        )
    if on_error not in ("fail_fast", "collect"):
        raise DefinitionError(
            f"ctx.{kind}({name!r}): on_error must be 'fail_fast' or 'collect', not {on_error!r}"
        )


def run_parallel(
    execution: Execution,
    name: str,
    branches: Iterable[Callable[[], Any]],
    *,
    concurrency: int | None = None,
    on_error: OnError = "fail_fast",
) -> Any:
    """``ctx.parallel``: call each branch with no arguments as the step ``parallel.<name>[i]``."""
    _check("parallel", name, concurrency, on_error)
    fns = list(branches)
    for i, fn in enumerate(fns):
        if not callable(fn):
            raise DefinitionError(
                f"ctx.parallel({name!r}): branch {i} is {fn!r}, not a callable; "
                "pass functions (lambda: ...), not their results"
            )
    calls = [(fn, ()) for fn in fns]
    inputs: list[Any] = [None] * len(fns)
    return _run(execution, f"parallel.{name}", calls, inputs, concurrency, on_error)


def run_map(
    execution: Execution,
    name: str,
    items: Iterable[Any],
    fn: Callable[[Any], Any],
    *,
    concurrency: int | None = None,
    on_error: OnError = "fail_fast",
) -> Any:
    """``ctx.map``: call ``fn(item)`` for each item as the step ``map.<name>[i]``.

    Each item is the step's recorded input, so it must be JSON-storable; a replay whose
    items differ fails with :class:`~ironflow.errors.NonDeterminismError`.
    """
    _check("map", name, concurrency, on_error)
    if not callable(fn):
        raise DefinitionError(f"ctx.map({name!r}): fn must be a callable, not {fn!r}")
    values = list(items)
    inputs = [
        to_json_value(v, f"ctx.map({name!r}) item {i}", "input") for i, v in enumerate(values)
    ]
    calls = [(fn, (v,)) for v in values]
    return _run(execution, f"map.{name}", calls, inputs, concurrency, on_error)


def _run(
    execution: Execution,
    prefix: str,
    calls: Sequence[tuple[Callable[..., Any], tuple[Any, ...]]],
    inputs: Sequence[Any],
    concurrency: int | None,
    on_error: OnError,
) -> Any:
    execution.refuse_nesting(f"{prefix} (a branch is a step)")
    # All positions now, in index order: see the module docstring.
    slots = [execution.begin(f"{prefix}[{i}]", inputs[i]) for i in range(len(calls))]
    limit = max(1, min(concurrency or len(calls), len(calls) or 1))
    if execution.is_async:
        return _run_async(execution, slots, calls, limit, on_error)
    return _run_sync(execution, slots, calls, limit, on_error)


def _boundary(execution: Execution) -> BaseException | None:
    """The stop a new branch must not start under: a drain, a pause or a cancellation
    (kept on the execution, as every stop is)."""
    if execution.stopped is not None:
        return execution.stopped
    if execution.stopping.is_set() or execution.pause_requested:
        return execution.halt(_Drain())
    if execution.cancel_requested:
        return execution.halt(_Cancel())
    return None


def _settle(results: list[Any], errors: dict[int, BaseException], on_error: OnError) -> list[Any]:
    stops = [e for e in errors.values() if not isinstance(e, Exception)]
    if stops:
        raise stops[0]  # a crash, a drain, a lost lease: the engine's business
    if errors and on_error == "fail_fast":
        # The lowest index, not the first in time: a replay must raise the same error.
        raise errors[min(errors)]
    for i, exc in errors.items():
        results[i] = exc
    return results


def _from_record(
    execution: Execution,
    slots: list[_Slot],
    calls: Sequence[tuple[Callable[..., Any], tuple[Any, ...]]],
    on_error: OnError,
) -> tuple[list[Any], dict[int, BaseException], list[int]]:
    """Results and errors of the branches already recorded, and the indexes left to run."""
    results: list[Any] = [None] * len(slots)
    errors: dict[int, BaseException] = {}
    todo: list[int] = []
    for i, slot in enumerate(slots):
        if slot.entry is None:
            todo.append(i)
            continue
        try:
            results[i] = execution.replayed(slot, _return_type(calls[i][0]))
        except StepFailedError as exc:
            errors[i] = exc
    if errors and on_error == "fail_fast":
        todo = []  # the record says this parallel failed: start nothing more
    return results, errors, todo


def _run_sync(
    execution: Execution,
    slots: list[_Slot],
    calls: Sequence[tuple[Callable[..., Any], tuple[Any, ...]]],
    limit: int,
    on_error: OnError,
) -> list[Any]:
    results, errors, todo = _from_record(execution, slots, calls, on_error)
    own_pool: concurrent.futures.ThreadPoolExecutor | None = None
    pool = execution.pool
    if todo and pool is None:
        own_pool = concurrent.futures.ThreadPoolExecutor(limit, "ironflow-branch")
        pool = own_pool
    lock = threading.Lock()

    def branch(i: int) -> None:
        fn, args = calls[i]
        try:
            value = execution.run_blocking(slots[i], fn, args, {}, _return_type(fn))
        except BaseException as exc:
            with lock:
                errors[i] = exc
        else:
            results[i] = value

    try:
        running: set[concurrent.futures.Future[None]] = set()
        queue = list(reversed(todo))
        while queue or running:
            with lock:
                failed = bool(errors) and on_error == "fail_fast"
                stopped = any(not isinstance(e, Exception) for e in errors.values())
            if failed or stopped:
                queue = []
            while queue and len(running) < limit:
                stop = _boundary(execution)
                if stop is not None:
                    with lock:
                        errors.setdefault(-1, stop)
                    queue = []
                    break
                assert pool is not None
                running.add(pool.submit(branch, queue.pop()))
            if not running:
                break
            _, running_left = concurrent.futures.wait(
                running, return_when=concurrent.futures.FIRST_COMPLETED
            )
            running = set(running_left)
    finally:
        if own_pool is not None:
            own_pool.shutdown(wait=True)
    return _settle(results, errors, on_error)


async def _run_async(
    execution: Execution,
    slots: list[_Slot],
    calls: Sequence[tuple[Callable[..., Any], tuple[Any, ...]]],
    limit: int,
    on_error: OnError,
) -> list[Any]:
    import asyncio

    results, errors, todo = _from_record(execution, slots, calls, on_error)
    queue = list(reversed(todo))

    async def lane() -> None:
        # One of ``limit`` lanes, each taking the next branch until none is left.
        while queue:
            if any(not isinstance(e, Exception) for e in errors.values()) or (
                errors and on_error == "fail_fast"
            ):
                return
            stop = _boundary(execution)
            if stop is not None:
                errors.setdefault(-1, stop)
                return
            i = queue.pop()
            fn, args = calls[i]
            try:
                results[i] = await execution.run_async(slots[i], fn, args, {}, _return_type(fn))
            except BaseException as exc:  # kept; _settle re-raises it
                errors[i] = exc

    await asyncio.gather(*(lane() for _ in range(min(limit, len(todo)))))
    return _settle(results, errors, on_error)

"""Replay a history against today's code: does the code still fit what was recorded?

The handler runs in the engine's read-only mode (``Execution(read_only=True)``): each
recorded step gives back its recorded value, nothing is executed and nothing is
written, so a history file needs no store and no tool is called. A run fits when every
recorded step is called in the same order with the same input and the handler ends
as the run did. What does not fit is said in full: the position, the recorded call,
the new call and a diff of their inputs.

``ironflow replay`` prints it; ``ironflow.testing.replay_history`` raises it in a test.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable, Iterable
from typing import Any, NoReturn

import attrs

from ironflow._agent._context import AgentContext
from ironflow._agent._dsl import AgentDefinition
from ironflow._worker._identity import this_worker
from ironflow.errors import NonDeterminismError
from ironflow.replay._engine import Execution, Outcome
from ironflow.store import Lease, LeasedRun, StepRecord, Store
from ironflow.store._history import History

__all__ = ["ReplayReport", "RunReplay", "input_diff", "replay_history_of"]


@attrs.frozen
class RunReplay:
    """How one run's replay went."""

    history: History
    outcome: Outcome
    #: The recorded steps the handler was given back, in the order it met them.
    replayed: tuple[StepRecord, ...]
    #: True when the code fits the record.
    fits: bool
    #: The divergence, when a step (or the lack of one) does not fit.
    divergence: NonDeterminismError | None = None
    #: What does not fit, or what differs without breaking the fit, for a person.
    problem: str | None = None
    note: str | None = None


@attrs.frozen
class ReplayReport:
    """A history's replay: its run's and each child run's whose agent was given."""

    runs: tuple[RunReplay, ...]
    #: Child runs not replayed, because no agent was given for them: (run id, agent id).
    skipped: tuple[tuple[str, str], ...] = ()

    @property
    def fits(self) -> bool:
        return all(r.fits for r in self.runs)

    @property
    def first_misfit(self) -> RunReplay | None:
        return next((r for r in self.runs if not r.fits), None)


class _NoStore:
    """The store of a read-only replay: none. Reaching it is a bug in the replay."""

    def __getattr__(self, name: str) -> NoReturn:
        raise AssertionError(
            f"a read-only replay reached the store (store.{name}); nothing may be written "
            "or read in one: please report this as an Ironflow bug"
        )


def replay_history_of(
    history: History,
    agents: Iterable[AgentDefinition],
    *,
    on_step: Callable[[History, StepRecord], None] | None = None,
    on_run: Callable[[History], None] | None = None,
) -> ReplayReport:
    """Replay ``history`` and its children against ``agents`` (today's definitions).

    ``on_run`` is told each run before it replays, ``on_step`` each recorded step just
    before the handler gets its value back (where ``--break-at`` stops). A child run
    whose agent is not among ``agents`` is skipped and listed; the top run's agent must
    be there (the caller checks).
    """
    by_id = {d.id: d for d in agents}
    runs: list[RunReplay] = []
    skipped: list[tuple[str, str]] = []
    for h in history.walk():
        defn = by_id.get(h.run.agent)
        if defn is None:
            skipped.append((h.run.id, h.run.agent))
            continue
        if on_run is not None:
            on_run(h)
        runs.append(_replay_one(h, defn, on_step))
    return ReplayReport(tuple(runs), tuple(skipped))


def _replay_one(
    history: History,
    defn: AgentDefinition,
    on_step: Callable[[History, StepRecord], None] | None,
) -> RunReplay:
    seen: list[StepRecord] = []

    def replayed(record: StepRecord) -> None:
        seen.append(record)
        if on_step is not None:
            on_step(history, record)

    me = this_worker()
    run = history.run
    leased = LeasedRun(run, history.steps, Lease(run.id, me, 0.0))
    nothing: Store = _NoStore()
    execution = Execution(
        nothing, me, leased, is_async=defn.is_async, read_only=True, on_replayed=replayed
    )
    ctx = AgentContext(execution, defn)
    if defn.is_async:
        import asyncio

        outcome = asyncio.run(execution.execute_async(lambda: defn.fn(ctx)))
    else:
        outcome = execution.execute(lambda: defn.fn(ctx))
    return _judge(history, execution, outcome, tuple(seen))


def _judge(
    history: History, execution: Execution, outcome: Outcome, seen: tuple[StepRecord, ...]
) -> RunReplay:
    """Whether the replay fits the record, and what to tell a person about it."""
    rec = history.run

    def result(fits: bool, **kw: Any) -> RunReplay:
        return RunReplay(history, outcome, seen, fits, **kw)

    stopped = execution.stopped
    if isinstance(stopped, NonDeterminismError):
        return result(False, divergence=stopped, problem=str(stopped))
    ended = _ending(rec.status, rec.output, rec.error)
    if outcome.status == "past_record":
        past = execution.past_record
        assert past is not None
        if rec.status == "completed":
            drift = NonDeterminismError(
                rec.id,
                past.position,
                "no further step (the run completed)",
                repr(past.step_id),
                inputs=(None, past.input),
            )
            return result(False, divergence=drift, problem=str(drift))
        return result(
            True,
            note=f"the record ends at position {past.position} ({ended}); today's code goes "
            f"on to call {past.step_id!r} there, which a replay does not run",
        )
    done = {s.position for s in seen}
    unreached = [s for s in history.steps if s.position not in done]
    if outcome.status == "failed" and unreached and outcome.error is not None:
        first = unreached[0]
        err = outcome.error
        drift = NonDeterminismError(
            rec.id,
            first.position,
            repr(first.id),
            f"no further step (the handler raised {err.type}: {err.message})",
        )
        return result(False, divergence=drift, problem=str(drift))
    now = _ending(outcome.status, outcome.output, outcome.error)
    if rec.status == "completed":
        if outcome.status == "completed" and outcome.output == rec.output:
            return result(True)
        diff = (
            "\n".join(input_diff(rec.output, outcome.output, "recorded output", "output now"))
            if outcome.status == "completed"
            else ""
        )
        problem = f"every recorded step fits, but the run {ended}, and today's code {now}" + (
            f"\n{diff}" if diff else ""
        )
        return result(False, problem=problem)
    if rec.status == "failed" and outcome.status == "failed":
        same = (
            rec.error is not None
            and outcome.error is not None
            and (rec.error.type, rec.error.message) == (outcome.error.type, outcome.error.message)
        )
        if same:
            return result(True)
    return result(True, note=f"every recorded step fits; the run {ended}, and today's code {now}")


def _ending(status: str, output: Any, error: Any) -> str:
    if status == "completed":
        return f"completed with {_short(output)}"
    if status == "failed" and error is not None:
        return f"failed with {error.type}: {error.message}"
    return f"is {status}"


def _short(value: Any, width: int = 100) -> str:
    text = json.dumps(value, ensure_ascii=False, sort_keys=True)
    return text if len(text) <= width else text[: width - 3] + "..."


def input_diff(before: Any, after: Any, a: str = "recorded", b: str = "now") -> list[str]:
    """A unified diff of two JSON values, pretty-printed with sorted keys."""

    def lines(value: Any) -> list[str]:
        return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False).splitlines()

    return list(difflib.unified_diff(lines(before), lines(after), a, b, lineterm="", n=2))

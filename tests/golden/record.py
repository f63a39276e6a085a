"""Record a NEW golden history: ``python -m tests.golden.record SCENARIO [...]``.

Each scenario runs its agent to the end on a fresh store (a fake clock ends the
sleeps, approvals are answered, a projection runner serves the memory, the scripted
provider answers the LLM calls) and writes the run's history, in the format of
``ironflow run export`` (``ironflow/store/_history.py``), to
``tests/golden/histories/<scenario>.v<format version>.json`` (``diverged/`` for a
history today's code must refuse).

An existing golden file is never overwritten: it is a run recorded by an earlier
Ironflow, and replaying it is the test. A change to the stored format adds a file
(the version is in its name); a new behaviour to pin adds a scenario. ``--list``
shows the scenarios and their files.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

from ironflow import AgentContext, agent
from ironflow.llm import ScriptedProvider, ToolCall, set_default_provider
from ironflow.store import LmdbStore
from ironflow.store._history import HISTORY_VERSION, dump_history, export_history
from ironflow.testing import FakeClock
from ironflow.testing._driver import Driver
from tests.golden import agents as today

HERE = Path(__file__).resolve().parent


# -- the code some histories were recorded with, before today's change ---------------


@agent(id="golden-patched", triggers=["golden.patched"])
def patched_before(ctx: AgentContext) -> int:
    """``golden-patched`` before ``ctx.patched("double-it")`` was added."""
    a = today.add(x=1, y=2)
    return today.add(x=a, y=a)  # type: ignore[no-any-return]


@agent(id="golden-diverged", triggers=["golden.diverged"])
def diverged_before(ctx: AgentContext) -> int:
    """``golden-diverged`` before its second step changed without ``ctx.patched``."""
    a = today.add(x=1, y=2)
    return today.add(x=a, y=a)  # type: ignore[no-any-return]


@attrs.frozen
class Scenario:
    """One recorded run: which agent's code records it, with what, and what else runs."""

    agent: Callable[..., Any]
    data: dict[str, Any] = attrs.field(factory=dict)
    #: Agents its runs spawn, served alongside.
    others: tuple[Callable[..., Any], ...] = ()
    projections: tuple[Callable[..., Any], ...] = ()
    #: Events emitted right after the run starts (what its waits take).
    events: tuple[tuple[str, dict[str, Any]], ...] = ()
    #: Scripted replies for its ``ctx.llm`` calls.
    llm: tuple[Any, ...] = ()
    #: True for a history today's code must refuse with NonDeterminismError.
    diverged: bool = False

    def path(self, name: str) -> Path:
        folder = "diverged" if self.diverged else "histories"
        return HERE / folder / f"{name}.v{HISTORY_VERSION}.json"


SCENARIOS: dict[str, Scenario] = {
    "tools": Scenario(today.tools, {"url": "https://example.com/doc"}),
    "sleep": Scenario(today.sleeper),
    "approve": Scenario(today.approver),
    "spawn": Scenario(today.spawner, others=(today.child,)),
    "parallel": Scenario(today.parallel),
    "saga": Scenario(today.saga),
    "patched-old-code": Scenario(patched_before),
    "patched-new-code": Scenario(today.patched),
    "memory": Scenario(today.remembers, projections=(today.notes,)),
    "llm": Scenario(
        today.assistant,
        {"city": "Paris"},
        llm=(ToolCall("weather", {"city": "Paris"}, id="call_1"), "It is 21 C in Paris."),
    ),
    "async-waits": Scenario(
        today.gathering, events=(("payment", {"amount": 7}), ("payment", {"amount": 3}))
    ),
    "diverged": Scenario(diverged_before, diverged=True),
}


def record(name: str, scenario: Scenario, target: Path) -> str:
    """Run the scenario on a fresh store and write its history to ``target``; the run id."""
    clock = FakeClock()
    previous = set_default_provider(ScriptedProvider(list(scenario.llm)) if scenario.llm else None)
    try:
        with tempfile.TemporaryDirectory(prefix="ironflow-golden-") as tmp:
            store = LmdbStore(Path(tmp) / "data", sync=False, clock=clock)
            try:
                driver = Driver(
                    store,
                    [scenario.agent, *scenario.others],
                    projections=scenario.projections,
                    clock=clock,
                    approve=lambda _name, _payload: True,
                )
                run_id = driver.start(scenario.agent, scenario.data)
                for event_name, data in scenario.events:
                    store.emit(event_name, data)
                run = driver.drive(run_id)
                if run.status not in ("completed", "failed"):
                    raise SystemExit(f"{name}: the run ended {run.status}, not finished")
                history = export_history(store, run_id)
            finally:
                store.close()
    finally:
        set_default_provider(previous)
    target.parent.mkdir(parents=True, exist_ok=True)
    dump_history(history, target)
    return run_id


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.golden.record",
        description="Record a new golden history for each SCENARIO (never overwriting one).",
    )
    parser.add_argument("scenarios", nargs="*", metavar="SCENARIO", help="scenarios to record")
    parser.add_argument("--list", action="store_true", help="list the scenarios and files")
    args = parser.parse_args(argv)
    if args.list or not args.scenarios:
        for name, scenario in SCENARIOS.items():
            path = scenario.path(name)
            state = "recorded" if path.exists() else "not recorded"
            print(f"{name:<18} {path.relative_to(HERE)}  ({state})")
        return 0
    unknown = [n for n in args.scenarios if n not in SCENARIOS]
    if unknown:
        parser.error(f"no scenario {', '.join(map(repr, unknown))}; see --list")
    status = 0
    for name in args.scenarios:
        scenario = SCENARIOS[name]
        target = scenario.path(name)
        if target.exists():
            print(
                f"{target.relative_to(HERE)} exists: a golden history is never re-recorded. "
                "Add a scenario for new behaviour; a new format version writes a new file",
                file=sys.stderr,
            )
            status = 1
            continue
        run_id = record(name, scenario, target)
        print(f"{name}: run {run_id} written to {target.relative_to(HERE)}")
    return status


if __name__ == "__main__":
    sys.exit(main())

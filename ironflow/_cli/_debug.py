"""Debugging commands: take a run home, replay it, step through it, fork it.

``ironflow run export`` writes a run's history (``store/_history.py``), ``ironflow
replay`` runs today's code against a history without writing or calling anything.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
import types
from typing import Any

from ironflow.store import StepRecord
from ironflow.store._history import History, export_history, history_to_json

__all__ = ["add_debug_commands", "add_run_commands"]


def cmd_run_export(args: argparse.Namespace) -> int:
    from ironflow._cli._common import opened
    from ironflow.store._history import dump_history

    with opened(args, create=False) as store:
        history = export_history(store, args.run_id)
    if args.output in (None, "-"):
        print(json.dumps(history_to_json(history), indent=1, ensure_ascii=False))
        return 0
    dump_history(history, args.output)
    print(f"run {history.run.id} ({_summary(history)}) written to {args.output}")
    return 0


def _summary(history: History) -> str:
    runs = sum(1 for _ in history.walk())
    steps = sum(len(h.steps) for h in history.walk())
    appends = sum(len(h.memory) for h in history.walk())
    parts = [history.run.status, f"{steps} step(s)"]
    if runs > 1:
        parts.append(f"{runs - 1} child run(s)")
    if appends:
        parts.append(f"{appends} memory append(s)")
    return ", ".join(parts)


def cmd_run_import(args: argparse.Namespace) -> int:
    from ironflow._cli._common import opened
    from ironflow.store._history import load_history

    history = load_history(args.file)
    with opened(args, create=True) as store:
        run = store.import_history(history, new_ids=args.new_id)
    kept = "under its own id" if run.id == history.run.id else f"as {run.id}"
    paused = (
        f"; it had not finished, so it is paused: `ironflow run resume {run.id}` lets a worker "
        "take it on"
        if run.status == "paused"
        else ""
    )
    print(f"run {history.run.id} ({_summary(history)}) imported {kept}{paused}")
    return 0


def cmd_run_fork(args: argparse.Namespace) -> int:
    from ironflow._cli._common import opened, parse_data, print_json
    from ironflow.server._views import run_json

    data = None if args.data is None else parse_data(args.data)
    with opened(args, create=False) as store:
        fork = store.fork_run(args.run_id, from_step=args.from_step, data=data)
    if args.json:
        print_json(run_json(fork))
        return 0
    copied = fork.forked_from.position if fork.forked_from is not None else 0
    print(
        f"run {fork.id} forked from {args.run_id} at {args.from_step}: {copied} record(s) "
        f"copied, it is {fork.status}; a worker serving {fork.agent} runs it on from there"
    )
    return 0


def add_run_commands(run_sub: Any, add_data_dir: Any) -> None:
    """``ironflow run export`` (and the other history commands) under ``ironflow run``."""
    from ironflow._cli._common import add_run_id

    export = run_sub.add_parser(
        "export",
        help="write a run's whole history to a JSON file",
        description="Write a self-contained, versioned JSON history of a run: the run and "
        "its event, every step record with its tries, the memory events it appended and "
        "the same for each child run. `ironflow replay FILE --module MODULE` runs your "
        "code against it; `ironflow run import FILE` loads it into another data directory.",
    )
    add_run_id(export)
    export.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help="the file to write (default: print the JSON to standard output)",
    )
    add_data_dir(export)
    export.set_defaults(func=cmd_run_export)

    imp = run_sub.add_parser(
        "import",
        help="load a run's history (from run export) into this store",
        description="Load a history written by `ironflow run export` into this store (a dev "
        "data directory, say): the run and its child runs with their step records, under "
        "the ids they had (or new ones with --new-id), and the memory events they "
        "appended, each appended to its stream once. A finished run keeps its status; an "
        "unfinished one is imported paused. Refused whole if a run id is taken.",
    )
    imp.add_argument("file", metavar="FILE", help="the history, e.g. run.json")
    imp.add_argument(
        "--new-id",
        action="store_true",
        help="give the run and its child runs new ids (to import the same history twice)",
    )
    add_data_dir(imp)
    imp.set_defaults(func=cmd_run_import)

    fork = run_sub.add_parser(
        "fork",
        help="start a new run from a step of a run, which is left untouched",
        description="Start a new run of the same agent holding copies of RUN_ID's records "
        "before STEP_ID: a worker replays them and runs on from that step. With --data, "
        "the new run's event has that data instead (a copied step whose input came from "
        "the old data then no longer fits: fork from an earlier step). The original is "
        "untouched; inspect shows each run's link to the other.",
    )
    add_run_id(fork)
    fork.add_argument(
        "--from-step", required=True, metavar="STEP_ID", help="the first step to run anew"
    )
    fork.add_argument("--data", metavar="JSON", help="the new run's event data, a JSON object")
    fork.add_argument("--json", action="store_true", help="print the new run as JSON")
    add_data_dir(fork)
    fork.set_defaults(func=cmd_run_fork)


# -- replay ------------------------------------------------------------------------------

EXIT_MISFIT = 1


def _source_history(args: argparse.Namespace) -> History:
    """``SOURCE``: a history file, else a run id in the store."""
    from pathlib import Path

    from ironflow._cli._common import opened
    from ironflow.store._history import load_history

    if Path(args.source).is_file() or args.source.endswith(".json"):
        return load_history(args.source)
    with opened(args, create=False) as store:
        return export_history(store, args.source)


def cmd_replay(args: argparse.Namespace) -> int:
    from ironflow._agent._dsl import definitions_in
    from ironflow._cli._common import Usage
    from ironflow._worker._loader import load_module
    from ironflow._worker._replayer import replay_history_of

    history = _source_history(args)
    defs = definitions_in(vars(load_module(args.module)))
    if not any(d.id == history.run.agent for d in defs):
        others = f" (it defines: {', '.join(d.id for d in defs)})" if defs else ""
        raise Usage(
            f"module {args.module!r} defines no @agent {history.run.agent!r}, the agent of run "
            f"{history.run.id}{others}"
        )
    if args.break_at is not None:
        known = {s.id for h in history.walk() for s in h.steps}
        if args.break_at not in known:
            ids = ", ".join(s.id for s in history.steps) or "none"
            raise Usage(
                f"--break-at {args.break_at!r}: run {history.run.id} has no such step "
                f"(its steps: {ids})"
            )
    printer = _Printer(break_at=args.break_at)
    report = replay_history_of(history, defs, on_step=printer.step, on_run=printer.run)
    for run_id, agent_id in report.skipped:
        print(
            f"child run {run_id} ({agent_id}) not replayed: {args.module!r} defines no such agent"
        )
    for replay in report.runs:
        printer.verdict(replay)
    if args.break_at is not None and not printer.broke:
        print(f"the replay never reached step {args.break_at!r}")
    if report.fits:
        print(f"fits: today's code replays run {history.run.id} without a difference")
        return 0
    return EXIT_MISFIT


class _Printer:
    """Prints each run and step as it replays; stops in pdb at ``--break-at``."""

    def __init__(self, *, break_at: str | None) -> None:
        self.break_at = break_at
        self.broke = False

    def run(self, history: History) -> None:
        run = history.run
        kind = "child run" if run.parent_id else "run"
        print(f"replaying {kind} {run.id} ({run.agent}, {run.status}, {len(history.steps)} steps)")

    def step(self, history: History, record: StepRecord) -> None:
        from ironflow._cli._inspect import compact
        from ironflow.server._views import step_output_json

        mark = "✓" if record.status == "completed" else "✗"
        shown = (
            compact(step_output_json(record), 80)
            if record.status == "completed"
            else f"{record.error.type if record.error else 'Error'} (recorded failure)"
        )
        print(f"  {mark} #{record.position:<3} {record.id}  → {shown}", flush=True)
        if record.id == self.break_at:
            self.broke = True
            _break_here(history, record)

    def verdict(self, replay: Any) -> None:
        from ironflow._worker._replayer import input_diff

        run = replay.history.run
        if replay.divergence is not None:
            d = replay.divergence
            print(f"run {run.id}: does not fit at step position {d.position}")
            print(f"  recorded  {d.recorded}")
            print(f"  now       {d.attempted}")
            if d.inputs is not None:
                print("  input diff:")
                for line in input_diff(*d.inputs):
                    print(f"    {line}")
            print(f"  {type(d).__name__}: {d}")
        elif replay.problem is not None:
            print(f"run {run.id}: does not fit: {replay.problem}")
        elif replay.note is not None:
            print(f"run {run.id}: {replay.note}")


def _break_here(history: History, record: StepRecord) -> None:
    """Stop in pdb just before ``record`` gives the handler its recorded value."""
    import pdb

    from ironflow._pure._frames import user_frame

    frame = sys._getframe()
    # The names a person types at the (Pdb) prompt: this frame is where pdb stops.
    input = record.input  # noqa: F841
    output = record.output  # noqa: F841
    error = record.error
    stack = traceback.format_stack(frame)
    user = user_frame("".join(stack))
    ups = 0
    where = ""
    if user is not None:
        f: types.FrameType | None = frame
        while f is not None and not (f.f_code.co_filename == user.file and f.f_lineno == user.line):
            f = f.f_back
            ups += 1
        where = f"; `up {ups}` goes to your code, {user.describe()}" if f is not None else ""
    print(
        f"--break-at {record.id}: run {history.run.id}, step position {record.position}, "
        f"about to give the handler its recorded {'failure' if error else 'value'}\n"
        f"  `p input` and `p output` (`p error` for a failure) show them{where}; "
        "`c` replays on",
        flush=True,
    )
    pdb.Pdb().set_trace(frame)


def add_debug_commands(sub: Any, add_data_dir: Any) -> None:
    """``ironflow replay``."""
    replay = sub.add_parser(
        "replay",
        help="run today's code against a recorded run, writing and calling nothing",
        description="Re-execute a run's handler, as MODULE defines it now, against the run's "
        "record: each recorded step gives back its recorded value, nothing is executed or "
        "written. Prints each step as it replays; exits 0 when the code fits the history, "
        "1 when it does not (the position, the recorded call, the new call and a diff of "
        "their inputs). Child runs whose agent MODULE defines are replayed too.",
    )
    replay.add_argument(
        "source",
        metavar="FILE_OR_RUN_ID",
        help="a history written by `ironflow run export`, or the id of a run in the store",
    )
    replay.add_argument(
        "--module",
        required=True,
        metavar="MODULE",
        help="the module defining the run's agent (dotted name or .py path)",
    )
    replay.add_argument(
        "--break-at",
        metavar="STEP_ID",
        help="stop in pdb just before this step gives the handler its recorded value, "
        "with its input and output at hand",
    )
    add_data_dir(replay)
    replay.set_defaults(func=cmd_replay)

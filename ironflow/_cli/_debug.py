"""Debugging commands: take a run home, replay it, step through it, fork it.

``ironflow run export`` writes a run's history (``store/_history.py``), ``ironflow
replay`` runs today's code against a history without writing or calling anything.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from ironflow.store._history import History, export_history, history_to_json

__all__ = ["add_run_commands"]


def cmd_run_export(args: argparse.Namespace) -> int:
    from ironflow._cli._main import _opened
    from ironflow.store._history import dump_history

    with _opened(args, create=False) as store:
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


def add_run_commands(run_sub: Any, add_data_dir: Any) -> None:
    """``ironflow run export`` (and the other history commands) under ``ironflow run``."""
    export = run_sub.add_parser(
        "export",
        help="write a run's whole history to a JSON file",
        description="Write a self-contained, versioned JSON history of a run: the run and "
        "its event, every step record with its tries, the memory events it appended and "
        "the same for each child run. `ironflow replay FILE --module MODULE` runs your "
        "code against it; `ironflow run import FILE` loads it into another data directory.",
    )
    export.add_argument("run_id", metavar="RUN_ID")
    export.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help="the file to write (default: print the JSON to standard output)",
    )
    add_data_dir(export)
    export.set_defaults(func=cmd_run_export)

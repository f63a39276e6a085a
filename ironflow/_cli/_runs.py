"""The commands on runs: ``emit``, ``run list|cancel|pause|resume|prune``, ``approve`` and
``inspect``, their handlers and their arguments."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from ironflow._cli._client import DEFAULT_TIMEOUT
from ironflow._cli._common import (
    Usage,
    add_data_dir,
    add_run_id,
    duration,
    opened,
    parse_data,
    print_json,
)
from ironflow._cli._inspect import LEGEND, inspect_lines, status_text
from ironflow.errors import IronflowError
from ironflow.server._views import children_of, run_json, run_with_steps_json
from ironflow.store import FINISHED, EmitResult, Store
from ironflow.store._triggers import why_no_run

__all__ = ["add_commands", "status_of"]

_STATUSES = (
    "pending",
    "running",
    "sleeping",
    "waiting",
    "queued",
    "paused",
    "completed",
    "failed",
    "cancelled",
)


# -- emit --------------------------------------------------------------------------------


def _emit(store: Store, args: argparse.Namespace, data: Any) -> EmitResult:
    """Emit under the trace context the environment gives: inside an ``emit NAME`` span
    when the OTEL_* variables ask for traces, else in ``TRACEPARENT``'s, if set."""
    from ironflow._worker._observe import emitting, start_tracing

    provider = start_tracing("ironflow-cli")
    try:
        with emitting(provider, args.name) as trace:
            return store.emit(args.name, data, id=args.id, trace=trace)
    finally:
        if provider is not None:
            provider.shutdown()  # the emit span is sent before the command goes on


def cmd_emit(args: argparse.Namespace) -> int:
    data = parse_data(args.data)
    if args.wait:
        return _emit_and_wait(args, data)
    with opened(args, create=True) as store:
        result = _emit(store, args, data)
        started_none = result.created and not result.run_ids
        why = why_no_run(args.name, data, result.event_id, store.agents()) if started_none else ""
    if args.json:
        print_json(
            {
                "event_id": result.event_id,
                "run_ids": list(result.run_ids),
                "created": result.created,
            }
        )
        return 0
    if not result.created:
        print(f"event {result.event_id} was already emitted; nothing new started")
    else:
        print(f"event {result.event_id}")
    for run_id in result.run_ids:
        print(f"run {run_id}")
    if started_none:
        if why.startswith("no agent is triggered"):
            why += (
                "; start a worker serving one before emitting (its triggers are registered "
                "when it starts)"
            )
        print(f"warning: no run started: {why}", file=sys.stderr)
    return 0


def _emit_and_wait(args: argparse.Namespace, data: Any) -> int:
    from ironflow._cli._live import EXIT_FAILED, wait_and_report

    timeout = args.timeout
    with opened(args, create=True) as store:
        result = _emit(store, args, data)
        if not result.run_ids:
            why = why_no_run(args.name, data, result.event_id, store.agents())
            print(f"event {result.event_id} started no run: {why}", file=sys.stderr)
            return EXIT_FAILED
        return wait_and_report(store, result.run_ids, timeout, as_json=args.json)


# -- run list / cancel -------------------------------------------------------------------


def cmd_run_list(args: argparse.Namespace) -> int:
    if args.limit < 1:
        raise Usage(f"--limit must be at least 1, not {args.limit}")
    with opened(args, create=False) as store:
        runs = store.list_runs(limit=args.limit, status=args.status, agent=args.agent)
        now = time.time()
        objs = [
            run_json(r, store.get_lease(r.id) if r.status == "running" else None, now=now)
            for r in runs
        ]
    if args.json:
        print_json(objs)
        return 0
    if not objs:
        print("no runs yet")
        return 0
    rows = [("ID", "AGENT", "STATUS", "ATTEMPT", "CREATED", "EVENT")]
    for o in objs:
        rows.append(
            (
                o["id"],
                o["agent"],
                status_text(o),
                str(o["attempt"]),
                str(o["created_at"]).replace("T", " "),
                o["event"]["name"],
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0


def cmd_run_cancel(args: argparse.Namespace) -> int:
    with opened(args, create=False) as store:
        run = store.request_cancel(args.run_id)
    if run.status == "cancelled":
        print(f"run {run.id} cancelled")
    elif run.status in FINISHED:
        print(f"run {run.id} had already finished ({run.status}); nothing to cancel")
    else:
        print(f"run {run.id} will stop at its next step boundary")
    return 0


def cmd_run_pause(args: argparse.Namespace) -> int:
    with opened(args, create=False) as store:
        run = store.pause_run(args.run_id)
    if run.status == "paused":
        print(f"run {run.id} paused; `ironflow run resume {run.id}` lets it go on")
    elif run.status in FINISHED:
        print(f"run {run.id} had already finished ({run.status}); nothing to pause")
    else:
        print(f"run {run.id} ({run.status}) will pause at its next step boundary")
    return 0


def cmd_run_resume(args: argparse.Namespace) -> int:
    with opened(args, create=False) as store:
        run = store.resume_run(args.run_id, from_step=args.from_step)
    if args.from_step is not None:
        print(f"run {run.id} re-runs from step {args.from_step} (attempt {run.attempt + 1})")
    elif run.status == "pending":
        print(f"run {run.id} resumed: pending, a worker takes it next")
    else:
        print(f"run {run.id} is {run.status}: it was not paused, so it goes on as it was")
    return 0


def cmd_approve(args: argparse.Namespace) -> int:
    import getpass

    from ironflow._agent._primitives import approval_event

    approver = args.approver
    if approver is None:
        try:
            approver = getpass.getuser()
        except (KeyError, OSError):
            approver = None
    event, data = approval_event(
        args.run_id, args.name, approved=not args.reject, approver=approver, reason=args.reason
    )
    with opened(args, create=False) as store:
        run = store.get_run(args.run_id)
        if run.status in FINISHED:
            raise Usage(
                f"run {run.id} has already finished ({run.status}); there is nothing to approve"
            )
        result = store.emit(event, data)
    verdict = "rejected" if args.reject else "approved"
    s = run.suspension
    if run.status == "waiting" and s is not None and s.event == event:
        print(f"{args.name} {verdict} for run {run.id}; it continues now (event {result.event_id})")
    else:
        print(
            f"{args.name} {verdict} for run {run.id} (event {result.event_id}); it is not waiting "
            f"for that approval yet, and takes this answer when it asks"
        )
    return 0


# -- inspect -----------------------------------------------------------------------------


def cmd_inspect(args: argparse.Namespace) -> int:
    if args.at is not None:
        from ironflow._cli._timetravel import cmd_inspect_at

        return cmd_inspect_at(args)
    if args.module is not None:
        raise Usage("--module is for --at (to fold the memory projection as it was then)")
    with opened(args, create=False) as store:
        run = store.get_run(args.run_id)
        steps = store.get_steps(run.id)
        lease = store.get_lease(run.id)
        children = [(c, status_of(store, c["id"])) for c in children_of(steps)]
    obj = run_with_steps_json(run, steps, lease)
    if args.json:
        print_json(obj)
        return 0
    for line in inspect_lines(run, steps, lease, obj, children, traceback=args.traceback):
        print(line)
    return 0


def status_of(store: Store, run_id: str) -> str:
    try:
        return store.get_run(run_id).status
    except IronflowError:
        return "unknown"


# -- retention ---------------------------------------------------------------------------


def cmd_run_prune(args: argparse.Namespace) -> int:
    from ironflow.store._retention import parse_age

    age = parse_age(args.older_than)
    with opened(args, create=False) as store:
        result = store.prune_runs(older_than=age, statuses=args.status, dry_run=args.dry_run)
    if args.json:
        print_json(
            {
                "runs": result.runs,
                "steps": result.steps,
                "events": result.events,
                "dry_run": result.dry_run,
            }
        )
        return 0
    verb = "would delete" if result.dry_run else "deleted"
    print(
        f"{verb} {result.runs} finished run(s) older than {args.older_than}, "
        f"{result.steps} step record(s) and {result.events} log event(s)"
    )
    return 0


# -- the arguments -----------------------------------------------------------------------


def add_commands(sub: Any) -> None:
    """``emit``, ``run ...``, ``approve`` and ``inspect``, in the order ``--help`` lists them."""
    emit = sub.add_parser(
        "emit",
        help="emit an event, starting the runs it triggers",
        description="Append an event to the log and start one run per agent "
        "whose trigger matches its name, in one transaction.",
    )
    emit.add_argument("name", metavar="NAME", help="event name, e.g. doc.received")
    emit.add_argument(
        "--data", default="{}", metavar="JSON", help="event payload as JSON (default {})"
    )
    emit.add_argument(
        "--id", metavar="KEY", help="idempotency key: an event id emitted twice starts nothing new"
    )
    emit.add_argument("--json", action="store_true", help="print the result as JSON")
    emit.add_argument(
        "--wait",
        action="store_true",
        help="wait for every run the event started and print each output; exit 0 if all "
        "completed, 1 if one failed or was cancelled, 124 if --timeout passed first",
    )
    emit.add_argument(
        "--timeout",
        type=duration,
        default=DEFAULT_TIMEOUT,
        metavar="DURATION",
        help=f"how long to wait (30s, 2m, or seconds; default {DEFAULT_TIMEOUT:g}): for the "
        "server to answer and, with --wait, for the runs to finish",
    )
    add_data_dir(emit, timeout=False)
    emit.set_defaults(func=cmd_emit)

    run = sub.add_parser("run", help="list and manage runs", description="List and manage runs.")
    run_sub = run.add_subparsers(dest="run_command", metavar="SUBCOMMAND", required=True)
    lst = run_sub.add_parser(
        "list", help="list runs, newest first", description="List runs, newest first."
    )
    lst.add_argument("--limit", type=int, default=20, metavar="N", help="at most N runs (20)")
    lst.add_argument("--status", choices=_STATUSES, help="only runs with this status")
    lst.add_argument("--agent", metavar="ID", help="only runs of this agent")
    lst.add_argument("--json", action="store_true", help="print a JSON array")
    add_data_dir(lst)
    lst.set_defaults(func=cmd_run_list)
    cancel = run_sub.add_parser(
        "cancel",
        help="cancel a run at its next step boundary",
        description="Cancel a pending, sleeping or waiting run now, or a running one at its "
        "next step boundary; its unfinished child runs are cancelled with it.",
    )
    add_run_id(cancel)
    add_data_dir(cancel)
    cancel.set_defaults(func=cmd_run_cancel)
    pause = run_sub.add_parser(
        "pause",
        help="pause a run at its next step boundary",
        description="Pause a pending or queued run now, a running one at its next step "
        "boundary, a sleeping or waiting one when it wakes; `run resume` lets it go on.",
    )
    add_run_id(pause)
    add_data_dir(pause)
    pause.set_defaults(func=cmd_run_pause)
    resume = run_sub.add_parser(
        "resume",
        help="resume a paused run, or re-run a finished one from a step",
        description="Let a paused run go on. With --from-step, re-run a finished run "
        "from that step: the records before it are kept, the step and those after it "
        "run again, and `inspect` lists the re-run.",
    )
    add_run_id(resume)
    resume.add_argument(
        "--from-step", metavar="STEP_ID", help="the step id to re-run from (see `inspect`)"
    )
    add_data_dir(resume)
    resume.set_defaults(func=cmd_run_resume)
    prune = run_sub.add_parser(
        "prune",
        help="delete finished runs older than an age",
        description="Delete finished runs (and their step records) last updated longer ago "
        "than --older-than, with the log events nothing needs any more. Never an "
        "unfinished run; never entity stream events, nor events a projection or a "
        "waiting run may still read. The file does not shrink (LMDB reuses the freed "
        "pages); `ironflow store compact` gives the space back.",
    )
    prune.add_argument(
        "--older-than",
        required=True,
        metavar="AGE",
        help="how long ago the run finished: 30d, 12h, 90m, 2w, or seconds",
    )
    prune.add_argument(
        "--status",
        action="append",
        choices=sorted(FINISHED),
        help="only runs with this status (repeatable; default: every finished status)",
    )
    prune.add_argument("--dry-run", action="store_true", help="count, delete nothing")
    prune.add_argument("--json", action="store_true", help="print the counts as JSON")
    add_data_dir(prune)
    prune.set_defaults(func=cmd_run_prune)
    from ironflow._cli._debug import add_run_commands

    add_run_commands(run_sub, add_data_dir)

    approve = sub.add_parser(
        "approve",
        help="answer a run's ctx.approve(NAME)",
        description="Approve (or with --reject, reject) what a run asked with ctx.approve(NAME): "
        "emits the event agent.approve.NAME for RUN_ID, which any emitter could send too.",
    )
    add_run_id(approve)
    approve.add_argument("name", metavar="NAME", help="the approval's name, as in ctx.approve")
    approve.add_argument("--reject", action="store_true", help="reject instead of approving")
    approve.add_argument("--reason", metavar="TEXT", help="why, for the run and the record")
    approve.add_argument(
        "--approver", metavar="WHO", help="who answers (default: the current user name)"
    )
    add_data_dir(approve)
    approve.set_defaults(func=cmd_approve)

    inspect = sub.add_parser(
        "inspect",
        help="show a run and its recorded steps",
        description="Show a run and the timeline of its recorded steps; a failure shows "
        f"the line of your code that raised it. {LEGEND}.",
    )
    add_run_id(inspect)
    inspect.add_argument("--json", action="store_true", help="print the run and steps as JSON")
    inspect.add_argument(
        "--traceback",
        action="store_true",
        help="also print the whole traceback of each failure (--json always has them)",
    )
    inspect.add_argument(
        "--at",
        metavar="STEP_ID|TIME",
        help="show the run as it stood just after this step was recorded, or at this time "
        "(ISO 8601, or +SECONDS after the run's start): the steps recorded by then, its "
        "status then, and its memory projection at the log position reached",
    )
    inspect.add_argument(
        "--module",
        metavar="MODULE",
        help="with --at: the module defining the run's memory projection, to fold its state "
        "as it was then",
    )
    add_data_dir(inspect)
    inspect.set_defaults(func=cmd_inspect)

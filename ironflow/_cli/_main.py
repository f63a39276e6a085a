"""``ironflow ...``: the command line, thin over a store.

Every command goes through the server when ``IRONFLOW_URL`` is set, else opens the
data directory (``--data-dir``, ``IRONFLOW_DATA_DIR``, or ``./.ironflow``). Bad input
gets one line saying what to fix and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

from ironflow._cli._client import DEFAULT_TIMEOUT
from ironflow._cli._inspect import LEGEND, inspect_lines, status_text
from ironflow._cli._worker import add_store_argument
from ironflow.errors import ConfigError, IronflowError, ServerUnavailableError
from ironflow.server._views import children_of, iso, run_json, run_with_steps_json
from ironflow.store import FINISHED, EmitResult, Store
from ironflow.store._open import (
    open_location,
    open_store,
    resolve_location,
    server_url,
)
from ironflow.store._triggers import why_no_run

__all__ = ["main"]

EXIT_USAGE = 2
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


class _Usage(ConfigError):
    """A user error: print one line and exit 2.

    A ConfigError, so it is caught as one even when raised by this module imported a
    second time (``python -m ironflow._cli._main`` runs it as ``__main__``).
    """


def _store(args: argparse.Namespace, *, create: bool) -> Store:
    given = getattr(args, "store", None) or getattr(args, "data_dir", None)
    timeout = getattr(args, "timeout", None)
    give_up = DEFAULT_TIMEOUT if timeout is None else timeout
    if not given and server_url():
        return open_store(give_up_after=give_up)
    where = resolve_location(getattr(args, "store", None), getattr(args, "data_dir", None))
    if isinstance(where, Path) and not create and not (where / "data.mdb").exists():
        raise _Usage(
            f"no Ironflow data directory at {where}; start a worker there first, or pass "
            "--store URL_OR_DIR (or set IRONFLOW_STORE, or IRONFLOW_URL for a server)"
        )
    return open_location(where, give_up_after=give_up)


@contextlib.contextmanager
def _opened(args: argparse.Namespace, *, create: bool) -> Iterator[Store]:
    """The command's store, closed when the command is done with it."""
    store = _store(args, create=create)
    try:
        yield store
    finally:
        store.close()


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False))


# -- emit --------------------------------------------------------------------------------


def _parse_data(text: str) -> Any:
    """``--data``: JSON text, or a usage error saying what is wrong with it."""
    try:
        data = json.loads(text)
        # JSON may spell lone surrogates ("\\ud800"), which are not text and cannot be stored.
        json.dumps(data, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        raise _Usage(
            "--data holds a lone surrogate escape (\\ud800 to \\udfff), which is not text"
        ) from None
    except json.JSONDecodeError as exc:
        raise _Usage(
            f"--data is not valid JSON ({exc.msg} at column {exc.colno}): {_clip(text)}"
        ) from None
    except RecursionError:
        raise _Usage("--data nests arrays or objects too deeply to store") from None
    except ValueError as exc:  # e.g. an integer of more digits than Python converts
        raise _Usage(f"--data is not usable JSON: {exc}") from None
    return data


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
    data = _parse_data(args.data)
    if args.wait:
        return _emit_and_wait(args, data)
    with _opened(args, create=True) as store:
        result = _emit(store, args, data)
        started_none = result.created and not result.run_ids
        why = why_no_run(args.name, data, result.event_id, store.agents()) if started_none else ""
    if args.json:
        _print_json(
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
    with _opened(args, create=True) as store:
        result = _emit(store, args, data)
        if not result.run_ids:
            print(
                f"event {result.event_id} started no run: no registered agent is triggered "
                f"by {args.name!r}",
                file=sys.stderr,
            )
            return EXIT_FAILED
        return wait_and_report(store, result.run_ids, timeout, as_json=args.json)


# -- run list / cancel -------------------------------------------------------------------


def cmd_run_list(args: argparse.Namespace) -> int:
    if args.limit < 1:
        raise _Usage(f"--limit must be at least 1, not {args.limit}")
    with _opened(args, create=False) as store:
        runs = store.list_runs(limit=args.limit, status=args.status, agent=args.agent)
        now = time.time()
        objs = [
            run_json(r, store.get_lease(r.id) if r.status == "running" else None, now=now)
            for r in runs
        ]
    if args.json:
        _print_json(objs)
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
    with _opened(args, create=False) as store:
        run = store.request_cancel(args.run_id)
    if run.status == "cancelled":
        print(f"run {run.id} cancelled")
    elif run.status in FINISHED:
        print(f"run {run.id} had already finished ({run.status}); nothing to cancel")
    else:
        print(f"run {run.id} will stop at its next step boundary")
    return 0


def cmd_run_pause(args: argparse.Namespace) -> int:
    with _opened(args, create=False) as store:
        run = store.pause_run(args.run_id)
    if run.status == "paused":
        print(f"run {run.id} paused; `ironflow run resume {run.id}` lets it go on")
    elif run.status in FINISHED:
        print(f"run {run.id} had already finished ({run.status}); nothing to pause")
    else:
        print(f"run {run.id} ({run.status}) will pause at its next step boundary")
    return 0


def cmd_run_resume(args: argparse.Namespace) -> int:
    with _opened(args, create=False) as store:
        run = store.resume_run(args.run_id, from_step=args.from_step)
    if args.from_step is not None:
        print(f"run {run.id} re-runs from step {args.from_step} (attempt {run.attempt + 1})")
    else:
        print(f"run {run.id} is {run.status}")
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
    with _opened(args, create=False) as store:
        run = store.get_run(args.run_id)
        if run.status in FINISHED:
            raise _Usage(
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
        raise _Usage("--module is for --at (to fold the memory projection as it was then)")
    with _opened(args, create=False) as store:
        run = store.get_run(args.run_id)
        steps = store.get_steps(run.id)
        lease = store.get_lease(run.id)
        children = [(c, _status_of(store, c["id"])) for c in children_of(steps)]
    obj = run_with_steps_json(run, steps, lease)
    if args.json:
        _print_json(obj)
        return 0
    for line in inspect_lines(run, steps, lease, obj, children, traceback=args.traceback):
        print(line)
    return 0


def _status_of(store: Store, run_id: str) -> str:
    try:
        return store.get_run(run_id).status
    except IronflowError:
        return "unknown"


# -- retention ---------------------------------------------------------------------------


def cmd_run_prune(args: argparse.Namespace) -> int:
    from ironflow.store._retention import parse_age

    age = parse_age(args.older_than)
    with _opened(args, create=False) as store:
        result = store.prune_runs(older_than=age, statuses=args.status, dry_run=args.dry_run)
    if args.json:
        _print_json(
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


def cmd_store_compact(args: argparse.Namespace) -> int:
    from ironflow.store._compact import compact

    if not (args.data_dir or args.store) and server_url():
        raise _Usage(
            "store compact rewrites a data directory, not a server's: stop the server, then "
            "run it with --data-dir DIR (the directory the server served)"
        )
    path = resolve_location(args.store, args.data_dir)
    if not isinstance(path, Path):
        raise _Usage(
            "store compact rewrites an LMDB data directory; PostgreSQL gives back the space "
            "of pruned runs itself (autovacuum, or VACUUM FULL in a quiet hour)"
        )
    if not (path / "data.mdb").is_file():
        raise _Usage(f"no Ironflow data directory at {path}; pass --data-dir")
    before, after = compact(path)
    print(f"compacted {path}: data.mdb {before / 1e6:.1f} MB -> {after / 1e6:.1f} MB")
    return 0


def cmd_store_migrate(args: argparse.Namespace) -> int:
    from ironflow.store._postgres import migrate, safe_url

    where = resolve_location(args.store, None)
    if not isinstance(where, str):
        raise _Usage(
            "store migrate creates or upgrades a PostgreSQL database's schema: pass --store "
            "postgresql://USER@HOST/DB (or set IRONFLOW_STORE). An LMDB data directory needs "
            "no migration: the first worker creates it"
        )
    before, after = migrate(where)
    if before == after:
        print(f"the database {safe_url(where)} is at schema version {after}: nothing to do")
    elif before is None:
        print(f"created the Ironflow schema (version {after}) in {safe_url(where)}")
    else:
        print(f"upgraded {safe_url(where)} from schema version {before} to {after}")
    return 0


# -- worker ------------------------------------------------------------------------------


def cmd_worker(args: argparse.Namespace) -> int:
    from ironflow._cli._worker import run_worker

    return run_worker(args)


# -- projections -------------------------------------------------------------------------


def cmd_projection_get(args: argparse.Namespace) -> int:
    from ironflow.server._views import projection_json

    with _opened(args, create=False) as store:
        state = store.get_projection(args.name)
    if args.json:
        _print_json(projection_json(state))
        return 0
    kind = "partitioned, " if state.partitioned else ""
    updated = iso(state.updated_at) or "never"
    print(f"projection {state.name} ({kind}position {state.position}, updated {updated})")
    print(json.dumps(state.state, indent=2, ensure_ascii=False))
    return 0


def cmd_projection_list(args: argparse.Namespace) -> int:
    from ironflow.server._views import runner_alive

    with _opened(args, create=False) as store:
        statuses = store.list_projections()
    objs = [
        {
            "name": s.name,
            "events": list(s.events),
            "partitioned": s.partitioned,
            "position": s.position,
            "updated_at": iso(s.updated_at),
            "runner": s.runner.id if s.runner is not None and runner_alive(s) else None,
            "rebuild_pending": s.rebuild_pending,
        }
        for s in statuses
    ]
    if args.json:
        _print_json(objs)
        return 0
    if not objs:
        print("no projections yet; a worker registers the ones its module defines")
        return 0
    rows = [("NAME", "POSITION", "UPDATED", "RUNNER", "EVENTS")]
    for s, o in zip(statuses, objs, strict=True):
        rows.append(
            (
                s.name,
                str(s.position) + (" (rebuild pending)" if s.rebuild_pending else ""),
                str(o["updated_at"] or "never").replace("T", " "),
                str(o["runner"] or "-"),
                ",".join(s.events),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0


def cmd_projection_rebuild(args: argparse.Namespace) -> int:
    from ironflow._cli._client import wait_for_rebuild
    from ironflow.server._views import runner_alive

    with _opened(args, create=False) as store:
        status = store.projection_status(args.name)
        if runner_alive(status):
            assert status.runner is not None
            ticket = store.request_projection_rebuild(args.name)
            print(f"asked worker {status.runner.id} to rebuild {args.name} from the log...")
            done = wait_for_rebuild(store, args.name, ticket, timeout=args.timeout)
            print(f"projection {args.name} rebuilt: position {done.position}")
        elif args.module:
            done = _rebuild_here(store, args.name, args.module)
            print(f"projection {args.name} rebuilt here from the log: position {done.position}")
        else:
            store.request_projection_rebuild(args.name)
            print(
                f"rebuild of projection {args.name} requested. No worker serves it now: the "
                "next worker that does rebuilds it before applying new events (or pass "
                "--module MODULE to rebuild it here)"
            )
    return 0


def _rebuild_here(store: Store, name: str, module_name: str) -> Any:
    from ironflow._agent._memory import projections_in
    from ironflow._worker._identity import this_worker
    from ironflow._worker._loader import load_module
    from ironflow._worker._projections import ProjectionRunner

    defs = {d.name: d for d in projections_in(vars(load_module(module_name)))}
    defn = defs.get(name)
    if defn is None:
        others = f" (it defines: {', '.join(sorted(defs))})" if defs else ""
        raise _Usage(f"module {module_name!r} defines no @projection named {name!r}{others}")
    store.register_projections([defn.spec()])
    runner = ProjectionRunner(store, defn, this_worker(), ttl=300.0)
    try:
        return runner.rebuild_now()
    finally:
        runner.release()


# -- the parser --------------------------------------------------------------------------


def _add_data_dir(p: argparse.ArgumentParser, *, timeout: bool = True) -> None:
    """Where the command's store is: --store, --data-dir, and --timeout for a server."""
    add_store_argument(p)
    p.add_argument(
        "--data-dir",
        metavar="DIR",
        help="data directory (default: $IRONFLOW_DATA_DIR, else ./.ironflow); "
        "given, it is used even when IRONFLOW_URL is set",
    )
    if timeout:
        p.add_argument(
            "--timeout",
            type=_seconds,
            default=DEFAULT_TIMEOUT,
            metavar="SECONDS",
            help=f"give up when the server (IRONFLOW_URL) or the PostgreSQL database has not "
            f"answered for SECONDS (default {DEFAULT_TIMEOUT:g})",
        )


def duration(text: str) -> float:
    """A ``--timeout`` of the commands that wait: ``30s``, ``2m``, ``1h``, or seconds."""
    from ironflow._pure._durations import parse_duration
    from ironflow.errors import InvalidInputError

    try:
        return parse_duration(text, "--timeout")
    except InvalidInputError:
        raise argparse.ArgumentTypeError(
            f"expected a duration like 30s, 2m, 1h or seconds like 10, not {text!r}"
        ) from None


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected positive seconds, like 10 or 2.5, not {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ironflow",
        description="Durable AI agents: emit events, list and inspect runs, serve workers.",
        epilog="Set IRONFLOW_URL to go through a server; otherwise commands open the data "
        "directory directly.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

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
    _add_data_dir(emit, timeout=False)
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
    _add_data_dir(lst)
    lst.set_defaults(func=cmd_run_list)
    cancel = run_sub.add_parser(
        "cancel",
        help="cancel a run at its next step boundary",
        description="Cancel a pending, sleeping or waiting run now, or a running one at its "
        "next step boundary; its unfinished child runs are cancelled with it.",
    )
    cancel.add_argument("run_id", metavar="RUN_ID")
    _add_data_dir(cancel)
    cancel.set_defaults(func=cmd_run_cancel)
    pause = run_sub.add_parser(
        "pause",
        help="pause a run at its next step boundary",
        description="Pause a pending or queued run now, a running one at its next step "
        "boundary, a sleeping or waiting one when it wakes; `run resume` lets it go on.",
    )
    pause.add_argument("run_id", metavar="RUN_ID")
    _add_data_dir(pause)
    pause.set_defaults(func=cmd_run_pause)
    resume = run_sub.add_parser(
        "resume",
        help="resume a paused run, or re-run a finished one from a step",
        description="Let a paused run go on. With --from-step, re-run a finished run "
        "from that step: the records before it are kept, the step and those after it "
        "run again, and `inspect` lists the re-run.",
    )
    resume.add_argument("run_id", metavar="RUN_ID")
    resume.add_argument(
        "--from-step", metavar="STEP_ID", help="the step id to re-run from (see `inspect`)"
    )
    _add_data_dir(resume)
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
    _add_data_dir(prune)
    prune.set_defaults(func=cmd_run_prune)
    from ironflow._cli._debug import add_run_commands

    add_run_commands(run_sub, _add_data_dir)

    approve = sub.add_parser(
        "approve",
        help="answer a run's ctx.approve(NAME)",
        description="Approve (or with --reject, reject) what a run asked with ctx.approve(NAME): "
        "emits the event agent.approve.NAME for RUN_ID, which any emitter could send too.",
    )
    approve.add_argument("run_id", metavar="RUN_ID")
    approve.add_argument("name", metavar="NAME", help="the approval's name, as in ctx.approve")
    approve.add_argument("--reject", action="store_true", help="reject instead of approving")
    approve.add_argument("--reason", metavar="TEXT", help="why, for the run and the record")
    approve.add_argument(
        "--approver", metavar="WHO", help="who answers (default: the current user name)"
    )
    _add_data_dir(approve)
    approve.set_defaults(func=cmd_approve)

    inspect = sub.add_parser(
        "inspect",
        help="show a run and its recorded steps",
        description="Show a run and the timeline of its recorded steps; a failure shows "
        f"the line of your code that raised it. {LEGEND}.",
    )
    inspect.add_argument("run_id", metavar="RUN_ID")
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
    _add_data_dir(inspect)
    inspect.set_defaults(func=cmd_inspect)

    from ironflow._cli._worker import WORKER_DESCRIPTION, WORKER_HELP, add_worker_arguments

    worker = sub.add_parser(
        "worker",
        help=WORKER_HELP + " (the same as python -m ironflow.run worker)",
        description=WORKER_DESCRIPTION,
    )
    add_worker_arguments(worker)
    worker.set_defaults(func=cmd_worker)

    proj = sub.add_parser(
        "projection",
        help="read and rebuild projections",
        description="Read and rebuild projections: states folded from the event log.",
    )
    proj_sub = proj.add_subparsers(dest="projection_command", metavar="SUBCOMMAND", required=True)
    pget = proj_sub.add_parser(
        "get",
        help="print a projection's state",
        description="Print a projection's state and the log position it reflects.",
    )
    pget.add_argument("name", metavar="NAME")
    pget.add_argument(
        "--json",
        action="store_true",
        help='print {"name", "state": {"state", "position", "updated_at"}}, as the HTTP API',
    )
    _add_data_dir(pget)
    pget.set_defaults(func=cmd_projection_get)
    plist = proj_sub.add_parser(
        "list", help="list projections", description="List the registered projections."
    )
    plist.add_argument("--json", action="store_true", help="print a JSON array")
    _add_data_dir(plist)
    plist.set_defaults(func=cmd_projection_list)
    prebuild = proj_sub.add_parser(
        "rebuild",
        help="rebuild a projection from the event log",
        description="Fold the whole event log into fresh state and replace the projection's "
        "state with it in one transaction. A worker serving the projection does it (this "
        "waits for it); with no such worker, --module MODULE does it here, else the request "
        "waits for the next worker that serves it.",
    )
    prebuild.add_argument("name", metavar="NAME")
    prebuild.add_argument(
        "--module",
        metavar="MODULE",
        help="the module defining the projection, to rebuild here when no worker serves it",
    )
    prebuild.add_argument(
        "--timeout",
        type=_seconds,
        default=60.0,
        metavar="SECONDS",
        help="how long to wait for the serving worker, and for the server with "
        "IRONFLOW_URL (default 60)",
    )
    _add_data_dir(prebuild, timeout=False)
    prebuild.set_defaults(func=cmd_projection_rebuild)

    store_cmd = sub.add_parser(
        "store",
        help="maintain a store (compact a data directory, migrate a database)",
        description="Maintain a store: compact an LMDB data directory, create or upgrade "
        "a PostgreSQL database's schema.",
    )
    store_sub = store_cmd.add_subparsers(dest="store_command", metavar="SUBCOMMAND", required=True)
    compact = store_sub.add_parser(
        "compact",
        help="rewrite the data file without its free pages",
        description="Rewrite data.mdb without the pages pruning freed, checked and swapped "
        "in atomically. Refuses while any process (a worker, the server) has the data "
        "directory open: stop them first.",
    )
    _add_data_dir(compact, timeout=False)
    compact.set_defaults(func=cmd_store_compact)
    migrate = store_sub.add_parser(
        "migrate",
        help="create or upgrade a PostgreSQL database's Ironflow schema",
        description="Create the Ironflow tables in the PostgreSQL database --store names "
        "(or $IRONFLOW_STORE), or upgrade them to this version's schema, in one "
        "transaction. Run it before the first server or worker, and after upgrading "
        "Ironflow: servers, workers and commands refuse a database of another schema "
        "version and never change it themselves. Running it again changes nothing.",
    )
    add_store_argument(migrate)
    migrate.set_defaults(func=cmd_store_migrate)

    # The server's module imports aiohttp only when `serve` runs, not here.
    from ironflow.server._main import add_serve_command

    add_serve_command(sub)

    from ironflow._cli._live import add_live_commands

    add_live_commands(sub)

    from ironflow._cli._debug import add_debug_commands

    add_debug_commands(sub, _add_data_dir)

    from ironflow._cli._mcp import add_mcp_command

    add_mcp_command(sub)

    for extend in _EXTENSIONS:
        extend(sub)
    return parser


#: Other modules add their subcommands here (the server adds ``serve``).
_EXTENSIONS: list[Callable[[Any], None]] = []


def _fail(message: str) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(EXIT_USAGE)


def _clip(text: str, width: int = 80) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def _check_utf8(argv: Sequence[str]) -> None:
    """Refuse arguments a shell could not decode (they reach Python as lone surrogates)."""
    for arg in argv:
        try:
            arg.encode()
        except UnicodeEncodeError:
            shown = _clip(arg.encode("utf-8", "backslashreplace").decode())
            _fail(f"the argument {shown!r} is not valid UTF-8 text; pass it as UTF-8")


def main(argv: Sequence[str] | None = None) -> int:
    _check_utf8(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except RecursionError:
        _fail("a value nests arrays or objects too deeply to store")
    except _Usage as exc:
        _fail(str(exc))
    except ConfigError as exc:
        _fail(str(exc))
    except ServerUnavailableError as exc:
        _fail(f"{exc} (--timeout SECONDS waits longer)")
    except IronflowError as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())

"""Commands that wait for things to happen: ``invoke``, ``emit --wait``, ``events tail``.

Exit status: 0 when every run waited for completed, 1 when one failed or was cancelled,
124 when the wait ran out first (the run goes on), 2 for bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

from ironflow.errors import WaitTimeoutError
from ironflow.server._views import event_json, run_json
from ironflow.store import Run, Store
from ironflow.store._triggers import invoke_event

__all__ = ["EXIT_FAILED", "EXIT_TIMEOUT", "WAIT_DEFAULT", "add_live_commands", "wait_and_report"]

EXIT_FAILED = 1
#: How long invoke and emit --wait wait for runs unless told (--timeout).
WAIT_DEFAULT = 30.0
EXIT_TIMEOUT = 124  # as GNU timeout(1) says a command ran out of time


def wait_and_report(store: Store, run_ids: Sequence[str], timeout: float, *, as_json: bool) -> int:
    """Wait for every run, print each outcome, and return the exit status."""
    from ironflow._cli._client import Runs

    runs = Runs(store)
    deadline = time.monotonic() + timeout
    finished: list[Run] = []
    late: list[Run] = []
    for run_id in run_ids:
        try:
            finished.append(runs.wait(run_id, timeout=max(0.0, deadline - time.monotonic())))
        except WaitTimeoutError as exc:
            late.append(exc.run)
    if as_json:
        objs = [run_json(r) for r in [*finished, *late]]
        print(json.dumps(objs[0] if len(run_ids) == 1 else objs, indent=2, ensure_ascii=False))
    else:
        for run in finished:
            _report(run, many=len(run_ids) > 1)
    for run in late:
        print(
            f"run {run.id} did not finish within {timeout:g}s (it is {run.status}); it goes "
            f"on: `ironflow inspect {run.id}` shows where it is",
            file=sys.stderr,
        )
    if late:
        return EXIT_TIMEOUT
    return 0 if all(r.status == "completed" for r in finished) else EXIT_FAILED


def _report(run: Run, *, many: bool) -> None:
    if run.status == "completed":
        if many:
            print(f"run {run.id} completed: {json.dumps(run.output, ensure_ascii=False)}")
        else:
            print(json.dumps(run.output, indent=2, ensure_ascii=False))
    elif run.error is not None:
        where = f" (at step {run.error.step_id})" if run.error.step_id else ""
        print(
            f"run {run.id} {run.status}: {run.error.type}: {run.error.message}{where}",
            file=sys.stderr,
        )
    else:
        print(f"run {run.id} {run.status}", file=sys.stderr)


def cmd_invoke(args: argparse.Namespace) -> int:
    from ironflow._cli._common import Usage, opened, parse_data

    data = parse_data(args.data)
    timeout = WAIT_DEFAULT if args.timeout is None else args.timeout
    with opened(args, create=False) as store:
        known = [a.id for a in store.agents()]
        if args.agent not in known:
            raise Usage(
                f"no agent {args.agent!r} is registered here (known: "
                f"{', '.join(sorted(known)) or 'none'}); start a worker whose module defines "
                "it: agents are registered when their worker starts"
            )
        result = store.emit(invoke_event(args.agent), data, id=args.id)
        if not result.run_ids:
            print(
                f"agent {args.agent!r} started no run for event {result.event_id}"
                + ("" if result.created else " (that --id was emitted before)")
                + "; its filter or debounce may have held the event back",
                file=sys.stderr,
            )
            return EXIT_FAILED
        return wait_and_report(store, result.run_ids, timeout, as_json=args.json)


def cmd_events_tail(args: argparse.Namespace) -> int:
    from ironflow._cli._client import Events
    from ironflow._cli._common import opened

    after = 0 if args.from_start else args.after
    with opened(args, create=False) as store:
        for event in Events(store).tail(args.pattern, after_seq=after, timeout=args.timeout):
            if args.json:
                print(json.dumps(event_json(event), ensure_ascii=False), flush=True)
            else:
                data = json.dumps(event.data, ensure_ascii=False)
                shown = data if len(data) <= 100 else data[:97] + "..."
                print(f"{event_json(event)['ts']}  #{event.seq}  {event.name}  {shown}", flush=True)
    return 0


def add_live_commands(sub: Any) -> None:
    from ironflow._cli._common import add_data_dir, duration

    invoke = sub.add_parser(
        "invoke",
        help="start a run of one agent, wait for it, print its output",
        description="Emit agent.invoke.AGENT_ID, which starts a run of that agent alone "
        "(whatever its triggers), wait for the run to finish and print its output as JSON. "
        "Exit 0 when it completed, 1 when it failed or was cancelled (its error on "
        "stderr), 124 when --timeout passed first (the run goes on).",
    )
    invoke.add_argument("agent", metavar="AGENT_ID", help="the agent's id, e.g. doc-processor")
    invoke.add_argument(
        "--data", default="{}", metavar="JSON", help="the run's event data as JSON (default {})"
    )
    invoke.add_argument(
        "--id", metavar="KEY", help="idempotency key: invoked twice with it, one run starts"
    )
    invoke.add_argument(
        "--timeout",
        type=duration,
        metavar="DURATION",
        help="how long to wait for the run (and the server) to answer: 30s, 2m, or seconds "
        "(default 30s)",
    )
    invoke.add_argument("--json", action="store_true", help="print the finished run as JSON")
    add_data_dir(invoke, timeout=False)
    invoke.set_defaults(func=cmd_invoke)

    events = sub.add_parser("events", help="watch the event log", description="The event log.")
    events_sub = events.add_subparsers(dest="events_command", metavar="SUBCOMMAND", required=True)
    tail = events_sub.add_parser(
        "tail",
        help="print events as they are emitted",
        description="Print each event as it is appended to the log, until Ctrl-C. Through "
        "a server (IRONFLOW_URL) it reads GET /api/v1/events/stream.",
    )
    tail.add_argument(
        "pattern",
        nargs="?",
        metavar="PATTERN",
        help="only events whose name matches, as triggers do: order.* (one part), "
        "order.> (one or more)",
    )
    start = tail.add_mutually_exclusive_group()
    start.add_argument(
        "--after", type=int, metavar="SEQ", help="start after this log position (default: now)"
    )
    start.add_argument("--from-start", action="store_true", help="print the whole log first")
    tail.add_argument(
        "--timeout",
        type=duration,
        metavar="DURATION",
        help="stop after this long: 30s, 2m, or seconds (default: never, until Ctrl-C)",
    )
    tail.add_argument("--json", action="store_true", help="one JSON object per line")
    add_data_dir(tail, timeout=False)
    tail.set_defaults(func=cmd_events_tail)

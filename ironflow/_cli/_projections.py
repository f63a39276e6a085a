"""``ironflow projection get|list|rebuild``: read and rebuild projections, the states folded
from the event log."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ironflow._cli._common import Usage, add_data_dir, opened, print_json, seconds
from ironflow.server._views import iso
from ironflow.store import Store

__all__ = ["add_commands"]


def cmd_projection_get(args: argparse.Namespace) -> int:
    from ironflow.server._views import projection_json

    with opened(args, create=False) as store:
        state = store.get_projection(args.name)
    if args.json:
        print_json(projection_json(state))
        return 0
    kind = "partitioned, " if state.partitioned else ""
    updated = iso(state.updated_at) or "never"
    print(f"projection {state.name} ({kind}position {state.position}, updated {updated})")
    print(json.dumps(state.state, indent=2, ensure_ascii=False))
    return 0


def cmd_projection_list(args: argparse.Namespace) -> int:
    from ironflow.server._views import runner_alive

    with opened(args, create=False) as store:
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
        print_json(objs)
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

    with opened(args, create=False) as store:
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
        raise Usage(f"module {module_name!r} defines no @projection named {name!r}{others}")
    store.register_projections([defn.spec()])
    runner = ProjectionRunner(store, defn, this_worker(), ttl=300.0)
    try:
        return runner.rebuild_now()
    finally:
        runner.release()


# -- the arguments -----------------------------------------------------------------------


def add_commands(sub: Any) -> None:
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
    pget.add_argument(
        "name", metavar="NAME", help="the projection's name; `ironflow projection list` shows them"
    )
    pget.add_argument(
        "--json",
        action="store_true",
        help='print {"name", "state": {"state", "position", "updated_at"}}, as the HTTP API',
    )
    add_data_dir(pget)
    pget.set_defaults(func=cmd_projection_get)
    plist = proj_sub.add_parser(
        "list", help="list projections", description="List the registered projections."
    )
    plist.add_argument("--json", action="store_true", help="print a JSON array")
    add_data_dir(plist)
    plist.set_defaults(func=cmd_projection_list)
    prebuild = proj_sub.add_parser(
        "rebuild",
        help="rebuild a projection from the event log",
        description="Fold the whole event log into fresh state and replace the projection's "
        "state with it in one transaction. A worker serving the projection does it (this "
        "waits for it); with no such worker, --module MODULE does it here, else the request "
        "waits for the next worker that serves it.",
    )
    prebuild.add_argument(
        "name", metavar="NAME", help="the projection's name; `ironflow projection list` shows them"
    )
    prebuild.add_argument(
        "--module",
        metavar="MODULE",
        help="the module defining the projection, to rebuild here when no worker serves it",
    )
    prebuild.add_argument(
        "--timeout",
        type=seconds,
        default=60.0,
        metavar="SECONDS",
        help="how long to wait for the serving worker, and for the server with "
        "IRONFLOW_URL (default 60)",
    )
    add_data_dir(prebuild, timeout=False)
    prebuild.set_defaults(func=cmd_projection_rebuild)

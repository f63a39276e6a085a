"""``python -m ironflow.run worker MODULE``: serve the agents a module defines."""

from __future__ import annotations

import argparse
import sys

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ironflow.run",
        description="Run Ironflow processes.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    worker = sub.add_parser(
        "worker",
        help="serve every @agent and @projection a module defines",
        description=(
            "Import MODULE and serve every @agent it defines: lease their runs, execute them "
            "step by step, resume runs orphaned by a crashed worker; and keep every "
            "@projection it defines up to date with the event log. SIGINT/SIGTERM drain. "
            "With IRONFLOW_URL set, the worker goes through that server; otherwise it opens "
            "the data directory directly."
        ),
    )
    worker.add_argument(
        "module",
        metavar="MODULE",
        help="dotted module name (examples.doc_processor.worker) or a .py path",
    )
    worker.add_argument(
        "--concurrency", type=int, default=8, metavar="N", help="runs executed at once (default 8)"
    )
    worker.add_argument(
        "--data-dir",
        metavar="DIR",
        help="data directory (default $IRONFLOW_DATA_DIR or ./.ironflow)",
    )
    worker.add_argument(
        "--lease-ttl",
        type=float,
        default=15.0,
        metavar="SECONDS",
        help="seconds a run stays leased without a heartbeat (default 15)",
    )
    worker.add_argument("--quiet", action="store_true", help="log warnings and errors only")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    import logging

    from ironflow._agent._dsl import definitions_in
    from ironflow._agent._memory import projections_in
    from ironflow._worker._loader import load_module
    from ironflow._worker._worker import Worker, configure_logging
    from ironflow.errors import IronflowError

    configure_logging(logging.WARNING if args.quiet else logging.INFO)
    try:
        module = load_module(args.module)
        agents = definitions_in(vars(module))
        projections = projections_in(vars(module))
        if not agents and not projections:
            print(
                f"error: module {args.module!r} defines no @agent functions; decorate a "
                "handler with @ironflow.agent(id=..., triggers=[...])",
                file=sys.stderr,
            )
            return 2
        worker = Worker(
            agents,
            projections=projections,
            data_dir=args.data_dir,
            concurrency=args.concurrency,
            lease_ttl=args.lease_ttl,
        )
    except IronflowError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    worker.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())

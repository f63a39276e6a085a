"""``python -m ironflow.run worker MODULE``: serve the agents a module defines.

The same command as ``ironflow worker``: both use the one parser in
``ironflow._cli._worker``.
"""

from __future__ import annotations

import argparse
import sys

from ironflow._cli._worker import WORKER_DESCRIPTION, WORKER_HELP, add_worker_arguments, run_worker

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ironflow.run",
        description="Run Ironflow processes (the same as `ironflow worker`).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    worker = sub.add_parser("worker", help=WORKER_HELP, description=WORKER_DESCRIPTION)
    add_worker_arguments(worker)
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_worker(_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

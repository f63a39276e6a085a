"""``ironflow ...``: the command line, thin over a store; here, its table of commands.

Each group of commands lives with its handlers and its arguments: ``_runs`` (emit, run,
approve, inspect), ``_worker``, ``_projections``, ``_stores``, ``ironflow.server._main``
(serve), ``_live`` (invoke, events tail), ``_debug`` (replay; run export, import, fork)
and ``_mcp``. What they share (the store a command opens, its usage errors, the
arguments every command takes) is ``_common``. Bad input gets one line saying what to fix
and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn

from ironflow._cli import _projections, _runs, _stores
from ironflow._cli._common import add_data_dir, clip
from ironflow._cli._worker import (
    WORKER_DESCRIPTION,
    WORKER_HELP,
    add_worker_arguments,
    run_worker,
)
from ironflow.errors import ConfigError, IronflowError, ServerUnavailableError

__all__ = ["main"]

EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ironflow",
        description="Durable AI agents: emit events, list and inspect runs, serve workers.",
        epilog="Set IRONFLOW_URL to go through a server; otherwise commands open the store "
        "directly: --store URL_OR_DIR or $IRONFLOW_STORE (a postgresql:// URL, or an LMDB "
        "data directory), else ./.ironflow.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    _runs.add_commands(sub)

    worker = sub.add_parser(
        "worker",
        help=WORKER_HELP + " (the same as python -m ironflow.run worker)",
        description=WORKER_DESCRIPTION,
    )
    add_worker_arguments(worker)
    worker.set_defaults(func=run_worker)

    _projections.add_commands(sub)
    _stores.add_commands(sub)

    # The server's module imports aiohttp only when `serve` runs, not here.
    from ironflow.server._main import add_serve_command

    add_serve_command(sub)

    from ironflow._cli._live import add_live_commands

    add_live_commands(sub)

    from ironflow._cli._debug import add_debug_commands

    add_debug_commands(sub, add_data_dir)

    from ironflow._cli._mcp import add_mcp_command

    add_mcp_command(sub)

    return parser


def _fail(message: str) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(EXIT_USAGE)


def _check_utf8(argv: Sequence[str]) -> None:
    """Refuse arguments a shell could not decode (they reach Python as lone surrogates)."""
    for arg in argv:
        try:
            arg.encode()
        except UnicodeEncodeError:
            shown = clip(arg.encode("utf-8", "backslashreplace").decode())
            _fail(f"the argument {shown!r} is not valid UTF-8 text; pass it as UTF-8")


def main(argv: Sequence[str] | None = None) -> int:
    _check_utf8(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except RecursionError:
        _fail("a value nests arrays or objects too deeply to store")
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

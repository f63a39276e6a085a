"""What every ``ironflow`` command shares: its store, its usage errors, its arguments.

Every command goes through the server when ``IRONFLOW_URL`` is set, else opens the
store ``store/_open.py`` resolves (``--store``, ``--data-dir``, ``IRONFLOW_STORE``, ...).
Bad input raises :class:`Usage`, which ``main`` prints as one line with exit status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ironflow._cli._client import DEFAULT_TIMEOUT
from ironflow._cli._worker import add_store_argument
from ironflow.errors import ConfigError
from ironflow.store import Store
from ironflow.store._open import open_location, open_store, resolve_location, server_url

__all__ = [
    "Usage",
    "add_data_dir",
    "clip",
    "duration",
    "opened",
    "parse_data",
    "print_json",
    "seconds",
    "store_for",
]


class Usage(ConfigError):
    """A user error: print one line and exit 2.

    A ConfigError, so it is caught as one even when raised by a module imported a
    second time (``python -m ironflow._cli._main`` runs that module as ``__main__``).
    """


def store_for(args: argparse.Namespace, *, create: bool) -> Store:
    """The store the command's arguments (or the environment) name."""
    given = getattr(args, "store", None) or getattr(args, "data_dir", None)
    timeout = getattr(args, "timeout", None)
    give_up = DEFAULT_TIMEOUT if timeout is None else timeout
    if not given and server_url():
        return open_store(give_up_after=give_up)
    where = resolve_location(getattr(args, "store", None), getattr(args, "data_dir", None))
    if isinstance(where, Path) and not create and not (where / "data.mdb").exists():
        raise Usage(
            f"no Ironflow data directory at {where}; start a worker there first, or pass "
            "--store URL_OR_DIR (or set IRONFLOW_STORE, or IRONFLOW_URL for a server)"
        )
    return open_location(where, give_up_after=give_up)


@contextlib.contextmanager
def opened(args: argparse.Namespace, *, create: bool) -> Iterator[Store]:
    """The command's store, closed when the command is done with it."""
    store = store_for(args, create=create)
    try:
        yield store
    finally:
        store.close()


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False))


def clip(text: str, width: int = 80) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def parse_data(text: str) -> Any:
    """``--data``: JSON text, or a usage error saying what is wrong with it."""
    try:
        data = json.loads(text)
        # JSON may spell lone surrogates ("\\ud800"), which are not text and cannot be stored.
        json.dumps(data, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        raise Usage(
            "--data holds a lone surrogate escape (\\ud800 to \\udfff), which is not text"
        ) from None
    except json.JSONDecodeError as exc:
        raise Usage(
            f"--data is not valid JSON ({exc.msg} at column {exc.colno}): {clip(text)}"
        ) from None
    except RecursionError:
        raise Usage("--data nests arrays or objects too deeply to store") from None
    except ValueError as exc:  # e.g. an integer of more digits than Python converts
        raise Usage(f"--data is not usable JSON: {exc}") from None
    return data


# -- arguments ---------------------------------------------------------------------------


def add_run_id(parser: argparse.ArgumentParser) -> None:
    """The RUN_ID positional of a command about one run."""
    parser.add_argument(
        "run_id",
        metavar="RUN_ID",
        help="the run's id (run_...), as `ironflow emit` printed it; `ironflow run list` "
        "shows them",
    )


def add_data_dir(p: argparse.ArgumentParser, *, timeout: bool = True) -> None:
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
            type=seconds,
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


def seconds(text: str) -> float:
    """A positive number of seconds, as ``--timeout SECONDS`` takes it."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected positive seconds, like 10 or 2.5, not {text!r}")
    return value

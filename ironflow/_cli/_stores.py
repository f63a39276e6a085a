"""``ironflow store compact|migrate``: maintain a store (compact an LMDB data directory,
create or upgrade a PostgreSQL database's schema)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ironflow._cli._common import Usage, add_data_dir
from ironflow._cli._worker import add_store_argument
from ironflow.store._open import resolve_location, server_url

__all__ = ["add_commands"]


def cmd_store_compact(args: argparse.Namespace) -> int:
    from ironflow.store._compact import compact

    if not (args.data_dir or args.store) and server_url():
        raise Usage(
            "store compact rewrites a data directory, not a server's: stop the server, then "
            "run it with --data-dir DIR (the directory the server served)"
        )
    path = resolve_location(args.store, args.data_dir)
    if not isinstance(path, Path):
        raise Usage(
            "store compact rewrites an LMDB data directory; PostgreSQL gives back the space "
            "of pruned runs itself (autovacuum, or VACUUM FULL in a quiet hour)"
        )
    if not (path / "data.mdb").is_file():
        raise Usage(f"no Ironflow data directory at {path}; pass --data-dir")
    before, after = compact(path)
    print(f"compacted {path}: data.mdb {before / 1e6:.1f} MB -> {after / 1e6:.1f} MB")
    return 0


def cmd_store_migrate(args: argparse.Namespace) -> int:
    from ironflow.store._pgschema import migrate
    from ironflow.store._pgurl import safe_url

    where = resolve_location(args.store, None)
    if not isinstance(where, str):
        raise Usage(
            "store migrate creates or upgrades a PostgreSQL database's schema: pass --store "
            "postgresql://USER@HOST/DB (or set IRONFLOW_STORE). An LMDB data directory needs "
            "no migration: the first worker creates it"
        )
    before, after = migrate(where, force=args.force)
    if before == after:
        print(f"the database {safe_url(where)} is at schema version {after}: nothing to do")
    elif before is None:
        print(f"created the Ironflow schema (version {after}) in {safe_url(where)}")
    else:
        print(f"upgraded {safe_url(where)} from schema version {before} to {after}")
    return 0


# -- the arguments -----------------------------------------------------------------------


def add_commands(sub: Any) -> None:
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
    add_data_dir(compact, timeout=False)
    compact.set_defaults(func=cmd_store_compact)
    migrate = store_sub.add_parser(
        "migrate",
        help="create or upgrade a PostgreSQL database's Ironflow schema",
        description="Create the Ironflow tables in the PostgreSQL database --store names "
        "(or $IRONFLOW_STORE), or upgrade them to this version's schema, in one "
        "transaction. Run it before the first server or worker, and after upgrading "
        "Ironflow: servers, workers and commands refuse a database of another schema "
        "version and never change it themselves, but check it only when they start: "
        "stop every older server, worker and command first. An upgrade is refused while "
        "other sessions are connected to the database, naming each (pid, address, "
        "application_name). Running it again changes nothing.",
    )
    add_store_argument(migrate)
    migrate.add_argument(
        "--force",
        action="store_true",
        help="upgrade even though other sessions are connected, once you know none of "
        "them is an older Ironflow server, worker or command (psql, a backup, a monitor); "
        "sessions that name themselves Ironflow's are refused even so",
    )
    migrate.set_defaults(func=cmd_store_migrate)

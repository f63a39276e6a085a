"""The PostgreSQL schema: one table per keyspace, its version, and ``ironflow store migrate``.

Every keyspace of ``_backend.TABLES`` is a table ``ironflow_<name>`` of ``bytea`` keys
and values (``bytea`` compares as unsigned bytes, the order the state machine relies
on). A run-scoped table has a ``run`` column holding the run id its key names, and its
primary key is ``(run, k)``: every row of a run can be placed on the run's shard when
the store is sharded by run (docs/architecture.md). A row is found by that key. A
table whose keys begin with the run id (:data:`RUN_FIRST`: a run's steps and spawns)
is scanned by it too, since ``(run, k)`` orders its rows as ``k`` does; the others
have a second index on ``k`` for the ordered scans across runs (the ready queue, due
timers, a topic's waits). Other tables (events, agents, streams, projections) are
keyed by ``k`` alone.

Only :func:`migrate` changes the schema. Servers and workers check the version and
refuse any other, naming the command to run. A process checks it only when it opens
the store, so an older one still running beside a newer schema would go on writing as
its version does (version 3 wrote a cancel or pause without telling the run's lease,
which version 4's steps read): :func:`migrate` refuses to change the version while
other sessions are connected to the database (:func:`_others`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from ironflow.errors import StoreError, StoreFormatError
from ironflow.store._backend import TABLES
from ironflow.store._pgurl import check_url, connect_error, safe_url

__all__ = [
    "RUN_FIRST",
    "RUN_OF",
    "SCHEMA_VERSION",
    "SESSION_PREFIX",
    "check_version",
    "migrate",
    "migrate_sql",
    "schema_version",
    "table_name",
]

#: Bumped with every change of the tables below; :func:`migrate` brings older ones here.
SCHEMA_VERSION = 4

#: How every session of an Ironflow store names itself (``application_name``;
#: ``_pgcommits.session_name``), and how :func:`migrate` tells them from others.
SESSION_PREFIX = "ironflow "

#: The session name of ``ironflow store migrate`` itself.
_MIGRATE = f"{SESSION_PREFIX}migrate"
#: The other client sessions of this database: pid, address, application_name, user.
_OTHER_SESSIONS = (
    b"SELECT pid, coalesce(host(client_addr),"
    b" CASE WHEN client_port = -1 THEN 'a local socket' END, 'an address not shown'),"
    b" coalesce(application_name, ''), coalesce(usename, '')"
    b" FROM pg_stat_activity WHERE datname = current_database()"
    b" AND pid <> pg_backend_pid() AND backend_type = 'client backend' ORDER BY pid"
)


def _whole(key: bytes) -> bytes:
    return key


def _head(key: bytes) -> bytes:
    return key.split(b"\x00", 1)[0]


def _tail(key: bytes) -> bytes:
    return key.rsplit(b"\x00", 1)[-1]


def _after_time(key: bytes) -> bytes:
    return key[8:]


#: Run-scoped tables, and how to read the run id from a key (``_backend.TABLES`` gives
#: each key's layout). A spawn is placed with its parent; a wait, a slot or a cancel
#: key with the run that waits or holds it; a timer with the run it wakes.
RUN_OF: dict[str, Callable[[bytes], bytes]] = {
    "runs": _whole,
    "ready": _whole,
    "leases": _whole,
    "cancels": _whole,
    "paused": _whole,
    "steps": _head,
    "spawns": _head,
    "timers": _after_time,
    "waits": _tail,
    "slots": _tail,
    "cancel_keys": _tail,
}


#: Run-scoped tables whose keys are the run id, ``\0``, then the rest (``_keys.py``): a
#: run's rows are one range of keys, and sorting by ``(run, k)`` sorts by ``k`` (a run
#: id holds no ``\0``, so a shorter id that begins a longer one sorts first either
#: way). Their primary key serves every read, so they have no index on ``k`` (version 3).
RUN_FIRST = frozenset(space for space, run_of in RUN_OF.items() if run_of is _head)


def table_name(space: str) -> str:
    return f"ironflow_{space}"


def _create(space: str) -> list[str]:
    """Version 1's tables (an index on ``k`` for every run-scoped one)."""
    t = table_name(space)
    if space in RUN_OF:
        return [
            f"CREATE TABLE {t} (run bytea NOT NULL, k bytea NOT NULL, v bytea NOT NULL, "
            "PRIMARY KEY (run, k))",
            f"CREATE INDEX {t}_k ON {t} (k)",
        ]
    return [f"CREATE TABLE {t} (k bytea PRIMARY KEY, v bytea NOT NULL)"]


#: Statements taking a schema of version N to N + 1 (index 0: from nothing to 1).
_STEPS: list[list[str]] = [
    [
        "CREATE TABLE ironflow_schema (version integer NOT NULL)",
        *(stmt for space in TABLES for stmt in _create(space)),
    ],
    [
        # One row per write transaction, written in it: after a COMMIT whose answer was
        # lost, the row says whether it committed (transaction ids do not: PostgreSQL
        # hands out again, after a crash, the ids that never reached its WAL). Pruned
        # by the stores (``_pgcommits.PRUNE_COMMITS``); no index on ``at``: a prune is
        # one scan a minute, an index would cost every write.
        "CREATE TABLE ironflow_commits (token bytea PRIMARY KEY, "
        "at timestamptz NOT NULL DEFAULT now())",
    ],
    [
        # RUN_FIRST's tables are read by (run, k) now: their index on k cost each
        # recorded step an index insert (about 22 µs, docs/benchmarks.md) and served
        # nothing the primary key does not.
        "DROP INDEX ironflow_steps_k",
        "DROP INDEX ironflow_spawns_k",
    ],
    [
        # No table changes: what a lease means does. A lease tells its run's cancel and
        # pause requests, and a step reads no other row (``_runs.py``), so a cancel or
        # pause must rewrite the lease: an Ironflow of version 3 does not, and its
        # requests would go unseen by the steps of a newer one on the same database.
        # The version keeps the two apart. Leases written before say nothing of the
        # requests and are read with the tables: no row needs rewriting.
        "COMMENT ON TABLE ironflow_leases IS 'a lease tells its run''s cancel and pause "
        "requests (Lease.cancel_requested, pause_requested; schema 4)'",
    ],
]
assert len(_STEPS) == SCHEMA_VERSION


def migrate_sql(current: int) -> list[str]:
    """The statements that take a schema at version ``current`` (0: none) to this one."""
    if current > SCHEMA_VERSION:
        raise StoreFormatError(
            f"this database's Ironflow schema is version {current}, newer than this "
            f"Ironflow's {SCHEMA_VERSION}: upgrade Ironflow; never migrate down"
        )
    out = [stmt for step in _STEPS[current:] for stmt in step]
    if current == 0:
        out.append(f"INSERT INTO ironflow_schema VALUES ({SCHEMA_VERSION})")
    elif out:
        out.append(f"UPDATE ironflow_schema SET version = {SCHEMA_VERSION}")
    return out


def check_version(found: int | None, where: str) -> None:
    """Refuse a database whose schema is missing, older or newer than this code's."""
    fix = f"ironflow store migrate --store {where}"
    if found is None:
        raise StoreFormatError(
            f"the database {where} has no Ironflow schema; create it with: {fix}"
        )
    if found < SCHEMA_VERSION:
        raise StoreFormatError(
            f"the database {where} holds Ironflow schema version {found}; this Ironflow "
            f"needs version {SCHEMA_VERSION}. Upgrade it with: {fix}"
        )
    if found > SCHEMA_VERSION:
        raise StoreFormatError(
            f"the database {where} holds Ironflow schema version {found}, newer than this "
            f"Ironflow's {SCHEMA_VERSION}: upgrade Ironflow (pip install -U ironflow)"
        )


def schema_version(connect: Callable[[], Any]) -> int | None:
    """The schema version of the database (None: no Ironflow schema)."""
    with connect() as conn:
        row = conn.execute("SELECT to_regclass('ironflow_schema') IS NOT NULL").fetchone()
        if row is None or not row[0]:
            return None
        found = conn.execute("SELECT version FROM ironflow_schema").fetchone()
        return None if found is None else int(found[0])


def migrate(url: str, *, force: bool = False) -> tuple[int | None, int]:
    """Create or upgrade the schema of the database at ``url``; (from, to) versions.

    One transaction under an advisory lock: two migrations at once run one after the
    other, and a failed one leaves the schema as it was. An upgrade is refused while
    other sessions are connected (:func:`_others`); ``force`` upgrades even so when none
    of them names itself Ironflow's.
    """
    from ironflow.store._pgbackend import _psycopg  # psycopg: only for a migration

    check_url(url)
    psycopg, _ = _psycopg()
    try:
        conn = psycopg.connect(url, autocommit=True, connect_timeout=10, application_name=_MIGRATE)
    except psycopg.Error as exc:
        raise connect_error(url, exc, psycopg=psycopg) from None
    try:
        with conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('ironflow migrate'))")
            found = schema_version(lambda: contextlib.nullcontext(conn))
            statements = migrate_sql(found or 0)
            if found is not None and statements:
                _others(conn, safe_url(url), found, force=force)
            for stmt in statements:
                conn.execute(stmt.encode())
    except psycopg.errors.InsufficientPrivilege as exc:
        raise StoreFormatError(
            f"the user of {safe_url(url)} may not create the Ironflow tables ({exc}); "
            "migrate as the database's owner, or grant it: GRANT CREATE ON SCHEMA public "
            "TO USER. Nothing was changed"
        ) from None
    return found, SCHEMA_VERSION


def _others(conn: Any, where: str, found: int, *, force: bool) -> None:
    """Refuse to upgrade while other sessions are connected to the database.

    An Ironflow server, worker or command of the older version left running would go on
    writing as that version does (the module says why that loses requests). Sessions of
    this Ironflow and later name themselves (:data:`SESSION_PREFIX`); older ones name
    none, and cannot be told from psql or a backup: so every other client session is
    listed, and ``force`` (the user knows they are not Ironflow) lets the upgrade go on,
    but never past a session that names itself Ironflow's. Checked once, before the
    upgrade; a process that opens the store after it commits finds the new version.
    """
    # Another migrate waiting for the advisory lock changes nothing behind this one.
    rows = [row for row in conn.execute(_OTHER_SESSIONS) if row[2] != _MIGRATE]
    ours = [row for row in rows if str(row[2]).startswith(SESSION_PREFIX)]
    if not rows or (force and not ours):
        return

    def listed(sessions: list[Any]) -> str:
        return "; ".join(
            f"pid {pid} from {address}, application_name {name!r}"
            + (f", user {user}" if user else "")
            for pid, address, name, user in sessions
        )

    head = (
        f"refusing to upgrade the Ironflow schema of {where} from version {found} to "
        f"{SCHEMA_VERSION} while other sessions are connected to it"
    )
    why = (
        "An Ironflow server, worker or command of the older version left running beside "
        "the new schema would go on writing as its version does (one of version 3: cancel "
        "and pause requests that newer workers never see)"
    )
    if ours:
        others = [row for row in rows if row not in ours]
        raise StoreError(
            f"{head}: Ironflow's own: {listed(ours)}"
            + (f"; and others: {listed(others)}" if others else "")
            + f". {why}. Stop every Ironflow server, worker and command using this database "
            "(--force does not pass sessions that name themselves Ironflow's), then run "
            "ironflow store migrate again. Nothing was changed"
        )
    raise StoreError(
        f"{head}: {listed(rows)}. Ironflow releases before this one name no session, "
        f"so any of these may be one. {why}. Stop every Ironflow server, "
        "worker and command using this database, then run ironflow store migrate again; "
        "if you know these sessions are not Ironflow (psql, a backup, a monitor), run "
        "it again with --force. Nothing was changed"
    )

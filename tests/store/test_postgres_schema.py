"""The PostgreSQL schema's versions: a database of an older one is refused by every
command but ``ironflow store migrate``, which brings it, with its data, to this one.

An older database is made with that version's own statements (``_pgschema._STEPS``
up to it), as that Ironflow's migrate made it.
"""

from __future__ import annotations

import attrs
import orjson
import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ironflow._cli._main import main
from ironflow.errors import StoreFormatError
from ironflow.store import AgentSpec, PostgresStore
from ironflow.store._keys import step_key
from ironflow.store._pgschema import _STEPS, RUN_FIRST, RUN_OF, SCHEMA_VERSION, table_name
from ironflow.store._pgsql import SQL
from ironflow.store._postgres import migrate
from ironflow.store._records import LeasedRun, StepRecord
from ironflow.testing import StandInWorker
from tests.support.postgres import shared_server


def _at_version(version: int) -> str:
    """A new database holding the schema of ``version``, made by its own statements."""
    url = shared_server().create_database()
    with psycopg.connect(url, autocommit=True) as conn, conn.transaction():
        for step in _STEPS[:version]:
            for stmt in step:
                conn.execute(stmt.encode())
        conn.execute(f"INSERT INTO ironflow_schema VALUES ({version})".encode())
    return url


def _set_version(url: str, version: int) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"UPDATE ironflow_schema SET version = {version}".encode())


def _k_indexes(url: str) -> set[str]:
    """The tables that have an index on ``k`` alone."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT tablename FROM pg_indexes"
            " WHERE indexdef LIKE '%USING btree (k)' AND indexname NOT LIKE '%pkey'"
        ).fetchall()
    return {str(row[0]) for row in rows}


def _step(leased: LeasedRun, position: int) -> StepRecord:
    run = leased.run
    return StepRecord(
        run.id, position, f"s{position}", "completed", {"n": position}, position, 1.0, 2.0,
        attempt=leased.lease.attempt,
    )  # fmt: skip


def test_a_fresh_schema_reads_steps_and_spawns_by_their_primary_key_alone() -> None:
    """Their keys begin with the run id, so (run, k) serves every read: no index on k,
    whose upkeep each recorded step paid. Tables scanned across runs keep theirs."""
    url = shared_server().create_database()
    migrate(url)
    have = _k_indexes(url)
    assert not have & {"ironflow_steps", "ironflow_spawns"}
    assert have == {table_name(t) for t in RUN_OF if t not in ("steps", "spawns")}


_RUN_IDS = st.text(st.characters(min_codepoint=1, max_codepoint=0x2FF), min_size=1, max_size=6)


@given(st.lists(st.tuples(_RUN_IDS, st.integers(0, 2**32 - 1)), min_size=2, max_size=30))
def test_the_primary_key_orders_steps_and_spawns_as_their_keys(
    steps: list[tuple[str, int]],
) -> None:
    """What RUN_FIRST's tables rely on to have no index on k: sorting by (run, k) is
    sorting by k, and a range's keys have run ids within the bounds ``span`` gives."""
    keys = sorted({step_key(run, position) for run, position in steps})
    for space in RUN_FIRST:
        first = SQL[space].first
        assert first is not None
        assert sorted(keys, key=lambda k: (first(k), k)) == keys
        lo, hi = keys[0], keys[-1]
        for key in keys[:-1]:
            assert first(lo) <= first(key) <= first(hi)


def test_a_version_2_database_with_runs_is_refused_then_migrated_with_its_data(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("IRONFLOW_URL", raising=False)
    monkeypatch.delenv("IRONFLOW_STORE", raising=False)
    url = _at_version(2)
    assert _k_indexes(url) >= {"ironflow_steps", "ironflow_spawns"}
    # Its rows, written while the database says this version: the tables and columns
    # are version 2's (version 3 only dropped two indexes, 4 changed none), and a lease
    # telling its run's requests is one version 2 reads (an unknown key is ignored).
    _set_version(url, SCHEMA_VERSION)
    with PostgresStore(url) as store, StandInWorker() as worker:
        store.register_agents([AgentSpec("a", ("go",)), AgentSpec("child", ())])
        run_ids = [store.emit("go", {"i": i}).run_ids[0] for i in range(3)]
        leased = store.lease_runs(worker.info, ["a"], limit=3, ttl=600)
        for held in leased:
            for position in range(4):
                store.record_step(worker.info, _step(held, position))
        first = leased[0]
        child = store.spawn_run(
            worker.info, first.run.id, "s9", "child", {}, attempt=first.lease.attempt
        )
        store.finish_run(worker.info, first.run.id, status="completed", attempt=1)
    _set_version(url, 2)

    with pytest.raises(
        StoreFormatError, match=f"Upgrade it with: ironflow store migrate --store {url}"
    ):
        PostgresStore(url)
    with pytest.raises(SystemExit) as exit_:
        main(["run", "list", "--store", url])
    assert exit_.value.code == 2
    assert f"Upgrade it with: ironflow store migrate --store {url}" in capsys.readouterr().err

    assert main(["store", "migrate", "--store", url]) == 0
    assert f"from schema version 2 to {SCHEMA_VERSION}" in capsys.readouterr().out
    assert not _k_indexes(url) & {"ironflow_steps", "ironflow_spawns"}

    with PostgresStore(url) as store, StandInWorker() as worker:
        assert store.get_run(first.run.id).status == "completed"
        assert store.get_run(child.id).parent_id == first.run.id
        for run_id in run_ids:
            assert [s.position for s in store.get_steps(run_id)] == [0, 1, 2, 3]
            assert [s.input for s in store.get_steps(run_id)] == [{"n": p} for p in range(4)]
        assert sorted(r.id for r in store.list_runs(limit=10)) == sorted([*run_ids, child.id])
        # The runs whose worker is gone are taken over, and go on recording.
        taken = store.lease_runs(worker.info, ["a"], limit=3, ttl=600)
        assert sorted(t.run.id for t in taken) == sorted(held.run.id for held in leased[1:])
        for held in taken:
            store.record_step(worker.info, _step(held, 4))
            assert [s.position for s in store.get_steps(held.run.id)] == [0, 1, 2, 3, 4]
        store.check_valid()


def test_a_version_1_database_is_upgraded_with_the_commit_tokens() -> None:
    """Version 1 had no ironflow_commits: refused, then migrate brings it to this one."""
    url = _at_version(1)
    with pytest.raises(StoreFormatError, match="Upgrade it with: ironflow store migrate"):
        PostgresStore(url)
    assert migrate(url) == (1, SCHEMA_VERSION)
    assert migrate(url) == (SCHEMA_VERSION, SCHEMA_VERSION)  # again: nothing to do
    with PostgresStore(url) as store:
        store.register_agents([AgentSpec("a", ("go",))])
        store.emit("go", {"n": 1})
        assert len(store.list_runs(limit=10)) == 1


@pytest.mark.parametrize("request_", ["cancel", "pause"])
def test_a_version_3_database_with_a_request_beside_a_live_lease_is_migrated_and_told(
    request_: str,
) -> None:
    """Version 3's leases say nothing of their run's requests, and its cancel or pause
    did not rewrite them: refused as any older schema, then migrated as it is (no row
    rewritten), and the next step is told by the tables."""
    url = _at_version(3)
    table, row = ("cancels", b"1") if request_ == "cancel" else ("paused", b"")
    with StandInWorker() as worker:
        # Rows as version 3 left them, written while the database says this version.
        _set_version(url, SCHEMA_VERSION)
        with PostgresStore(url) as store:
            store.register_agents([AgentSpec("a", ("go",))])
            store.emit("go", {})
            [leased] = store.lease_runs(worker.info, ["a"], limit=1, ttl=600)
            store.record_step(worker.info, _step(leased, 0))
        lease = leased.lease
        old = orjson.dumps(
            {
                "run_id": lease.run_id,
                "worker": attrs.asdict(lease.worker),
                "expires_at": lease.expires_at,
                "attempt": lease.attempt,
            }
        )
        key = lease.run_id.encode()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(SQL["leases"].put, SQL["leases"].row(key, old))
            conn.execute(SQL[table].put, SQL[table].row(key, row))
        _set_version(url, 3)

        with pytest.raises(StoreFormatError, match="Upgrade it with: ironflow store migrate"):
            PostgresStore(url)
        assert migrate(url) == (3, SCHEMA_VERSION)
        with psycopg.connect(url, autocommit=True) as conn:
            [(kept,)] = conn.execute("SELECT v FROM ironflow_leases").fetchall()
        assert bytes(kept) == old, "the migration rewrote a lease"

        with PostgresStore(url) as store:
            ack = store.record_step(worker.info, _step(leased, 1))
            assert (ack.cancel_requested, ack.pause_requested) == (
                request_ == "cancel",
                request_ == "pause",
            )
            store.check_valid()


def test_migrate_refuses_an_upgrade_while_an_ironflow_store_is_open(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A process checks the version only when it opens the store: one left running
    would write as its version does beside the new schema. So an upgrade is refused,
    naming the session, while another store is open (even with --force: it names itself
    Ironflow's), and goes on once it is closed."""
    url = _at_version(3)
    _set_version(url, SCHEMA_VERSION)
    store = PostgresStore(url)  # open, as an older worker left running would be
    try:
        _set_version(url, 3)
        for force in ([], ["--force"]):
            with pytest.raises(SystemExit) as exit_:
                main(["store", "migrate", "--store", url, *force])
            assert exit_.value.code == 2
            err = capsys.readouterr().err
            assert "refusing to upgrade the Ironflow schema" in err
            assert "application_name 'ironflow " in err and "Nothing was changed" in err
        with psycopg.connect(url, autocommit=True) as conn:
            assert conn.execute("SELECT version FROM ironflow_schema").fetchone() == (3,)
    finally:
        store.close()
    assert main(["store", "migrate", "--store", url]) == 0
    assert f"from schema version 3 to {SCHEMA_VERSION}" in capsys.readouterr().out


def test_migrate_lists_a_session_that_names_nothing_and_passes_it_with_force(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An older Ironflow names no session: any other client of the database may be one.
    Listed with its address, and passed only with --force."""
    url = _at_version(3)
    with psycopg.connect(url, autocommit=True) as other:
        pid = other.info.backend_pid
        with pytest.raises(SystemExit) as exit_:
            main(["store", "migrate", "--store", url])
        assert exit_.value.code == 2
        err = capsys.readouterr().err
        assert f"pid {pid} from " in err and "run it again with --force" in err
        assert main(["store", "migrate", "--store", url, "--force"]) == 0
        assert f"from schema version 3 to {SCHEMA_VERSION}" in capsys.readouterr().out
    # Nothing to change: no check, whoever is connected.
    with psycopg.connect(url, autocommit=True):
        assert migrate(url) == (SCHEMA_VERSION, SCHEMA_VERSION)

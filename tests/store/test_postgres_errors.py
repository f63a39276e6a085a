"""What a user meets with a wrong PostgreSQL URL: one line saying what is wrong and the
command or setting that fixes it, never a traceback, never the password; a wrong
setting is reported at once, not retried as if the database were down."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest

from ironflow._cli._main import main
from ironflow.errors import ConfigError
from ironflow.store import PostgresStore
from ironflow.store._open import resolve_location
from ironflow.store._pgurl import safe_url
from tests.support.postgres import shared_server

REPO = Path(__file__).resolve().parents[2]
SECRET = "s3cret-pw"
ROLE = "ironflow_pw"


def _fails(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """``ironflow ARGV`` exits 2 with one ``error:`` line; that line."""
    with pytest.raises(SystemExit) as exit_:
        main(list(argv))
    assert exit_.value.code == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    assert SECRET not in captured.err + captured.out
    lines = [line for line in captured.err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, captured.err
    return lines[0]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def password_role(pg_url: str) -> str:
    """A role that must log in with a password (scram, by a pg_hba.conf line for it
    alone, the server reloaded by its pid), without rights to the tables; its URL."""
    server = shared_server()
    hba = server.data / "pg_hba.conf"
    line = f"host all {ROLE} 127.0.0.1/32 scram-sha-256\n"
    text = hba.read_text()
    if line not in text:
        hba.write_text(line + text)
        assert server.pid is not None
        os.kill(server.pid, signal.SIGHUP)
    with psycopg.connect(server.url("postgres"), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (ROLE,)).fetchone()
        if not exists:
            conn.execute(f"CREATE ROLE {ROLE} LOGIN PASSWORD '{SECRET}'".encode())
    parts = urlsplit(pg_url)
    return f"postgresql://{ROLE}:{SECRET}@{parts.hostname}:{parts.port}{parts.path}"


def test_safe_url_hides_a_password_given_as_a_parameter() -> None:
    assert safe_url("postgresql://u@h/db?password=x1&sslmode=require") == (
        "postgresql://u@h/db?password=***&sslmode=require"
    )
    assert safe_url("postgresql://u:x1@h:5/db?password=x2") == (
        "postgresql://u:***@h:5/db?password=***"
    )
    assert safe_url("postgresql:///db?host=/run/pg&password=x1") == (
        "postgresql:///db?host=/run/pg&password=***"
    )
    # Several hosts (a primary and its standbys): was "the PostgreSQL URL given".
    assert safe_url("postgresql://u:x1@h1:5432,h2:5432/db?target_session_attrs=read-write") == (
        "postgresql://u:***@h1:5432,h2:5432/db?target_session_attrs=read-write"
    )


def test_a_url_without_a_database_is_refused(
    capsys: pytest.CaptureFixture[str], pg_url: str
) -> None:
    """libpq would use the database named like the user: the tables would land in
    ``postgres``, not where the user meant."""
    parts = urlsplit(pg_url)
    bare = f"postgresql://postgres:{SECRET}@{parts.hostname}:{parts.port}"
    for argv in (["store", "migrate"], ["run", "list"]):
        error = _fails(capsys, *argv, "--store", bare)
        assert "names no database" in error and "/DATABASE" in error
    with pytest.raises(ConfigError, match="names no database"):
        PostgresStore(bare + "/")
    with psycopg.connect(shared_server().url("postgres")) as conn:
        found = conn.execute("SELECT to_regclass('ironflow_schema')").fetchone()
    assert found == (None,), "the schema was created in the database named like the user"


def test_a_missing_database_is_named_with_how_to_create_it(
    capsys: pytest.CaptureFixture[str], pg_url: str
) -> None:
    missing = pg_url.rsplit("/", 1)[0] + "/no_such_db"
    for argv in (["store", "migrate"], ["run", "list", "--timeout", "20"]):
        error = _fails(capsys, *argv, "--store", missing)
        assert 'database "no_such_db" does not exist' in error
        assert "createdb" in error and "ironflow store migrate" in error


def test_a_worker_does_not_wait_forever_for_a_database_that_does_not_exist(
    pg_url: str,
) -> None:
    """Servers and workers wait for an unreachable database however long it takes; a
    missing database is no outage, and they say so and stop (no traceback)."""
    missing = pg_url.rsplit("/", 1)[0] + "/no_such_db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("IRONFLOW_")}
    done = subprocess.run(
        [sys.executable, "-m", "ironflow.run", "worker", "tests.store.pg_agents"],
        cwd=REPO,
        env={**env, "IRONFLOW_STORE": missing},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert 'database "no_such_db" does not exist' in done.stderr
    assert "Traceback" not in done.stderr


def test_a_wrong_password_and_missing_grants_say_so(
    capsys: pytest.CaptureFixture[str], password_role: str
) -> None:
    wrong = password_role.replace(SECRET, "not-" + SECRET)
    for argv in (["store", "migrate"], ["run", "list", "--timeout", "20"]):
        error = _fails(capsys, *argv, "--store", wrong)
        assert "refused the login: password authentication failed" in error
        assert "Check the user and password" in error
    # The right password, but the tables belong to another user: was a traceback.
    error = _fails(capsys, "run", "list", "--store", password_role)
    assert "may not use the Ironflow tables" in error and "GRANT" in error


def test_an_unreachable_database_names_the_cause_within_the_timeout(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture, pg_url: str
) -> None:
    """Connection refused, not the pool's "couldn't get a connection after 30 sec"; a
    command retries for its --timeout, not "until it is back"."""
    parts = urlsplit(pg_url)
    down = f"postgresql://postgres:{SECRET}@127.0.0.1:{_closed_port()}{parts.path}"
    error = _fails(capsys, "run", "list", "--timeout", "2", "--store", down)
    assert "cannot reach" in error and "Connection refused" in error
    assert "30.00 sec" not in error
    assert "retrying with backoff for up to 2 s" in caplog.text
    assert SECRET not in caplog.text
    error = _fails(capsys, "store", "migrate", "--store", down)
    assert "Connection refused" in error and "Is PostgreSQL running there" in error


def test_without_the_postgres_extra_the_error_names_the_install_command(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``pip install ironflow`` alone: a postgresql:// store says which extra to add."""
    monkeypatch.setitem(sys.modules, "psycopg", None)  # import psycopg raises ImportError
    url = "postgresql://postgres@127.0.0.1:5432/ironflow"
    for argv in (["store", "migrate"], ["run", "list"]):
        error = _fails(capsys, *argv, "--store", url)
        assert "pip install 'ironflow[postgres]'" in error


@pytest.mark.parametrize(
    "url",
    ["postgresql+psycopg://u:s3cret-pw@h/db", "PostgreSQL://h/db", "postgres:/h/db", "pg://h/db"],
)
def test_a_url_of_another_form_is_refused_not_taken_for_a_directory(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, url: str
) -> None:
    """SQLAlchemy's ``postgresql+psycopg://`` (a common DATABASE_URL) was an LMDB
    directory: a worker started an empty store under ./postgresql+psycopg:/..."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("IRONFLOW_URL", raising=False)
    monkeypatch.setenv("IRONFLOW_STORE", url)
    with pytest.raises(ConfigError, match="a URL Ironflow does not read"):
        resolve_location()
    error = _fails(capsys, "emit", "greet")
    assert "postgresql://" in error
    assert list(tmp_path.iterdir()) == []
    assert resolve_location(str(tmp_path / "data")) == tmp_path / "data"

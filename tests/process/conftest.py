"""Fixtures for the process tests: worker subprocesses and the test's own store handle."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ironflow import LmdbStore
from tests.process._workers import Workers


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    w = Workers(tmp_path)
    try:
        yield w
    finally:
        w.close()


@pytest.fixture
def store(workers: Workers) -> Iterator[LmdbStore]:
    """The test's own handle on the data directory the workers share."""
    s = LmdbStore(workers.data_dir)
    try:
        yield s
    finally:
        s.close()

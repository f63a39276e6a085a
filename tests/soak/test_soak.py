"""The short kill -9 soak in `make test`: workers and the server die; nothing is lost."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.soak.harness import Soak

pytestmark = pytest.mark.process


def test_short_soak_with_worker_and_server_kills_loses_and_duplicates_nothing(
    tmp_path: Path,
) -> None:
    """kill -9 workers and the server for SOAK_SECONDS (40): every run, step, event once."""
    seconds = float(os.environ.get("SOAK_SECONDS", "40"))
    report = Soak(seconds=seconds, mode="server", root=tmp_path, log=print, seed=7).run()
    print(report.text())
    assert report.problems == []
    assert report.events > 0 and report.completed == report.runs == report.events
    assert report.stream_events == report.runs
    assert report.steps_recorded == 6 * report.runs
    assert report.worker_kills >= seconds / 8, "too few kills to prove anything"
    assert report.server_kills >= 1
    assert report.lost_runs == report.lost_steps == report.lost_stream_events == 0
    assert report.duplicate_runs == report.duplicate_steps == report.duplicate_stream_events == 0
    assert report.projection_mismatches == report.missing_partitions == 0
    # Only steps in flight at a kill ran again: never more than the kills could cause.
    assert report.extra_executions <= report.worker_kills * 4


def _cluster_soak(tmp_path: Path, runs: int, seed: int) -> None:
    """PostgreSQL, two servers, three workers (one through each server, one straight to
    the database); kill -9 servers and workers at random, stop PostgreSQL immediate once
    mid-way; every run completes and the audit finds nothing lost or done twice."""
    report = Soak(
        seconds=600,
        runs=runs,
        store="postgres",
        mode="server",
        server_gap=(2.0, 6.0),
        root=tmp_path,
        log=print,
        seed=seed,
    ).run()
    print(report.text())
    assert report.problems == []
    assert report.events == report.runs == report.completed == runs
    assert report.steps_recorded == 6 * runs
    assert report.stream_events == runs
    assert report.postgres_restarts == 1
    assert report.server_kills >= 1 and report.worker_kills >= 1
    assert report.lost_runs == report.lost_steps == report.lost_stream_events == 0
    assert report.duplicate_runs == report.duplicate_steps == report.duplicate_stream_events == 0
    assert report.projection_mismatches == report.missing_partitions == 0
    assert report.extra_executions <= report.worker_kills * 4


def test_a_postgresql_cluster_under_kills_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    """The short cluster soak of make test: 80 runs."""
    _cluster_soak(tmp_path, runs=80, seed=11)


@pytest.mark.slow
def test_500_runs_on_a_postgresql_cluster_under_kills(tmp_path: Path) -> None:
    """Issue 20's process test whole: 500 runs."""
    _cluster_soak(tmp_path, runs=500, seed=20)

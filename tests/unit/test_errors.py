"""The errors a user meets are importable from ``ironflow`` and say what to do."""

from __future__ import annotations

from pathlib import Path

import pytest

import ironflow
from ironflow import errors


def test_every_error_is_exported_from_ironflow() -> None:
    """Each class of ironflow.errors is reachable as ironflow.<Name>, the same object."""
    missing = [name for name in errors.__all__ if name not in ironflow.__all__]
    assert missing == []
    for name in errors.__all__:
        assert getattr(ironflow, name) is getattr(errors, name)


def test_a_missing_run_raises_the_exported_error(tmp_path: Path) -> None:
    """client.runs.get of an unknown id raises ironflow.RunNotFoundError, a StoreError sibling."""
    with (
        ironflow.Client(data_dir=tmp_path / "data") as client,
        pytest.raises(ironflow.RunNotFoundError, match="run_nope"),
    ):
        client.runs.get("run_nope")


def test_opening_a_data_directory_twice_says_what_to_do(tmp_path: Path) -> None:
    """A second open in one process names the fix: reuse the open store, or close it."""
    with ironflow.LmdbStore(tmp_path / "data") as first:
        with pytest.raises(ironflow.StoreLockedError) as caught:
            ironflow.Client(data_dir=tmp_path / "data")
        message = str(caught.value)
        assert "already open in this process" in message
        assert "Client(store=" in message and "close" in message
        # The advice works: a client on the open store reads it.
        with ironflow.Client(store=first) as client:
            assert client.runs.list() == []

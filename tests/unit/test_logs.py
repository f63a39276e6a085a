"""configure_logging (``ironflow worker``, ``ironflow serve``) run inside a process that
goes on: a test under capsys, a program calling ``ironflow.run.main``."""

from __future__ import annotations

import io
import logging
import sys

import pytest

from ironflow._worker._logs import configure_logging


def test_the_handler_follows_sys_stderr_and_survives_a_closed_one(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Configured while stderr was a stream since closed (capsys's, at the end of the test
    that ran a worker command in-process), the next line still lands on today's stderr:
    it used to print a "--- Logging error ---" traceback instead (seen in make test)."""
    swapped = io.StringIO()
    with monkeypatch.context() as m:
        m.setattr(sys, "stderr", swapped)
        configure_logging()
        logging.getLogger("ironflow.worker").info("while swapped")
    swapped.close()
    logging.getLogger("ironflow.worker").info("after it closed")
    err = capsys.readouterr().err
    assert "Logging error" not in err
    assert "INFO  ironflow.worker: after it closed" in err


def test_configuring_again_replaces_and_never_stacks() -> None:
    configure_logging(log_format="json")
    configure_logging(log_format="json")
    configure_logging(log_format="text")
    assert len(logging.getLogger("ironflow").handlers) == 1
    root = logging.getLogger().handlers
    assert [h for h in root if type(h).__module__ == "ironflow._worker._logs"] == []

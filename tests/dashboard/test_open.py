"""`ironflow serve --dev --open` opens the dashboard in the user's browser."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.server.conftest import Child, child_env, wait_until

pytestmark = pytest.mark.process


def test_serve_open_starts_a_browser_on_the_dashboard(tmp_path: Path) -> None:
    """--open runs $BROWSER (as Python's webbrowser does) with the dashboard's URL."""
    opened = tmp_path / "opened"
    fake = tmp_path / "browser.sh"
    fake.write_text(f'#!/bin/sh\necho "$1" > {opened}\n')
    fake.chmod(0o755)
    argv = [sys.executable, "-m", "ironflow._cli._main", "serve", "--dev", "--open"]
    argv += ["--port", "0", "--data-dir", str(tmp_path / "data")]
    server = Child(argv, child_env(BROWSER=f"{fake} %s"))
    try:
        url = server.line_starting("dashboard at ").rsplit(" ", 1)[1]
        wait_until(lambda: opened.exists() and opened.read_text().strip(), what="the browser")
        assert opened.read_text().strip() == url
    finally:
        server.kill()

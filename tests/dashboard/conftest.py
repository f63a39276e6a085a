"""Fixtures for the browser tests: Debian's Chromium driven by Playwright for Python.

No browser is downloaded: Playwright launches the system's ``/usr/bin/chromium``
(``make test`` installs Debian's ``chromium`` package when it is missing and it runs
as root). Without Chromium or Playwright the browser tests are skipped, saying how
to install them.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.server.conftest import Child, Served, child_env, get_json, wait_until

CHROMIUM = os.environ.get("IRONFLOW_CHROMIUM", "/usr/bin/chromium")
#: Flags that keep Chromium off the network it cannot reach here, and out of the sandbox
#: that root cannot use.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
AGENTS = "tests.dashboard.agents"
#: Set IRONFLOW_UPDATE_SCREENSHOTS=1 to copy the tests' screenshots into docs/.
DOCS = Path(__file__).resolve().parents[2] / "docs"


def _playwright() -> Any:
    if not os.path.exists(CHROMIUM):
        pytest.skip(
            f"the browser tests need Chromium at {CHROMIUM}: `sudo apt-get install chromium` "
            "(make test installs it when run as root)"
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the browser tests need Playwright: pip install -e '.[test]'")
    return sync_playwright


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """A fresh headless Chromium (its own empty profile), closed after the module."""
    sync_playwright = _playwright()
    profile = tempfile.mkdtemp(prefix="ironflow-chromium-")
    try:
        with sync_playwright() as p:
            context = p.chromium.launch_persistent_context(
                profile,
                executable_path=CHROMIUM,
                headless=True,
                args=CHROMIUM_FLAGS,
                viewport={"width": 1280, "height": 860},
            )
            try:
                yield context
            finally:
                context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """`ironflow serve --dev` and a worker serving the test agents through it."""
    served = Served(tmp_path_factory.mktemp("dash") / "data")
    worker: Child | None = None
    try:
        served.start()
        wait_until(lambda: get_json(served.url + "/api/v1/health")["status"] == "ok")
        worker = Child(
            [sys.executable, "-m", "ironflow.run", "worker", AGENTS],
            child_env(IRONFLOW_URL=served.url),
        )
        worker.line_starting("steps, ")
        yield served
    finally:
        if worker is not None:
            worker.kill()
        if served.child is not None:
            served.kill()


def keep_screenshot(page: Any, name: str, tmp_path: Path) -> Path:
    """Take a full-page screenshot; with IRONFLOW_UPDATE_SCREENSHOTS=1 also into docs/."""
    path = tmp_path / name
    page.screenshot(path=str(path), full_page=True)
    if os.environ.get("IRONFLOW_UPDATE_SCREENSHOTS") == "1":
        shutil.copyfile(path, DOCS / name)
    return path

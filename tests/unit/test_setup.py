"""A newcomer's first command is quiet and says what it is doing."""

from __future__ import annotations

import os
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def test_the_license_is_an_spdx_string() -> None:
    """`license = "Apache-2.0"`: the table form makes setuptools print a deprecation box."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert project["project"]["license"] == "Apache-2.0"
    requires = project["build-system"]["requires"]
    assert "setuptools>=77" in requires, requires  # the first to take the string form


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_venv_says_what_it_installs_before_the_quiet_minute() -> None:
    """The install step prints a progress line first, and how to activate the venv last."""
    # Run under `make test`, the outer make's flags would reach this one: leave them out.
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    dry = subprocess.run(
        ["make", "--no-print-directory", "-n", "-B", ".venv/.installed"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.splitlines()
    said = next(i for i, line in enumerate(dry) if "installing ironflow and its test tools" in line)
    installs = next(i for i, line in enumerate(dry) if "pip install --quiet -e" in line)
    assert said < installs
    assert "about a minute" in dry[said]
    assert "source .venv/bin/activate" in dry[-1]

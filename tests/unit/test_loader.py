"""The worker's module loader: each way a newcomer gets the module wrong says what to fix."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from ironflow._worker._loader import load_module
from ironflow.errors import ConfigError


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [str(tmp_path), *sys.path])
    (tmp_path / "trip_agent.py").write_text("x = 1\n")
    (tmp_path / "needs_a_package.py").write_text("import ironflow\nimport no_such_pkg_qq\n")
    (tmp_path / "divides.py").write_text("x = 1\ny = x / 0\n")
    (tmp_path / "unfinished.py").write_text("def f(:\n    pass\n")
    return tmp_path


def test_a_typo_in_the_module_name_suggests_the_module_that_is_there(here: Path) -> None:
    typo = r"'trip_agnet' not found in .* \(did you mean 'trip_agent'\?\)"
    with pytest.raises(ConfigError, match=typo):
        load_module("trip_agnet")
    with pytest.raises(ConfigError, match=r"no such file \(did you mean '.*trip_agent.py'\?\)"):
        load_module(str(here / "trip_agnet.py"))


def test_a_missing_package_names_the_line_and_this_python(here: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        load_module("needs_a_package")
    message = str(raised.value)
    assert "No module named 'no_such_pkg_qq'" in message
    assert f"needs_a_package.py:2); is it installed for this Python ({sys.executable})?" in message


def test_an_error_at_import_names_the_users_line_not_importlibs(here: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        load_module("divides")
    assert "ZeroDivisionError: division by zero" in str(raised.value)
    assert "divides.py:2)" in str(raised.value) and "frozen" not in str(raised.value)
    with pytest.raises(ConfigError) as raised:
        load_module("unfinished")  # it named <frozen importlib._bootstrap>:241 as well
    assert str(raised.value).endswith("SyntaxError: invalid syntax (unfinished.py, line 1)")

"""CLI commands and Client calls give up on a server that is down, saying what to do.

Workers retry an unreachable server for as long as it takes (durability); a person at
a terminal, or a script calling ``Client``, gets one line naming the URL and the fix.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import ironflow
from ironflow._cli._main import build_parser

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def dead_url() -> str:
    """A URL on 127.0.0.1 where nothing listens: a port just bound and released."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def ironflow_cli(*args: str, url: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IRONFLOW_")}
    env["IRONFLOW_URL"] = url
    return subprocess.run(
        [sys.executable, "-m", "ironflow._cli._main", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        # Before the fix the command retried until killed: this bound turns that into a
        # failure instead of a hung test suite.
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    "command",
    [("run", "list"), ("inspect", "run_x"), ("emit", "doc.received"), ("projection", "list")],
)
def test_a_cli_command_gives_up_on_a_dead_server_with_one_line(
    dead_url: str, command: tuple[str, ...]
) -> None:
    """`ironflow run list` with IRONFLOW_URL down: exit 2, one error line naming URL and fix."""
    proc = ironflow_cli(*command, "--timeout", "0.5", url=dead_url)
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    assert dead_url in errors[0]
    assert "start `ironflow serve`" in errors[0] and "unset IRONFLOW_URL" in errors[0]
    assert "--timeout" in errors[0]
    assert "Traceback" not in proc.stderr


def test_cli_commands_wait_ten_seconds_by_default() -> None:
    """--timeout defaults to 10 s on every command that talks to a store."""
    parser = build_parser()
    for argv in (["run", "list"], ["inspect", "r"], ["emit", "x"], ["approve", "r", "n"]):
        assert parser.parse_args(argv).timeout == 10.0, argv
    assert parser.parse_args(["projection", "rebuild", "p"]).timeout == 60.0


def test_cli_timeout_must_be_positive_seconds(capsys: pytest.CaptureFixture[str]) -> None:
    """A --timeout of 0 or text is a usage error naming the flag."""
    for bad in ("0", "-1", "soon"):
        with pytest.raises(SystemExit) as caught:
            build_parser().parse_args(["run", "list", "--timeout", bad])
        assert caught.value.code == 2
        assert "--timeout" in capsys.readouterr().err


def test_client_gives_up_after_its_timeout(dead_url: str) -> None:
    """Client(url=..., timeout=0.5) raises ServerUnavailableError naming the URL and the fix."""
    with (
        ironflow.Client(url=dead_url, timeout=0.5) as client,
        pytest.raises(ironflow.ServerUnavailableError) as caught,
    ):
        client.runs.list()
    assert dead_url in str(caught.value) and "ironflow serve" in str(caught.value)


def test_client_timeout_applies_to_the_url_from_the_environment(
    dead_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Client() with IRONFLOW_URL set gives up the same way."""
    monkeypatch.setenv("IRONFLOW_URL", dead_url)
    with (
        ironflow.Client(timeout=0.5) as client,
        pytest.raises(ironflow.ServerUnavailableError, match=r"within 0\.5s"),
    ):
        client.runs.get("run_x")


def test_client_timeout_is_checked() -> None:
    """A timeout that is not positive seconds fails at once, naming the parameter."""
    for bad in (0, -1, True, "10"):
        with pytest.raises(ironflow.ConfigError, match="timeout"):
            ironflow.Client(url="http://127.0.0.1:1", timeout=bad)  # type: ignore[arg-type]

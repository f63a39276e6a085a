"""Hostile command lines: every one ends in exit status 0 or 2, never a traceback.

Hypothesis builds argv from the real subcommands and flags mixed with bad JSON, deep
nesting, huge numbers, odd unicode (lone surrogates too: what a shell hands Python for
bytes that are not UTF-8) and path tricks, and runs ``ironflow``'s ``main`` in-process
against one data directory. After each command the store must still be valid.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ironflow._cli._main import main
from ironflow.store import AgentSpec, LmdbStore
from ironflow.store._records import ProjectionSpec
from tests.helpers import examples

# Real command lines with a hole (None) for each value Hypothesis fills in.
COMMANDS: list[list[str | None]] = [
    ["emit", None],
    ["emit", "fuzz.go", "--data", None],
    ["emit", None, "--data", None, "--id", None],
    ["emit", "fuzz.go", "--id", None, "--json"],
    ["run", "list", "--limit", None],
    ["run", "list", "--status", None, "--agent", None, "--json"],
    ["run", "cancel", None],
    ["inspect", None],
    ["inspect", None, "--json"],
    ["projection", "get", None],
    ["projection", "get", None, "--json"],
    ["projection", "list", "--json"],
    ["projection", "rebuild", None, "--timeout", None],
    ["run", "prune", "--older-than", None],
    ["run", "prune", "--older-than", "1d", "--status", None, "--dry-run", "--json"],
    ["store", None],
    ["store", "compact"],
    [None],
    ["run", None],
]
FLAGS = ["--data", "--id", "--json", "--limit", "--status", "--agent", "--timeout", "--help"]
odd_text = st.text(
    alphabet=st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=()),
    max_size=30,
)
hostile = st.one_of(
    odd_text,
    st.sampled_from(
        [
            "",
            "-",
            "--",
            "{}",
            "[]",
            "NaN",
            "Infinity",
            "-Infinity",
            "1e999",
            "9" * 5000,
            '{"a": 1',
            '"\\ud800"',
            '{"\\u0000": "\\u0000"}',
            "../../../etc/passwd",
            "..%2F..%2Fetc",
            "/dev/null",
            "run_\x00",
            "x" * 5000,
            "0",
            "-1",
            "99999999999999999999999",
            "completed",
            "fuzz-agent",
            "p",
            "\u202e\u0301\ufeff",
        ]
    ),
    # What a shell hands Python for bytes that are not UTF-8: lone surrogates.
    st.sampled_from(["\udcff", "run_\udc80", "fuzz.\ud800", "p\udfff"]),
    st.integers(min_value=1, max_value=3000).map(lambda n: "[" * n + "]" * n),
    st.integers(min_value=1, max_value=3000).map(lambda n: '{"a":' * n + "1" + "}" * n),
)
# A command line: a template with its holes filled, then a few stray pieces.
pieces = st.one_of(
    st.tuples(st.sampled_from(FLAGS), hostile).map(list),
    st.sampled_from(FLAGS).map(lambda f: [f]),
    hostile.map(lambda v: [v]),
)


@st.composite
def argvs(draw: st.DrawFn) -> list[str]:
    template = draw(st.sampled_from(COMMANDS))
    argv = [draw(hostile) if part is None else part for part in template]
    for piece in draw(st.lists(pieces, max_size=2)):
        argv += piece
    return argv


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One data directory with an agent and a projection; no server in the environment."""
    path = tmp_path_factory.mktemp("cli-fuzz") / "data"
    store = LmdbStore(path, sync=False)
    store.register_agents([AgentSpec("fuzz-agent", ("fuzz.*",))])
    store.register_projections([ProjectionSpec(name="p", events=("fuzz.*",), initial_state={})])
    store.emit("fuzz.go", {"seed": True})
    store.close()
    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("IRONFLOW_")}
    try:
        yield path
    finally:
        os.environ.update(saved)


def run_main(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    return code, out.getvalue(), err.getvalue()


@settings(max_examples=examples(150))
@given(argv=argvs())
def test_hostile_command_lines_exit_0_or_2_without_a_traceback(
    data_dir: Path, argv: list[str]
) -> None:
    """Any argv built from real commands and hostile values: status 0 or 2, one clear error."""
    code, _, err = run_main([*argv, "--data-dir", str(data_dir)])
    assert code in (0, 2), err
    assert "Traceback" not in err
    if code == 2:
        assert "error:" in err, err
    with LmdbStore(data_dir, sync=False) as store:
        store.check_valid()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("[" * 100_000 + "]" * 100_000, "--data"),
        ("[" * 2_000 + "]" * 2_000, "nest"),
        ("9" * 5_000, "--data"),
        ("NaN", "not a finite number"),
        ('{"a": "\\ud800"}', "--data"),
    ],
)
def test_emit_data_that_cannot_be_stored_is_one_line_and_exit_2(
    data_dir: Path, data: str, message: str
) -> None:
    """Deep nesting, a 5000-digit number, NaN, a lone surrogate: one line, status 2."""
    code, out, err = run_main(["emit", "fuzz.go", "--data", data, "--data-dir", str(data_dir)])
    assert (code, out) == (2, "")
    assert err.startswith("error:") and message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


@pytest.mark.parametrize(
    "argv",
    [
        ["emit", "fuzz.\udcff"],
        ["emit", "fuzz.go", "--id", "\ud800"],
        ["inspect", "run_\udc80"],
        ["projection", "get", "\udcfe"],
        ["run", "list", "--agent", "\udcff"],
    ],
)
def test_arguments_that_are_not_utf8_are_one_line_and_exit_2(
    data_dir: Path, argv: list[str]
) -> None:
    """Bytes a shell could not decode as UTF-8 reach Python as surrogates: a clear refusal."""
    code, _, err = run_main([*argv, "--data-dir", str(data_dir)])
    assert code == 2
    assert err.startswith("error:") and "UTF-8" in err
    assert len(err.strip().splitlines()) == 1

"""The README's "Testing and debugging your agents", run as written so it cannot drift.

Its commands run in bash against a data directory holding a finished run of the quick
start's ``my_agent.py`` (both read out of README.md); its pytest file runs under a fresh
pytest, which finds the fixtures through the installed plugin.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import types
from pathlib import Path

from ironflow.store import LmdbStore
from ironflow.testing import Driver

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text()
QUICK_START = README[README.index("## Quick start") : README.index("## What you can rely on")]
SECTION = README[
    README.index("## Testing and debugging your agents") : README.index("## Bring your framework")
]
BIN = Path(sys.executable).parent

# The quick start's tools sleep (the window to kill -9 a worker by hand); these runs
# need no window, so its module's `time` is one that does not wait.
FAST_TOOLS = """
import types
import my_agent

my_agent.time = types.SimpleNamespace(sleep=lambda seconds: None)
"""


def blocks(text: str, lang: str) -> list[str]:
    return [
        body for found, body in re.findall(r"```(\w*)\n(.*?)```", text, flags=re.S) if found == lang
    ]


def test_the_section_runs_as_written(tmp_path: Path) -> None:
    (tmp_path / "my_agent.py").write_text(blocks(QUICK_START, "python")[0])
    (tmp_path / "conftest.py").write_text(FAST_TOOLS)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IRONFLOW_", "PYTEST"))}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(tmp_path)

    # A finished run in ./.ironflow, as the quick start leaves one.
    sys.path.insert(0, str(tmp_path))
    try:
        import my_agent  # type: ignore[import-not-found]

        my_agent.time = types.SimpleNamespace(sleep=lambda seconds: None)
        with LmdbStore(tmp_path / ".ironflow") as store:
            data = {"docId": "doc-2", "imageUrl": "https://example.com/receipt.png"}
            run = Driver(store).run(my_agent.doc_processor, data)
            assert run.status == "completed"
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("my_agent", None)

    [commands] = blocks(SECTION, "bash")
    outputs = []
    for line in commands.splitlines():
        typed = line.split("  #")[0].replace("RUN_ID", run.id)
        done = subprocess.run(
            ["bash", "-c", typed],
            cwd=tmp_path,
            env=env,
            input="p input\np output\nc\n",  # for the pdb of --break-at
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, f"{typed}\n{done.stdout}{done.stderr}"
        outputs.append(done.stdout)
    export, imported, replay, broke, inspect, fork = outputs
    assert (tmp_path / "run.json").is_file() and "written to run.json" in export
    assert f"run {run.id} (completed, 3 step(s)) imported under its own id" in imported
    assert (tmp_path / "dev" / "data.mdb").is_file()
    assert "fits: " in replay and "tool.classify" in replay
    assert "(Pdb)" in broke and "{'text': 'Extracted text from" in broke
    assert "just after step tool.classify was recorded" in inspect
    assert f"forked from {run.id} at tool.classify: 1 record(s) copied" in fork

    [tests] = blocks(SECTION, "python")
    (tmp_path / "test_my_agent.py").write_text(tests)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_my_agent.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 passed" in done.stdout

"""Real processes: `ironflow serve`, workers through it, kill -9 of either, the CLI via the URL."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.error
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from ironflow.store import AgentSpec, RemoteStore, StepRecord, WorkerInfo
from tests.server.conftest import REPO, Child, Served, child_env, get_json, wait_until

pytestmark = pytest.mark.process

AGENTS = "tests.server.agents"


def start_worker(url: str) -> Child:
    """`python -m ironflow.run worker tests.server.agents` through the server at ``url``."""
    worker = Child(
        [sys.executable, "-m", "ironflow.run", "worker", AGENTS, "--lease-ttl", "30"],
        child_env(IRONFLOW_URL=url),
    )
    try:
        worker.line_starting("pipeline, counter worker ready")
    except BaseException:
        worker.kill()  # not left running into the next test
        raise
    return worker


def executions(log: Path) -> Counter[str]:
    """How many times each step started executing, from the tools' own log."""
    lines = log.read_text().splitlines() if log.exists() else []
    return Counter(line.split()[1] for line in lines if line.startswith("start "))


def emit_pipeline(store: RemoteStore, log: Path, steps: list[str], slow: str) -> str:
    """Start a pipeline whose ``slow`` step waits until the test creates ``gate_of(log)``."""
    data = {"log": str(log), "key": log.stem, "steps": steps, "slow": slow}
    data["gate"] = str(gate_of(log))
    return store.emit("pipeline.go", data).run_ids[0]


def gate_of(log: Path) -> Path:
    return log.with_name(log.name + ".gate")


def finished(store: RemoteStore, run_id: str) -> Any:
    run = store.get_run(run_id)
    return run if run.status in ("completed", "failed", "cancelled") else None


def test_worker_killed_mid_step_resumes_through_the_server(served: Served, tmp_path: Path) -> None:
    """kill -9 of a worker mid-step: a new worker resumes the run; only that step runs again."""
    log = tmp_path / "tools.log"
    store = RemoteStore(served.url, give_up_after=20)
    worker = start_worker(served.url)
    try:
        run_id = emit_pipeline(store, log, ["a", "b", "c"], slow="b")
        wait_until(lambda: executions(log)["b"] == 1, what="step b to start")
        worker.kill(signal.SIGKILL)  # b waits at its gate: it cannot have finished
        assert [s.id for s in store.get_steps(run_id)] == ["tool.work"]
        assert store.get_run(run_id).status == "running"  # orphaned until a worker comes

        gate_of(log).touch()
        worker = start_worker(served.url)
        run = wait_until(lambda: finished(store, run_id), what="the run to finish")
    finally:
        worker.kill()
        store.close()
    assert run.status == "completed" and run.output == {"done": ["a", "b", "c"]}
    assert run.attempt == 2
    assert executions(log) == Counter({"a": 1, "b": 2, "c": 1})
    assert [s.position for s in store_steps(served.url, run_id)] == [0, 1, 2, 3, 4]
    # The memory write went through the server too, and curl sees the projection.
    memory = get_json(served.url + "/api/v1/projections/pipeline-memory")
    assert memory["state"]["state"] == {log.stem: ["a", "b", "c"]}


def store_steps(url: str, run_id: str) -> list[StepRecord]:
    with RemoteStore(url) as store:
        return store.get_steps(run_id)


def test_server_killed_mid_run_loses_nothing(served: Served, tmp_path: Path) -> None:
    """kill -9 of the server mid-step, then a restart: the run completes, each step ran once."""
    log = tmp_path / "tools.log"
    store = RemoteStore(served.url, give_up_after=30)
    worker = start_worker(served.url)
    try:
        run_id = emit_pipeline(store, log, ["a", "b", "c", "d"], slow="b")
        wait_until(lambda: executions(log)["b"] == 1, what="step b to start")
        served.kill(signal.SIGKILL)
        # Step b finishes while the server is down; the worker keeps its result and retries.
        gate_of(log).touch()
        wait_until(lambda: "done b" in log.read_text(), what="step b to finish")
        with pytest.raises(urllib.error.URLError):
            get_json(served.url + "/api/v1/health")
        served.start()  # same port, same data directory
        run = wait_until(lambda: finished(store, run_id), what="the run to finish")
    finally:
        worker.kill()
        store.close()
    assert run.status == "completed" and run.output == {"done": ["a", "b", "c", "d"]}
    assert run.attempt == 1  # the worker never lost the run
    assert executions(log) == Counter({"a": 1, "b": 1, "c": 1, "d": 1})
    assert [s.id for s in store_steps(served.url, run_id)] == [
        "tool.work",
        "tool.work#2",
        "tool.work#3",
        "tool.work#4",
        "memory.append",
        "memory.append.wait",
    ]


def cli(*args: str, url: str | None = None) -> subprocess.CompletedProcess[str]:
    env = child_env(IRONFLOW_URL=url) if url else child_env()
    return subprocess.run(
        [sys.executable, "-m", "ironflow._cli._main", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_cli_through_the_server_prints_what_the_data_dir_shows(served: Served) -> None:
    """emit, run list and inspect print the same via IRONFLOW_URL as on the data directory."""
    with RemoteStore(served.url) as store:
        store.register_agents([AgentSpec(id="doc", triggers=("doc.received",))])
        worker = WorkerInfo(id="w", host="elsewhere", pid=1)
        emitted = cli("emit", "doc.received", "--data", '{"docId": "d1"}', url=served.url)
        assert emitted.returncode == 0, emitted.stderr
        assert emitted.stdout.startswith("event evt_") and "\nrun run_" in emitted.stdout
        cli("emit", "doc.received", "--data", '{"docId": "d2"}', "--id", "k2", url=served.url)
        [leased] = store.lease_runs(worker, ["doc"], limit=1, ttl=600)
        step = StepRecord(leased.run.id, 0, "tool.ocr", "completed", {"u": 1}, "text", 1.0, 2.0)
        store.record_step(worker, step)
        store.finish_run(
            worker, leased.run.id, status="completed", output={"ok": 1}, attempt=1
        )
        run_id = leased.run.id

    data_dir = ["--data-dir", str(served.data_dir)]
    for args in (
        ["run", "list"],
        ["run", "list", "--json"],
        ["run", "list", "--json", "--status", "pending", "--limit", "1"],
        ["inspect", run_id],
        ["inspect", run_id, "--json"],
    ):
        remote = cli(*args, url=served.url)
        local = cli(*args, *data_dir)
        assert remote.returncode == local.returncode == 0, remote.stderr + local.stderr
        assert remote.stdout == local.stdout, args

    listed = json.loads(cli("run", "list", "--json", url=served.url).stdout)
    assert get_json(served.url + "/api/v1/runs") == listed
    assert get_json(served.url + "/api/v1/runs")[0]["event"]["data"] == {"docId": "d2"}
    inspected = json.loads(cli("inspect", run_id, "--json", url=served.url).stdout)
    assert get_json(f"{served.url}/api/v1/runs/{run_id}") == inspected

    missing = cli("inspect", "run_nope", url=served.url)
    assert missing.returncode == 2 and "no run with id 'run_nope'" in missing.stderr


def test_serve_refuses_to_start_without_a_token(tmp_path: Path) -> None:
    """`ironflow serve` without --dev and without a token exits 2 and says what to do."""
    result = cli("serve", "--port", "0", "--data-dir", str(tmp_path / "d"))
    assert result.returncode == 2
    assert "needs a token" in result.stderr and "--dev" in result.stderr
    assert not (tmp_path / "d").exists()


def test_serve_with_a_token_requires_it(tmp_path: Path) -> None:
    """`ironflow serve --token T` answers 401 without the token and 200 with it."""
    server = Served(tmp_path / "data", args=("--token", "t0ken"))
    try:
        server.start()
        with pytest.raises(urllib.error.HTTPError) as refused:
            get_json(server.url + "/api/v1/health")
        assert refused.value.code == 401
        refused.value.close()
        assert get_json(server.url + "/api/v1/health", token="t0ken")["status"] == "ok"
        listed = cli("run", "list", url=server.url)
        assert listed.returncode == 2 and "IRONFLOW_TOKEN" in listed.stderr
    finally:
        if server.child is not None:
            server.kill()


def test_sigterm_stops_the_server_cleanly(served: Served) -> None:
    """SIGTERM: the server says it stops, and exits 0."""
    assert served.child is not None
    assert served.kill(signal.SIGTERM) == 0
    served.child.line_starting("server stopped", timeout=10)


def test_dev_on_a_public_address_warns(tmp_path: Path) -> None:
    """`serve --dev --host 0.0.0.0` starts, with a warning that anyone can reach it."""
    server = Served(tmp_path / "data", args=("--dev", "--host", "0.0.0.0"))
    try:
        server.start()
        assert server.child is not None
        wait_until(lambda: server.child and server.child.stderr, what="the warning")
        assert "warning: --dev on 0.0.0.0" in "".join(server.child.stderr)
    finally:
        if server.child is not None:
            server.kill(signal.SIGTERM)

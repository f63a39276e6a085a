"""`ironflow serve` and `ironflow worker` as processes: /metrics behind the token and on
--metrics-port, a worker's --metrics-port, and --log-format json lines."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.process._workers import REPO, WAIT, wait_for

pytestmark = pytest.mark.process
TOKEN = "s3cret-token"


class Proc:
    """A child process whose output goes to files; killed by pid at the end."""

    def __init__(self, tmp: Path, name: str, argv: list[str], **env: str) -> None:
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("IRONFLOW_", "OTEL_"))}
        clean.update(PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1", **env)
        self.out, self.err = tmp / f"{name}.out", tmp / f"{name}.err"
        with open(self.out, "wb") as out, open(self.err, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", *argv],
                cwd=REPO,
                env=clean,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
            )

    def stdout(self) -> str:
        return self.out.read_text(errors="replace")

    def stderr(self) -> str:
        return self.err.read_text(errors="replace")

    def line(self, prefix: str) -> str:
        found = wait_for(
            lambda: (
                next((x for x in self.stdout().splitlines() if x.startswith(prefix)), None)
                or self.proc.poll() is not None
            ),
            f"a line starting {prefix!r}",
            self.describe,
        )
        assert isinstance(found, str), self.describe()
        return found

    def describe(self) -> str:
        return f"--- {self.proc.args}\n{self.stdout()}{self.stderr()}"

    def stop(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        self.proc.wait(timeout=WAIT)


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    started: list[Proc] = []
    try:
        yield started
    finally:
        for p in started:
            p.stop()


def get(url: str, token: str | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[s.name, tuple(sorted(s.labels.items()))] = s.value
    return out


def test_serve_and_worker_metrics_and_json_logs(tmp_path: Path, procs: list[Proc]) -> None:
    """A served store and a remote worker: /metrics needs the token on the API port and
    not on --metrics-port; the worker's own /metrics counts the runs it ran; its JSON
    log lines carry the run id and attempt."""
    data = tmp_path / "data"
    server = Proc(
        tmp_path,
        "serve",
        [
            "ironflow._cli._main",
            "serve",
            "--port",
            "0",
            "--data-dir",
            str(data),
            "--token",
            TOKEN,
            "--metrics-port",
            "0",
            "--log-format",
            "json",
        ],
    )
    procs.append(server)
    url = server.line("ironflow server listening on ").rsplit(" ", 1)[1]
    scrape_url = server.line("metrics at ").split()[2]

    assert get(url + "/metrics")[0] == 401
    status, text = get(url + "/metrics", TOKEN)
    assert status == 200 and "ironflow_store_commit_duration_seconds" in text
    assert get(scrape_url)[0] == 200  # the scrape port needs no token

    worker = Proc(
        tmp_path,
        "worker",
        [
            "ironflow.run",
            "worker",
            "tests.process.agents_for_tests",
            "--metrics-port",
            "0",
            "--log-format",
            "json",
        ],
        IRONFLOW_URL=url,
        IRONFLOW_TOKEN=TOKEN,
        IRONFLOW_TEST_LOG=str(tmp_path / "executions.log"),
        IRONFLOW_TEST_GATE=str(tmp_path / "open.gate"),
    )
    procs.append(worker)
    (tmp_path / "open.gate").touch()
    worker_metrics = worker.line("metrics at ").split()[2]
    worker.line("kill9-pipeline worker ready")

    run_ids = []
    for doc in ("invoice-1", "memo-2"):
        request = urllib.request.Request(
            url + "/api/v1/events",
            data=json.dumps({"name": "kill9.doc", "data": {"doc": doc}}).encode(),
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=30) as reply:
            run_ids += json.loads(reply.read())["run_ids"]

    def finished() -> bool:
        return all(
            json.loads(get(f"{url}/api/v1/runs/{r}", TOKEN)[1])["status"] == "completed"
            for r in run_ids
        )

    wait_for(finished, "both runs to complete", lambda: worker.describe() + server.describe())

    counted = samples(get(worker_metrics)[1])
    agent = (("agent", "kill9-pipeline"),)
    assert counted["ironflow_runs_started_total", agent] == 2
    assert counted["ironflow_runs_finished_total", (*agent, ("status", "completed"))] == 2
    assert counted["ironflow_steps_executed_total", agent] == 6
    # The worker goes through the server: the store's gauges are the server's to export.
    assert not any(name == "ironflow_runs" for name, _ in counted)
    held = samples(get(scrape_url)[1])
    assert held["ironflow_runs", (*agent, ("status", "completed"))] == 2
    assert held["ironflow_store_commit_duration_seconds_count", ()] > 0

    worker.stop(signal.SIGTERM)
    lines = [json.loads(x) for x in worker.stderr().splitlines() if x.startswith("{")]
    assert lines, worker.describe()
    assert all({"time", "level", "logger", "message"} <= set(x) for x in lines)
    done = [x for x in lines if x.get("outcome") == "completed"]
    assert sorted(x["run_id"] for x in done) == sorted(run_ids)
    assert all(x["attempt"] == 1 and x["level"] == "info" for x in done)
    picked = [x for x in lines if x.get("run_id") in run_ids and "picked up" in x["message"]]
    assert len(picked) == 2
    server.stop(signal.SIGTERM)
    served = [json.loads(x) for x in server.stderr().splitlines() if x.startswith("{")]
    assert all("message" in x for x in served)

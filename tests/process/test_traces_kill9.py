"""Traces across `kill -9`: real worker processes export OTLP/HTTP to a receiver here.

The receiver decodes each export with OpenTelemetry's own protobuf messages. The first
worker is SIGKILLed while its second tool waits at a gate; a second worker takes the run
over. The run must be one trace under the CLI's `emit` span, with the dead attempt's
span ended by the taker and every tool span exported by the process it ran in.
"""

from __future__ import annotations

import gzip
import http.server
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from ironflow import LmdbStore
from tests.process._workers import REPO, WAIT, Workers, finished, wait_for

pytestmark = pytest.mark.process


class Receiver:
    """An OTLP/HTTP trace endpoint on 127.0.0.1: keeps every span it is sent."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                request = ExportTraceServiceRequest.FromString(body)
                receiver.take(request)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def take(self, request: ExportTraceServiceRequest) -> None:
        for resource_spans in request.resource_spans:
            service = next(
                a.value.string_value
                for a in resource_spans.resource.attributes
                if a.key == "service.name"
            )
            for scope in resource_spans.scope_spans:
                for span in scope.spans:
                    attrs = {a.key: _value(a.value) for a in span.attributes}
                    with self.lock:
                        self.spans.append(
                            {
                                "service": service,
                                "name": span.name,
                                "trace_id": span.trace_id.hex(),
                                "span_id": span.span_id.hex(),
                                "parent": span.parent_span_id.hex() or None,
                                "status": span.status.code,
                                "attrs": attrs,
                            }
                        )

    def named(self, name: str) -> list[dict[str, Any]]:
        with self.lock:
            return [s for s in self.spans if s["name"] == name]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


def _value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return tuple(_value(x) for x in v.array_value.values)
    return getattr(v, kind) if kind else None


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    try:
        yield r
    finally:
        r.close()


def otel_env(receiver: Receiver, service: str) -> dict[str, str]:
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
        "OTEL_SERVICE_NAME": service,
        "OTEL_BSP_SCHEDULE_DELAY": "50",  # export within 50 ms, so the kill loses little
    }


def test_a_run_killed_mid_step_is_one_trace_across_processes(
    workers: Workers, store: LmdbStore, receiver: Receiver
) -> None:
    """kill -9 mid-step, another worker resumes: one trace under the CLI's emit span."""
    first = workers.start(**otel_env(receiver, "worker-1"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IRONFLOW_", "OTEL_"))}
    env.update(otel_env(receiver, "cli"), PYTHONPATH=str(REPO))
    emitted = subprocess.run(
        [
            sys.executable,
            "-m",
            "ironflow._cli._main",
            "emit",
            "kill9.doc",
            "--data",
            '{"doc": "invoice-7"}',
            "--data-dir",
            str(workers.data_dir),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert emitted.returncode == 0, emitted.stderr
    run_id = next(
        line.split()[1] for line in emitted.stdout.splitlines() if line.startswith("run ")
    )

    wait_for(
        lambda: (
            workers.executions(run_id)[("start", "tool.classify")] == 1
            and receiver.named("execute_tool extract")
        ),
        "step 0 exported and step 1 in flight",
        workers.describe,
    )
    first.send_signal(signal.SIGKILL)  # classify waits at its gate: killed mid-step
    first.wait(timeout=WAIT)
    workers.gate.touch()
    second = workers.start(**otel_env(receiver, "worker-2"))
    wait_for(lambda: finished(store, run_id), "the resumed run to finish", workers.describe)
    assert store.get_run(run_id).status == "completed"
    second.send_signal(signal.SIGTERM)  # drains, then sends its last spans
    assert second.wait(timeout=WAIT) == 0, workers.describe()

    [emit] = receiver.named("emit kill9.doc")
    assert emit["service"] == "cli" and emit["parent"] is None
    spans = [s for s in receiver.spans if s["attrs"].get("ironflow.run.id") == run_id]
    assert {s["trace_id"] for s in spans} == {emit["trace_id"]}
    attempts = sorted(
        (s for s in spans if s["name"] == "invoke_agent kill9-pipeline"),
        key=lambda s: s["attrs"]["ironflow.run.attempt"],
    )
    assert [(a["attrs"]["ironflow.run.attempt"], a["service"]) for a in attempts] == [
        (1, "worker-2"),  # the dead worker never ended its span: the taker did
        (2, "worker-2"),
    ], receiver.spans
    lost, resumed = attempts
    assert all(a["parent"] == emit["span_id"] for a in attempts)
    assert lost["attrs"]["ironflow.run.status"] == "lost"
    assert resumed["attrs"]["ironflow.run.status"] == "completed"
    assert resumed["attrs"]["ironflow.run.steps_replayed"] == 1

    def tools(parent: dict[str, Any]) -> list[tuple[str, str]]:
        kids = [s for s in spans if s["parent"] == parent["span_id"]]
        kids.sort(key=lambda s: s["attrs"]["ironflow.step.position"])
        return [(s["name"], s["service"]) for s in kids]

    # extract ran (and was exported) in the killed worker; classify died with it, its span
    # never ended; the taker replayed extract (no span) and ran classify and publish.
    assert tools(lost) == [("execute_tool extract", "worker-1")]
    assert tools(resumed) == [
        ("execute_tool classify", "worker-2"),
        ("execute_tool publish", "worker-2"),
    ]
    [extract] = receiver.named("execute_tool extract")
    assert extract["attrs"]["gen_ai.tool.call.id"] == f"{run_id}/tool.extract"

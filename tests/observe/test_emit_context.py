"""The emitter's trace context reaches the run's spans: HTTP traceparent, Client, CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from ironflow import AgentContext, Client, Worker, agent, tool
from ironflow._pure._trace import tracing_configured
from ironflow.contrib.otel import Tracing
from ironflow.server import BackgroundServer
from ironflow.store import LmdbStore, RemoteStore
from tests.helpers import serve_until_idle_or_crash

REPO = Path(__file__).resolve().parents[2]
PARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@tool
def shout(text: str) -> str:
    """Upper-case the text."""
    return text.upper()


@agent(id="echo", triggers=["echo.go"])
def echo(ctx: AgentContext) -> str:
    return shout(text=str(ctx.event.data.get("text", "")))


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    yield InMemorySpanExporter()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> Iterator[TracerProvider]:
    p = TracerProvider()
    p.add_span_processor(SimpleSpanProcessor(exporter))
    yield p
    p.shutdown()


def test_an_http_emit_with_traceparent_puts_the_run_in_that_trace(
    tmp_path: Path, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    """POST /api/v1/events with a traceparent header; a worker through the same server
    runs it: the attempt's span is a child of the header's span, in its trace."""
    local = LmdbStore(tmp_path / "data", sync=False)
    try:
        with BackgroundServer(local) as url:
            remote = RemoteStore(url, long_poll=0.2, give_up_after=5.0)
            try:
                worker = Worker(
                    [echo],
                    store=remote,
                    poll_interval=0.01,
                    observers=[Tracing(tracer_provider=provider)],
                )
                request = urllib.request.Request(
                    url + "/api/v1/events",
                    data=json.dumps({"name": "echo.go", "data": {"text": "hi"}}).encode(),
                    headers={
                        "Content-Type": "application/json",
                        "traceparent": PARENT,
                        "tracestate": "vendor=opaque",
                    },
                    method="POST",
                )
                with urllib.request.urlopen(request, timeout=30) as reply:
                    [run_id] = json.loads(reply.read())["run_ids"]
                serve_until_idle_or_crash(worker)
            finally:
                remote.close()
        assert local.get_run(run_id).output == "HI"
    finally:
        local.close()
    spans = {s.name: s for s in exporter.get_finished_spans()}
    attempt, step = spans["invoke_agent echo"], spans["execute_tool shout"]
    assert f"{attempt.context.trace_id:032x}" == PARENT.split("-")[1]
    assert attempt.parent is not None and attempt.parent.is_remote
    assert f"{attempt.parent.span_id:016x}" == PARENT.split("-")[2]
    assert attempt.context.trace_state.get("vendor") == "opaque"
    assert step.context.trace_id == attempt.context.trace_id
    assert step.parent is not None and step.parent.span_id == attempt.context.span_id


def test_client_emit_carries_the_current_span(
    tmp_path: Path, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    """Client.events.emit inside a span of the caller's: the run joins that span's trace."""
    client = Client(data_dir=tmp_path / "data")
    try:
        Worker([echo], store=client.store)  # registers the agent
        with provider.get_tracer("app").start_as_current_span("handle request") as span:
            [run_id] = client.events.emit("echo.go", {"text": "x"}).run_ids
        carried = client.runs.get(run_id).event.trace
        assert carried is not None
        ctx = span.get_span_context()
        assert carried.trace_id == f"{ctx.trace_id:032x}"
        assert carried.span_id == f"{ctx.span_id:016x}"
        [plain] = client.events.emit("echo.go", {"text": "y"}).run_ids
        assert client.runs.get(plain).event.trace is None
    finally:
        client.close()


def _cli(tmp_path: Path, *argv: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("IRONFLOW_", "OTEL_"))}
    clean.pop("TRACEPARENT", None)
    clean["PYTHONPATH"] = str(REPO)
    clean.update(env)
    return subprocess.run(
        [sys.executable, "-m", "ironflow._cli._main", *argv, "--data-dir", str(tmp_path / "d")],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean,
        cwd=REPO,
    )


def test_the_cli_emits_in_the_traceparent_it_is_given(tmp_path: Path) -> None:
    """`ironflow emit` with TRACEPARENT set (OpenTelemetry's environment carrier) stores it."""
    done = _cli(tmp_path, "emit", "echo.go", "--json", TRACEPARENT=PARENT)
    assert done.returncode == 0, done.stderr
    event_id = json.loads(done.stdout)["event_id"]
    store = LmdbStore(tmp_path / "d", sync=False)
    try:
        [event] = [e for e in store.events() if e.id == event_id]
        assert event.trace is not None and event.trace.traceparent == PARENT
    finally:
        store.close()


def test_the_cli_traced_makes_an_emit_span_and_keeps_stdout_clean(tmp_path: Path) -> None:
    """With OTEL_TRACES_EXPORTER=console, `ironflow emit` makes an `emit NAME` span under
    TRACEPARENT, prints it on stderr (stdout stays the JSON), and stores its context."""
    done = _cli(
        tmp_path, "emit", "echo.go", "--json", TRACEPARENT=PARENT, OTEL_TRACES_EXPORTER="console"
    )
    assert done.returncode == 0, done.stderr
    event_id = json.loads(done.stdout)["event_id"]  # stdout is only the JSON
    span = json.loads(done.stderr[done.stderr.index("{") :])
    assert span["name"] == "emit echo.go"
    assert span["kind"] == "SpanKind.PRODUCER"
    assert span["context"]["trace_id"] == "0x" + PARENT.split("-")[1]
    assert span["parent_id"] == "0x" + PARENT.split("-")[2]
    store = LmdbStore(tmp_path / "d", sync=False)
    try:
        [event] = [e for e in store.events() if e.id == event_id]
        assert event.trace is not None
        assert "0x" + event.trace.span_id == span["context"]["span_id"]
        assert event.trace.trace_id == PARENT.split("-")[1]
    finally:
        store.close()


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}, True),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x"}, False),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, False),
        ({"OTEL_SERVICE_NAME": "svc"}, False),
    ],
)
def test_tracing_is_on_only_when_the_environment_asks(env: dict[str, str], expected: bool) -> None:
    """The standard variables decide; a service name alone asks for nothing."""
    assert tracing_configured(env) is expected


@pytest.mark.process
def test_a_traced_server_roots_an_emit_that_came_without_context(tmp_path: Path) -> None:
    """`ironflow serve` with tracing on: an HTTP emit with no traceparent gets an
    `emit NAME` span on the server, and the event keeps that span's context."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("IRONFLOW_", "OTEL_"))}
    clean.update(
        PYTHONPATH=str(REPO),
        PYTHONUNBUFFERED="1",
        OTEL_TRACES_EXPORTER="console",
        OTEL_BSP_SCHEDULE_DELAY="50",
    )
    err = tmp_path / "serve.err"
    with open(tmp_path / "serve.out", "wb") as out, open(err, "wb") as errf:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ironflow._cli._main",
                "serve",
                "--dev",
                "--port",
                "0",
                "--data-dir",
                str(tmp_path / "d"),
            ],
            cwd=REPO,
            env=clean,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=errf,
        )
    try:
        deadline = time.monotonic() + 30
        url = ""
        while not url and time.monotonic() < deadline and server.poll() is None:
            for line in (tmp_path / "serve.out").read_text().splitlines():
                if line.startswith("ironflow server listening on "):
                    url = line.rsplit(" ", 1)[1]
            time.sleep(0.05)
        assert url, err.read_text()
        request = urllib.request.Request(
            url + "/api/v1/events",
            data=json.dumps({"name": "echo.go", "data": {}}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=30) as reply:
            event_id = json.loads(reply.read())["event_id"]
        while '"emit echo.go"' not in err.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    text = err.read_text()
    span, _ = json.JSONDecoder().raw_decode(text, text.index("{"))
    assert span["name"] == "emit echo.go" and span["parent_id"] is None
    store = LmdbStore(tmp_path / "d", sync=False)
    try:
        [event] = [e for e in store.events() if e.id == event_id]
        assert event.trace is not None
        assert "0x" + event.trace.span_id == span["context"]["span_id"]
    finally:
        store.close()

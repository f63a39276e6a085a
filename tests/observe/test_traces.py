"""Traces: the exact span tree of runs, through an in-memory span exporter.

Both workers of a crash test live in this process (one dies with SimulatedCrash, its
leases held under a stand-in process that is then SIGKILLed), so every span either of
them exports is seen here.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace as otel_trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from ironflow import AgentContext, Memory, Worker, agent, tool
from ironflow.contrib.otel import Tracing, attempt_span_id, run_trace_id
from ironflow.contrib.otel._tracing import trace_context_of
from ironflow.llm import Message, ScriptedProvider, ToolCall
from ironflow.store import LmdbStore
from ironflow.testing import CrashingStore, StandInWorker
from tests.helpers import serve_until_idle_or_crash

#: Where the crash test's tool dies: the CrashingStore of the worker to kill, while set.
CRASH: dict[str, Any] = {}


#: The span current inside each tool call, by (tool, n): a tool's own spans nest there.
CURRENT: dict[tuple[str, int], int] = {}


@tool
def fetch(n: int) -> int:
    """Add one."""
    CURRENT["fetch", n] = otel_trace.get_current_span().get_span_context().span_id
    return n + 1


@tool
def flaky(n: int) -> int:
    """Double, unless this worker is to die right here, mid-step."""
    store = CRASH.pop("store", None)
    if store is not None:
        store.crash_now("inside flaky")
    return n * 2


@agent(id="traced", triggers=["traced.go"])
def traced(ctx: AgentContext) -> int:
    a = fetch(n=1)
    b = flaky(n=a)
    return fetch(n=b)


SCRIPT = ScriptedProvider(
    [
        ToolCall("fetch", {"n": 1}, id="call_a"),
        "the answer is 3",
    ]
)


@agent(id="asker", triggers=["asker.go"])
def asker(ctx: AgentContext) -> str:
    first = ctx.llm(
        model="scripted-1",
        messages="what is one plus one?",
        tools=[fetch],
        provider=SCRIPT,
        max_tokens=64,
        temperature=0.5,
    )
    call = first.tool_calls[0]
    result = fetch(**call.arguments)
    second = ctx.llm(
        model="scripted-1",
        messages=[
            Message.user("what is one plus one?"),
            first,
            {"role": "tool", "content": str(result), "tool_call_id": call.id},
        ],
        provider=SCRIPT,
    )
    return str(second.text)


@agent(id="kid", triggers=[])
def kid(ctx: AgentContext) -> int:
    return fetch(n=10)


@agent(id="parent", triggers=["parent.go"])
def parent(ctx: AgentContext) -> int:
    child = ctx.spawn(kid, {})
    return int(child.result())


@agent(id="noter", triggers=["noter.go"], memory=Memory(stream="traced-notes"))
def noter(ctx: AgentContext) -> int:
    return ctx.memory.append("traced.noted", {"n": 1}).version


@agent(id="listener", triggers=["traced.noted"])
def listener(ctx: AgentContext) -> int:
    return fetch(n=int(ctx.event.data["n"]))


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> Iterator[TracerProvider]:
    p = TracerProvider()
    p.add_span_processor(SimpleSpanProcessor(exporter))
    yield p
    p.shutdown()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[LmdbStore]:
    s = LmdbStore(tmp_path / "data", sync=False)
    yield s
    s.close()


def run_to_idle(store: Any, agents: list[Any], provider: TracerProvider, **kw: Any) -> Worker:
    worker = Worker(
        agents,
        store=store,
        poll_interval=0.01,
        observers=[Tracing(tracer_provider=provider)],
        **kw,
    )
    serve_until_idle_or_crash(worker)
    return worker


def by_name(spans: list[ReadableSpan]) -> dict[str, list[ReadableSpan]]:
    out: dict[str, list[ReadableSpan]] = {}
    for s in spans:
        out.setdefault(s.name, []).append(s)
    return out


def parent_id(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def test_a_run_killed_mid_step_and_resumed_elsewhere_is_one_trace(
    store: LmdbStore, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    """Killed inside its second tool, a run resumed by another worker is one trace: the
    emitter's span, two invoke_agent spans (the dead one ended by the taker, status
    lost), and tool spans where the tools really ran, none for the replayed one."""
    tracer = provider.get_tracer("test")
    Worker([traced], store=store)  # registers the agent
    with tracer.start_as_current_span("emit traced.go") as emit_span:
        carried = trace_context_of(emit_span.get_span_context())
        [run_id] = store.emit("traced.go", {}, trace=carried).run_ids
    exporter.clear()

    doomed = StandInWorker("doomed")
    crashing = CrashingStore(store)
    CRASH["store"] = crashing
    first = Worker(
        [traced],
        store=crashing,
        poll_interval=0.01,
        lease_ttl=60,
        observers=[Tracing(tracer_provider=provider)],
    )
    first.info = doomed.info
    serve_until_idle_or_crash(first)
    assert crashing.crashed and "store" not in CRASH
    doomed.kill()
    run_to_idle(store, [traced], provider, lease_ttl=60)
    assert store.get_run(run_id).status == "completed"
    assert store.get_run(run_id).output == 5

    spans = exporter.get_finished_spans()
    trace_id = emit_span.get_span_context().trace_id
    assert {s.context.trace_id for s in spans} == {trace_id}
    names = by_name(spans)
    assert sorted(names) == ["execute_tool fetch", "execute_tool flaky", "invoke_agent traced"]
    attempts = sorted(
        names["invoke_agent traced"], key=lambda s: s.attributes["ironflow.run.attempt"]
    )
    assert [s.attributes["ironflow.run.attempt"] for s in attempts] == [1, 2]
    lost, resumed = attempts
    for s in attempts:
        assert parent_id(s) == emit_span.get_span_context().span_id
        assert s.context.span_id == attempt_span_id(run_id, s.attributes["ironflow.run.attempt"])
        assert s.attributes["gen_ai.operation.name"] == "invoke_agent"
        assert s.attributes["gen_ai.agent.name"] == s.attributes["gen_ai.agent.id"] == "traced"
        assert s.attributes["ironflow.run.id"] == run_id
    assert lost.attributes["ironflow.run.status"] == "lost"
    assert lost.attributes["ironflow.worker.id"] == "doomed"
    assert lost.status.status_code is StatusCode.ERROR
    assert resumed.attributes["ironflow.run.status"] == "completed"
    assert resumed.attributes["ironflow.run.taken_from"] == "doomed"
    assert resumed.attributes["ironflow.run.steps_replayed"] == 1
    assert resumed.attributes["ironflow.run.steps_executed"] == 2

    def tools_of(attempt: ReadableSpan) -> list[tuple[str, str, str]]:
        kids = [s for s in spans if parent_id(s) == attempt.context.span_id]
        return [
            (s.name, s.attributes["gen_ai.tool.call.id"], s.attributes["ironflow.step.outcome"])
            for s in sorted(kids, key=lambda s: s.attributes["ironflow.step.position"])
        ]

    # fetch ran in the first worker; flaky started there and died with it; the second
    # worker replayed fetch (no span), ran flaky again and then the second fetch.
    assert tools_of(lost) == [
        ("execute_tool fetch", f"{run_id}/tool.fetch", "completed"),
        ("execute_tool flaky", f"{run_id}/tool.flaky", "stopped"),
    ]
    assert tools_of(resumed) == [
        ("execute_tool flaky", f"{run_id}/tool.flaky", "completed"),
        ("execute_tool fetch", f"{run_id}/tool.fetch#2", "completed"),
    ]
    died = next(s for s in names["execute_tool flaky"] if parent_id(s) == lost.context.span_id)
    assert died.status.status_code is StatusCode.ERROR
    assert died.attributes["error.type"] == "SimulatedCrash"
    for s in names["execute_tool fetch"]:
        assert s.attributes["gen_ai.operation.name"] == "execute_tool"
        assert s.attributes["gen_ai.tool.name"] == "fetch"
        assert s.attributes["gen_ai.tool.type"] == "function"
        assert "gen_ai.tool.call.arguments" not in s.attributes  # contents: opt-in only


def test_an_llm_step_has_the_genai_attributes(
    store: LmdbStore, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    """A ctx.llm step is a chat span with model, provider, usage and finish reasons;
    message contents only with capture_content."""
    worker = Worker(
        [asker],
        store=store,
        poll_interval=0.01,
        observers=[Tracing(tracer_provider=provider, capture_content=True)],
    )
    [run_id] = store.emit("asker.go", {}).run_ids
    serve_until_idle_or_crash(worker)
    assert store.get_run(run_id).output == "the answer is 3"
    spans = exporter.get_finished_spans()
    [attempt] = [s for s in spans if s.name == "invoke_agent asker"]
    assert {s.context.trace_id for s in spans} == {run_trace_id(run_id)}
    assert attempt.parent is None  # emitted without a trace context: the trace's root
    chats = sorted(
        (s for s in spans if s.name == "chat scripted-1"),
        key=lambda s: s.attributes["ironflow.step.position"],
    )
    assert len(chats) == 2
    first, second = chats
    assert first.kind.name == "CLIENT"
    assert parent_id(first) == attempt.context.span_id
    expected = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "scripted",
        "gen_ai.request.model": "scripted-1",
        "gen_ai.response.model": "scripted-1",
        "gen_ai.request.max_tokens": 64,
        "gen_ai.request.temperature": 0.5,
        "gen_ai.usage.input_tokens": 5,
        "gen_ai.usage.output_tokens": len(['{"n":', "1}"]) + 1,
        "gen_ai.response.finish_reasons": ("tool_calls",),
        "ironflow.step.id": "llm.scripted-1",
        "ironflow.step.outcome": "completed",
    }
    assert {k: first.attributes[k] for k in expected} == expected
    assert second.attributes["gen_ai.response.finish_reasons"] == ("stop",)
    assert second.attributes["gen_ai.usage.output_tokens"] == 4
    assert second.attributes["ironflow.step.id"] == "llm.scripted-1#2"
    assert '"content":"what is one plus one?"' in first.attributes["gen_ai.input.messages"]
    assert '"type":"tool_call"' in first.attributes["gen_ai.output.messages"]
    assert '"type":"tool_call_response"' in second.attributes["gen_ai.input.messages"]
    [tool_span] = [s for s in spans if s.name == "execute_tool fetch"]
    assert tool_span.attributes["gen_ai.tool.call.arguments"] == '{"n":1}'
    assert tool_span.attributes["gen_ai.tool.call.result"] == "2"


def test_without_capture_no_content_is_recorded(
    store: LmdbStore,
    provider: TracerProvider,
    exporter: InMemorySpanExporter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """By default (the variable unset) no message, argument or result is on any span."""
    monkeypatch.delenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", raising=False)
    Worker([asker], store=store)  # registers the agent
    [run_id] = store.emit("asker.go", {}).run_ids
    run_to_idle(store, [asker], provider)
    assert store.get_run(run_id).status == "completed"
    content = {
        "gen_ai.input.messages",
        "gen_ai.output.messages",
        "gen_ai.tool.call.arguments",
        "gen_ai.tool.call.result",
    }
    spans = exporter.get_finished_spans()
    assert len(spans) == 4
    for span in spans:
        assert not content & set(span.attributes or {})


def test_a_child_run_joins_its_parents_trace_under_the_spawn_step(
    store: LmdbStore, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    """The child's attempts are children of the parent's spawn span, in the parent's trace;
    the parent's resumed attempt replays the spawn (no second spawn span)."""
    worker = Worker(
        [parent, kid],
        store=store,
        poll_interval=0.01,
        observers=[Tracing(tracer_provider=provider)],
    )
    [run_id] = store.emit("parent.go", {}).run_ids
    serve_until_idle_or_crash(worker)
    assert store.get_run(run_id).output == 11
    spans = exporter.get_finished_spans()
    assert {s.context.trace_id for s in spans} == {run_trace_id(run_id)}
    names = by_name(spans)
    [spawn] = names["spawn.kid"]
    [child_attempt] = names["invoke_agent kid"]
    assert parent_id(child_attempt) == spawn.context.span_id
    [wait] = names["spawn.kid.result"]
    assert wait.attributes["ironflow.step.outcome"] in ("suspended", "completed")
    parents = sorted(
        names["invoke_agent parent"], key=lambda s: s.attributes["ironflow.run.attempt"]
    )
    assert [p.attributes["ironflow.run.status"] for p in parents][-1] == "completed"
    assert parent_id(spawn) == parents[0].context.span_id


def test_a_run_its_memory_append_starts_joins_the_appenders_trace(
    store: LmdbStore, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    """An agent triggered by an event another run appended to its stream runs in that
    run's trace, under the append step, as a spawned child runs under its spawn step."""
    worker = Worker(
        [noter, listener],
        store=store,
        poll_interval=0.01,
        observers=[Tracing(tracer_provider=provider)],
    )
    [run_id] = store.emit("noter.go", {}).run_ids
    serve_until_idle_or_crash(worker)
    [started] = store.list_runs(agent="listener")
    assert started.output == 2
    assert started.event.trace is not None
    spans = exporter.get_finished_spans()
    assert {s.context.trace_id for s in spans} == {run_trace_id(run_id)}
    names = by_name(spans)
    [append] = names["memory.append"]
    [listening] = names["invoke_agent listener"]
    assert parent_id(listening) == append.context.span_id
    [noting] = names["invoke_agent noter"]
    assert parent_id(append) == noting.context.span_id


def test_tracing_costs_nothing_it_is_not_asked_for() -> None:
    """A worker without observers never imports OpenTelemetry."""
    import subprocess
    import sys

    probe = (
        "import sys, ironflow\n"
        "from ironflow import Worker\n"
        "import ironflow.replay, ironflow._worker._worker\n"
        "print(' '.join(m for m in sys.modules if m.startswith(('opentelemetry', 'prometheus'))))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert proc.stdout.strip() == ""


@tool
async def slow_add(n: int) -> int:
    """Add one, asynchronously."""
    import asyncio

    await asyncio.sleep(0.01)
    CURRENT["slow_add", n] = otel_trace.get_current_span().get_span_context().span_id
    return n + 1


@agent(id="gathered", triggers=["gathered.go"])
async def gathered(ctx: AgentContext) -> list[int]:
    import asyncio

    return list(await asyncio.gather(slow_add(n=1), slow_add(n=2), fetch(n=3)))


def test_an_async_runs_gathered_steps_are_siblings_under_its_attempt(
    store: LmdbStore, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    """Steps gathered in an async agent each get a span, all children of the attempt's,
    whatever order they finish in; a span made inside a tool nests under the tool's."""
    worker = Worker(
        [gathered],
        store=store,
        poll_interval=0.01,
        observers=[Tracing(tracer_provider=provider)],
    )
    [run_id] = store.emit("gathered.go", {}).run_ids
    serve_until_idle_or_crash(worker)
    assert store.get_run(run_id).output == [2, 3, 4]
    spans = exporter.get_finished_spans()
    [attempt] = [s for s in spans if s.name == "invoke_agent gathered"]
    steps = sorted(
        (s for s in spans if s.name.startswith("execute_tool")),
        key=lambda s: s.attributes["ironflow.step.position"],
    )
    assert [(s.name, s.attributes["gen_ai.tool.call.id"]) for s in steps] == [
        ("execute_tool slow_add", f"{run_id}/tool.slow_add"),
        ("execute_tool slow_add", f"{run_id}/tool.slow_add#2"),
        ("execute_tool fetch", f"{run_id}/tool.fetch"),
    ]
    assert all(parent_id(s) == attempt.context.span_id for s in steps)
    assert attempt.attributes["ironflow.run.steps_executed"] == 3
    # Inside each tool (a coroutine, or a sync tool on a pool thread) its span is current.
    assert [CURRENT["slow_add", 1], CURRENT["slow_add", 2], CURRENT["fetch", 3]] == [
        s.context.span_id for s in steps
    ]

"""The OpenAI and Anthropic adapters, against local HTTP stubs of each API on 127.0.0.1."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from ironflow import AgentContext, agent, tool
from ironflow.errors import LlmError, MissingExtraError
from ironflow.llm import (
    AnthropicProvider,
    LlmRequest,
    LlmResponse,
    Message,
    OpenAIProvider,
    ToolCall,
    Usage,
    run_tools_loop,
    tool_schema,
)
from ironflow.store import LmdbStore
from tests.llm.conftest import run_agent


class Stub:
    """A tiny HTTP API: answers POSTs to known paths with queued JSON, records each request."""

    def __init__(self) -> None:
        self.answers: dict[str, list[dict[str, Any]]] = {}
        self.requests: list[tuple[str, dict[str, str], dict[str, Any]]] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                headers = {k.lower(): v for k, v in self.headers.items()}
                stub.requests.append((self.path, headers, body))
                queue = stub.answers.get(self.path.split("?")[0])
                if not queue:
                    self.send_response(404)
                    self.end_headers()
                    return
                payload = json.dumps(queue.pop(0)).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output clean

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def answer(self, path: str, *payloads: dict[str, Any]) -> None:
        self.answers.setdefault(path, []).extend(payloads)

    def bodies(self) -> list[dict[str, Any]]:
        return [body for _, _, body in self.requests]


@pytest.fixture
def stub(monkeypatch: pytest.MonkeyPatch) -> Iterator[Stub]:
    """A running stub on a free port; proxies bypassed so requests stay on 127.0.0.1."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    s = Stub()
    s.thread.start()
    try:
        yield s
    finally:
        s.server.shutdown()
        s.server.server_close()
        s.thread.join(5)


@tool(description="Weather for a city")
def weather(city: str) -> dict[str, Any]:
    return {"city": city, "celsius": 21}


CONVERSATION = LlmRequest(
    model="test-model",
    messages=(
        Message.system("be brief"),
        Message.user("weather in Paris?"),
        Message.assistant(None, (ToolCall("weather", {"city": "Paris"}, id="c1"),)),
        Message.tool("c1", '{"celsius": 21}', name="weather"),
    ),
    tools=(tool_schema(weather),),
    params={"temperature": 0.0},
)


def openai_completion(message: dict[str, Any], finish: str = "stop") -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "test-model-2024",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16},
    }


def anthropic_message(content: list[dict[str, Any]], stop: str = "end_turn") -> dict[str, Any]:
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "test-model-2024",
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": {"input_tokens": 13, "output_tokens": 7},
    }


def openai_provider(stub: Stub) -> OpenAIProvider:
    pytest.importorskip("openai")
    return OpenAIProvider(api_key="test-key", base_url=f"{stub.url}/v1", max_retries=0)


def anthropic_provider(stub: Stub) -> AnthropicProvider:
    pytest.importorskip("anthropic")
    return AnthropicProvider(api_key="test-key", base_url=stub.url, max_retries=0)


def test_openai_request_and_response_shapes(stub: Stub) -> None:
    """Messages, tool results and schemas go out in Chat Completions form; the answer comes back."""
    provider = openai_provider(stub)
    stub.answer("/v1/chat/completions", openai_completion({"role": "assistant", "content": "21C"}))
    response = provider.complete(CONVERSATION)
    assert response == LlmResponse(
        content="21C", usage=Usage(11, 5), model="test-model-2024", stop_reason="stop"
    )
    path, headers, body = stub.requests[0]
    assert path == "/v1/chat/completions"
    assert headers["authorization"] == "Bearer test-key"
    assert body["model"] == "test-model" and body["temperature"] == 0.0
    assert body["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": '{"celsius": 21}'},
    ]
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "weather",
                "description": "Weather for a city",
                "parameters": tool_schema(weather).parameters,
            },
        }
    ]


def test_openai_tool_calls_are_parsed_and_bad_arguments_refused(stub: Stub) -> None:
    """Tool calls come back as ToolCalls with JSON arguments; non-JSON arguments are an LlmError."""
    provider = openai_provider(stub)

    def call(arguments: str) -> dict[str, Any]:
        tc = {
            "id": "call_9",
            "type": "function",
            "function": {"name": "weather", "arguments": arguments},
        }
        return openai_completion(
            {"role": "assistant", "content": None, "tool_calls": [tc]}, "tool_calls"
        )

    stub.answer("/v1/chat/completions", call('{"city": "Oslo"}'), call("{not json"))
    response = provider.complete(LlmRequest(model="m", messages=(Message.user("hi"),)))
    assert response.tool_calls == (ToolCall("weather", {"city": "Oslo"}, id="call_9"),)
    assert response.stop_reason == "tool_calls" and response.content is None
    assert "tools" not in stub.bodies()[0]
    with pytest.raises(LlmError, match="not a JSON object"):
        provider.complete(LlmRequest(model="m", messages=(Message.user("hi"),)))


def test_anthropic_request_and_response_shapes(stub: Stub) -> None:
    """System goes to `system`, tool results to a user turn, max_tokens defaults; blocks parse."""
    provider = anthropic_provider(stub)
    stub.answer(
        "/v1/messages",
        anthropic_message(
            [
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "tu_1", "name": "weather", "input": {"city": "Oslo"}},
            ],
            "tool_use",
        ),
    )
    response = provider.complete(CONVERSATION)
    assert response == LlmResponse(
        content="Checking.",
        tool_calls=(ToolCall("weather", {"city": "Oslo"}, id="tu_1"),),
        usage=Usage(13, 7),
        model="test-model-2024",
        stop_reason="tool_use",
    )
    path, headers, body = stub.requests[0]
    assert path == "/v1/messages"
    # The key travels as x-api-key or as a bearer token, depending on the SDK release.
    assert "test-key" in headers.get("x-api-key", "") + headers.get("authorization", "")
    assert body["system"] == "be brief"
    assert body["max_tokens"] == 1024 and body["temperature"] == 0.0
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "weather in Paris?"}]},
        {
            "role": "assistant",
            "content": [
                {"type": "tool_use", "id": "c1", "name": "weather", "input": {"city": "Paris"}}
            ],
        },
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "c1", "content": '{"celsius": 21}'}],
        },
    ]
    assert body["tools"] == [
        {
            "name": "weather",
            "description": "Weather for a city",
            "input_schema": tool_schema(weather).parameters,
        }
    ]


@agent(id="sdk-agent", triggers=["sdk"])
def sdk_agent(ctx: AgentContext) -> dict[str, Any]:
    provider = ctx.event.data["provider"]
    chosen = PROVIDERS[provider]
    result = run_tools_loop(
        ctx, model="test-model", messages="weather?", tools=[weather], provider=chosen
    )
    return {"text": result.text, "tokens": result.usage.total_tokens}


PROVIDERS: dict[str, Any] = {}


@pytest.mark.parametrize("which", ["openai", "anthropic"])
def test_a_tools_loop_through_each_sdk_records_steps(
    stub: Stub, store: LmdbStore, which: str
) -> None:
    """End to end: a run's tools loop through the real SDK and the stub, recorded step by step."""
    if which == "openai":
        PROVIDERS[which] = openai_provider(stub)
        tc = {
            "id": "c1",
            "type": "function",
            "function": {"name": "weather", "arguments": '{"city": "Rome"}'},
        }
        stub.answer(
            "/v1/chat/completions",
            openai_completion({"role": "assistant", "content": None, "tool_calls": [tc]}),
            openai_completion({"role": "assistant", "content": "Rome: 21C"}),
        )
    else:
        PROVIDERS[which] = anthropic_provider(stub)
        stub.answer(
            "/v1/messages",
            anthropic_message(
                [{"type": "tool_use", "id": "c1", "name": "weather", "input": {"city": "Rome"}}]
            ),
            anthropic_message([{"type": "text", "text": "Rome: 21C"}]),
        )
    run = run_agent(store, sdk_agent, {"provider": which})
    assert run.status == "completed", run.error
    assert run.output["text"] == "Rome: 21C"
    assert run.output["tokens"] == (32 if which == "openai" else 40)
    steps = store.get_steps(run.id)
    assert [s.id for s in steps] == ["llm.test-model", "tool.weather", "llm.test-model#2"]
    assert steps[0].output["tool_calls"] == [
        {"name": "weather", "arguments": {"city": "Rome"}, "id": "c1"}
    ]
    assert len(stub.requests) == 2


def test_a_missing_sdk_names_the_extra_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the SDK installed, constructing its provider says which extra to install."""
    monkeypatch.setitem(sys.modules, "openai", None)
    monkeypatch.setitem(sys.modules, "anthropic", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'ironflow\[openai\]'"):
        OpenAIProvider()
    with pytest.raises(ImportError, match=r"pip install 'ironflow\[anthropic\]'"):
        AnthropicProvider()


@pytest.mark.process
def test_the_core_never_imports_an_sdk() -> None:
    """Importing ironflow and ironflow.llm loads neither SDK; only constructing a provider does."""
    code = (
        "import sys, ironflow, ironflow.llm; "
        "print(sorted(m for m in ('openai', 'anthropic') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "[]"

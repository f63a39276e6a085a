"""An adapter over the official ``openai`` SDK (Chat Completions), an optional extra."""

from __future__ import annotations

import json
import threading
from typing import Any

from ironflow.errors import LlmError, MissingExtraError
from ironflow.llm._sdk import split_params
from ironflow.llm._types import LlmRequest, LlmResponse, Message, ToolCall, Usage

__all__ = ["OpenAIProvider"]


class OpenAIProvider:
    """Answers ``ctx.llm`` calls with OpenAI's Chat Completions API (or a compatible one).

    Needs ``pip install 'ironflow[openai]'``; the SDK is imported here, never by the
    core. Without ``client=``, an ``openai.OpenAI(api_key=..., base_url=...,
    **client_options)`` is made at the first call, so constructing this where no key is
    set (a worker that only replays) is fine; the SDK's own defaults apply
    (``OPENAI_API_KEY``, ``OPENAI_BASE_URL``, its retries). Thread-safe, as the SDK
    client is. SDK errors propagate and fail the step.
    """

    def __init__(
        self,
        *,
        client: Any = None,
        api_key: str | None = None,
        base_url: str | None = None,
        **client_options: Any,
    ) -> None:
        try:
            import openai
        except ImportError:
            raise MissingExtraError("OpenAIProvider", "openai", "openai") from None
        self._sdk: Any = openai
        self._client: Any = client
        self._options: dict[str, Any] = {"api_key": api_key, "base_url": base_url}
        self._options.update(client_options)
        self._lock = threading.Lock()

    @property
    def client(self) -> Any:
        """The ``openai.OpenAI`` client, made on first use."""
        with self._lock:
            if self._client is None:
                self._client = self._sdk.OpenAI(**self._options)
            return self._client

    def complete(self, request: LlmRequest) -> LlmResponse:
        """One ``chat.completions.create`` call; ``request.params`` are passed through."""
        kwargs: dict[str, Any] = {
            **request.params,
            "model": request.model,
            "messages": [_message(m) for m in request.messages],
        }
        if request.tools:
            kwargs["tools"] = [
                {
                    "type": "function",
                    "function": {
                        "name": t.name,
                        **({"description": t.description} if t.description else {}),
                        "parameters": t.parameters,
                    },
                }
                for t in request.tools
            ]
        create = self.client.chat.completions.create
        known, extra = split_params(create, kwargs)
        if extra:
            known["extra_body"] = {**extra, **known.get("extra_body", {})}
        answer: dict[str, Any] = create(**known).model_dump()
        return _response(answer)


def _message(m: Message) -> dict[str, Any]:
    if m.role == "tool":
        return {"role": "tool", "tool_call_id": m.tool_call_id or "", "content": m.content or ""}
    out: dict[str, Any] = {"role": m.role, "content": m.content}
    if m.role == "assistant" and m.tool_calls:
        out["tool_calls"] = [
            {
                "id": c.id,
                "type": "function",
                "function": {"name": c.name, "arguments": json.dumps(c.arguments)},
            }
            for c in m.tool_calls
        ]
    elif m.content is None:
        out["content"] = ""
    return out


def _response(answer: dict[str, Any]) -> LlmResponse:
    choices = answer.get("choices") or []
    if not choices:
        raise LlmError(f"OpenAI answered with no choices: {str(answer)[:200]}")
    choice = choices[0]
    message = choice.get("message") or {}
    calls = []
    for tc in message.get("tool_calls") or []:
        function = tc.get("function") or {}
        raw = function.get("arguments") or "{}"
        try:
            arguments = json.loads(raw)
        except ValueError:
            arguments = None
        if not isinstance(arguments, dict):
            raise LlmError(
                f"OpenAI: the model called {function.get('name')!r} with arguments that are "
                f"not a JSON object: {raw[:200]!r}"
            )
        calls.append(ToolCall(name=function.get("name") or "", arguments=arguments, id=tc["id"]))
    usage = answer.get("usage") or {}
    return LlmResponse(
        content=message.get("content"),
        tool_calls=tuple(calls),
        usage=Usage(
            input_tokens=usage.get("prompt_tokens") or 0,
            output_tokens=usage.get("completion_tokens") or 0,
        ),
        model=answer.get("model") or "",
        stop_reason=choice.get("finish_reason"),
    )

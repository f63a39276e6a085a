"""An adapter over the official ``anthropic`` SDK (Messages API), an optional extra."""

from __future__ import annotations

import threading
from typing import Any

from ironflow.errors import MissingExtraError
from ironflow.llm._sdk import split_params
from ironflow.llm._types import LlmRequest, LlmResponse, Message, ToolCall, Usage

__all__ = ["AnthropicProvider"]


class AnthropicProvider:
    """Answers ``ctx.llm`` calls with Anthropic's Messages API.

    Needs ``pip install 'ironflow[anthropic]'``; the SDK is imported here, never by the
    core. Without ``client=``, an ``anthropic.Anthropic(api_key=..., base_url=...,
    **client_options)`` is made at the first call (the SDK's defaults apply:
    ``ANTHROPIC_API_KEY``, its retries). System messages become the ``system``
    parameter; tool results become ``tool_result`` blocks of a user turn. The API
    requires ``max_tokens``: a call without it in its params gets ``max_tokens``
    given here. Thread-safe, as the SDK client is. SDK errors propagate and fail
    the step.
    """

    def __init__(
        self,
        *,
        client: Any = None,
        api_key: str | None = None,
        base_url: str | None = None,
        max_tokens: int = 1024,
        **client_options: Any,
    ) -> None:
        try:
            import anthropic
        except ImportError:
            raise MissingExtraError("AnthropicProvider", "anthropic", "anthropic") from None
        self._sdk: Any = anthropic
        self._client: Any = client
        self._options: dict[str, Any] = {"api_key": api_key, "base_url": base_url}
        self._options.update(client_options)
        self.max_tokens = max_tokens
        self._lock = threading.Lock()

    @property
    def client(self) -> Any:
        """The ``anthropic.Anthropic`` client, made on first use."""
        with self._lock:
            if self._client is None:
                self._client = self._sdk.Anthropic(**self._options)
            return self._client

    def complete(self, request: LlmRequest) -> LlmResponse:
        """One ``messages.create`` call; ``request.params`` are passed through."""
        system = "\n\n".join(m.content or "" for m in request.messages if m.role == "system")
        kwargs: dict[str, Any] = {
            "max_tokens": self.max_tokens,
            **request.params,
            "model": request.model,
            "messages": _turns(request.messages),
        }
        if system:
            kwargs["system"] = system
        if request.tools:
            kwargs["tools"] = [
                {
                    "name": t.name,
                    **({"description": t.description} if t.description else {}),
                    "input_schema": t.parameters,
                }
                for t in request.tools
            ]
        create = self.client.messages.create
        known, extra = split_params(create, kwargs)
        if extra:
            known["extra_body"] = {**extra, **known.get("extra_body", {})}
        answer: dict[str, Any] = create(**known).model_dump()
        return _response(answer)


def _blocks(m: Message) -> list[dict[str, Any]]:
    if m.role == "tool":
        return [
            {"type": "tool_result", "tool_use_id": m.tool_call_id or "", "content": m.content or ""}
        ]
    # The API refuses empty text blocks, so an assistant turn of only tool calls has none.
    blocks: list[dict[str, Any]] = [{"type": "text", "text": m.content}] if m.content else []
    blocks.extend(
        {"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments} for c in m.tool_calls
    )
    return blocks


def _turns(messages: tuple[Message, ...]) -> list[dict[str, Any]]:
    """Messages as alternating user/assistant turns; tool results join the user's side."""
    turns: list[dict[str, Any]] = []
    for m in messages:
        if m.role == "system":
            continue
        role = "assistant" if m.role == "assistant" else "user"
        blocks = _blocks(m)
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    return turns


def _response(answer: dict[str, Any]) -> LlmResponse:
    texts: list[str] = []
    calls: list[ToolCall] = []
    for block in answer.get("content") or []:
        if block.get("type") == "text":
            texts.append(block.get("text") or "")
        elif block.get("type") == "tool_use":
            calls.append(
                ToolCall(
                    name=block["name"], arguments=dict(block.get("input") or {}), id=block["id"]
                )
            )
    usage = answer.get("usage") or {}
    return LlmResponse(
        content="".join(texts) if texts else None,
        tool_calls=tuple(calls),
        usage=Usage(
            input_tokens=usage.get("input_tokens") or 0,
            output_tokens=usage.get("output_tokens") or 0,
        ),
        model=answer.get("model") or "",
        stop_reason=answer.get("stop_reason"),
    )

"""Pydantic AI's messages as the records ``ctx.llm`` keeps: LlmRequest in, LlmResponse out.

The request is what a replay is checked against, so it keeps what the model is told
(instructions, prompts, tool results, tool schemas, settings) and drops what changes
from one execution to the next on its own (timestamps, run ids). The response keeps
Pydantic AI's own ``ModelResponse`` beside the ``LlmResponse`` fields, so a replay hands
the framework back exactly what the model said.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from pydantic_ai.messages import (
    ModelMessage,
    ModelMessagesTypeAdapter,
    ModelRequest,
    ModelResponse,
    RetryPromptPart,
    SystemPromptPart,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
    UserPromptPart,
)
from pydantic_ai.models import ModelRequestParameters
from pydantic_ai.settings import ModelSettings
from pydantic_core import to_jsonable_python

from ironflow.contrib._steps import llm_output
from ironflow.llm import LlmRequest, LlmResponse, Message, ToolCall, ToolSchema, Usage

__all__ = ["FRAMEWORK", "llm_request", "llm_response_output", "model_response"]

#: The key under which an ``llm.<model>`` step's output keeps Pydantic AI's response.
FRAMEWORK = "pydantic_ai"


def _jsonable(value: Any) -> Any:
    # A value JSON cannot hold is named by its type: a repr could hold an address
    # that differs on every execution and make a faithful replay look diverged.
    return to_jsonable_python(value, fallback=lambda v: f"<{type(v).__name__}>")


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        return "\n".join(_text(item) for item in content)
    return json.dumps(_jsonable(content), sort_keys=True)


def _request_messages(message: ModelRequest) -> list[Message]:
    out: list[Message] = []
    for part in message.parts:
        if isinstance(part, SystemPromptPart):
            out.append(Message.system(part.content))
        elif isinstance(part, UserPromptPart):
            out.append(Message.user(_text(part.content)))
        elif isinstance(part, ToolReturnPart):
            out.append(
                Message.tool(part.tool_call_id, part.model_response_str(), name=part.tool_name)
            )
        elif isinstance(part, RetryPromptPart):
            if part.tool_name:
                out.append(
                    Message.tool(part.tool_call_id, part.model_response(), name=part.tool_name)
                )
            else:
                out.append(Message.user(part.model_response()))
    return out


def _tool_calls(response: ModelResponse) -> tuple[ToolCall, ...]:
    return tuple(
        ToolCall(part.tool_name, part.args_as_dict(), part.tool_call_id)
        for part in response.parts
        if isinstance(part, ToolCallPart)
    )


def _response_text(response: ModelResponse) -> str | None:
    texts = [part.content for part in response.parts if isinstance(part, TextPart)]
    return "".join(texts) if texts else None


def llm_request(
    model_name: str,
    messages: list[ModelMessage],
    settings: ModelSettings | None,
    params: ModelRequestParameters,
) -> LlmRequest:
    """The request as ``ctx.llm`` records it: what the model is asked, nothing volatile."""
    converted: list[Message] = []
    instructions = next(
        (m.instructions for m in reversed(messages) if isinstance(m, ModelRequest)), None
    )
    if instructions:
        converted.append(Message.system(instructions))
    for message in messages:
        if isinstance(message, ModelRequest):
            converted.extend(_request_messages(message))
        else:
            converted.append(Message.assistant(_response_text(message), _tool_calls(message)))
    tools = tuple(
        ToolSchema(t.name, t.description or "", dict(t.parameters_json_schema))
        for t in [*params.function_tools, *params.output_tools]
    )
    extra: dict[str, Any] = {"output_mode": params.output_mode}
    if settings:
        extra["settings"] = _jsonable(dict(settings))
    return LlmRequest(model=model_name, messages=tuple(converted), tools=tools, params=extra)


def llm_response_output(response: ModelResponse) -> dict[str, Any]:
    """The step's output: the ``LlmResponse`` fields, plus the ``ModelResponse`` itself."""
    summary = LlmResponse(
        content=_response_text(response),
        tool_calls=_tool_calls(response),
        usage=Usage(response.usage.input_tokens, response.usage.output_tokens),
        model=response.model_name or "",
        stop_reason=response.finish_reason,
    )
    native = ModelMessagesTypeAdapter.dump_python([response], mode="json")[0]
    return llm_output(summary, FRAMEWORK, native)


def model_response(output: Any) -> ModelResponse:
    """The ``ModelResponse`` an ``llm.<model>`` step recorded."""
    rebuilt = ModelMessagesTypeAdapter.validate_python([output[FRAMEWORK]])[0]
    assert isinstance(rebuilt, ModelResponse)
    return rebuilt

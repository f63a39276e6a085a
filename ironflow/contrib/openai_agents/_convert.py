"""The Agents SDK's model calls as the records ``ctx.llm`` keeps: LlmRequest in, LlmResponse out.

The request keeps what the model is told (instructions, input items, tool and handoff
schemas, settings, output schema) in ``ctx.llm``'s shape; the response keeps the SDK's
own ``ModelResponse`` (or, for a streamed call, the final OpenAI ``Response``) beside
the ``LlmResponse`` fields, so a replay hands the runner back exactly what it got.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from agents import FunctionTool, Handoff, ModelSettings
from agents.agent_output import AgentOutputSchemaBase
from agents.items import ModelResponse, TResponseInputItem, TResponseOutputItem
from agents.usage import Usage as AgentsUsage
from openai.types.responses import Response
from pydantic import TypeAdapter
from pydantic_core import to_jsonable_python

from ironflow.contrib._steps import llm_output
from ironflow.llm import LlmRequest, LlmResponse, Message, ToolCall, ToolSchema, Usage

__all__ = [
    "FRAMEWORK",
    "llm_request",
    "model_response",
    "model_response_output",
    "streamed_response",
    "streamed_response_output",
]

#: The key under which an ``llm.<model>`` step's output keeps the SDK's response.
FRAMEWORK = "openai_agents"

_OUTPUT_ITEMS: TypeAdapter[list[TResponseOutputItem]] = TypeAdapter(list[TResponseOutputItem])
_USAGE: TypeAdapter[AgentsUsage] = TypeAdapter(AgentsUsage)
_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


def _jsonable(value: Any) -> Any:
    # Named by type, never by repr: a repr can hold an address that differs per process.
    return to_jsonable_python(value, fallback=lambda v: f"<{type(v).__name__}>")


def _plain(item: Any) -> dict[str, Any]:
    if isinstance(item, Mapping):
        return dict(_jsonable(dict(item)))
    dumped = item.model_dump(mode="json", exclude_none=True)
    assert isinstance(dumped, dict)
    return dumped


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        texts = []
        for part in content:
            if isinstance(part, Mapping) and isinstance(part.get("text"), str):
                texts.append(part["text"])
            else:
                texts.append(json.dumps(_jsonable(part), sort_keys=True))
        return "".join(texts)
    return json.dumps(_jsonable(content), sort_keys=True)


def _arguments(raw: Any) -> dict[str, Any]:
    if isinstance(raw, str):
        try:
            parsed = json.loads(raw) if raw else {}
        except json.JSONDecodeError:
            return {"_raw": raw}
        return parsed if isinstance(parsed, dict) else {"_value": parsed}
    return dict(raw) if isinstance(raw, Mapping) else {"_value": _jsonable(raw)}


def _message(item: dict[str, Any]) -> Message:
    kind = item.get("type")
    if kind == "function_call":
        call = ToolCall(
            str(item.get("name")), _arguments(item.get("arguments")), str(item["call_id"])
        )
        return Message.assistant(None, (call,))
    if kind == "function_call_output":
        output = item.get("output")
        text = output if isinstance(output, str) else json.dumps(_jsonable(output), sort_keys=True)
        return Message.tool(str(item["call_id"]), text)
    role = _ROLES.get(str(item.get("role")))
    if role is not None and (kind in (None, "message")):
        return Message(role, _content_text(item.get("content")))  # type: ignore[arg-type]
    # Reasoning, hosted tool calls and the like: kept whole, in a stable order.
    return Message("assistant", json.dumps(item, sort_keys=True))


def _tool_schema(tool: Any) -> ToolSchema:
    if isinstance(tool, FunctionTool):
        return ToolSchema(tool.name, tool.description, dict(tool.params_json_schema))
    return ToolSchema(str(getattr(tool, "name", type(tool).__name__)))


def llm_request(
    model_name: str,
    system_instructions: str | None,
    input: str | list[TResponseInputItem],
    model_settings: ModelSettings,
    tools: Sequence[Any],
    output_schema: AgentOutputSchemaBase | None,
    handoffs: Sequence[Handoff[Any, Any]],
) -> LlmRequest:
    """The request as ``ctx.llm`` records it: what the model is asked."""
    messages: list[Message] = []
    if system_instructions:
        messages.append(Message.system(system_instructions))
    if isinstance(input, str):
        messages.append(Message.user(input))
    else:
        messages.extend(_message(_plain(item)) for item in input)
    schemas = [_tool_schema(t) for t in tools]
    schemas += [
        ToolSchema(h.tool_name, h.tool_description, dict(h.input_json_schema)) for h in handoffs
    ]
    params: dict[str, Any] = {"settings": _jsonable(model_settings.to_json_dict())}
    if output_schema is not None and not output_schema.is_plain_text():
        params["output_schema"] = _jsonable(output_schema.json_schema())
    return LlmRequest(
        model=model_name, messages=tuple(messages), tools=tuple(schemas), params=params
    )


def _summary(model_name: str, output: Sequence[Any], usage: Usage) -> LlmResponse:
    texts: list[str] = []
    calls: list[ToolCall] = []
    for item in (_plain(i) for i in output):
        if item.get("type") == "function_call":
            calls.append(
                ToolCall(
                    str(item.get("name")), _arguments(item.get("arguments")), str(item["call_id"])
                )
            )
        elif item.get("type") == "message":
            texts.append(_content_text(item.get("content")))
    return LlmResponse(
        content="".join(texts) if texts else None,
        tool_calls=tuple(calls),
        usage=usage,
        model=model_name,
    )


def model_response_output(model_name: str, response: ModelResponse) -> dict[str, Any]:
    """A ``get_response`` step's output: the ``LlmResponse`` fields and the ``ModelResponse``."""
    usage = Usage(response.usage.input_tokens, response.usage.output_tokens)
    native = {
        "output": _OUTPUT_ITEMS.dump_python(list(response.output), mode="json"),
        "usage": _USAGE.dump_python(response.usage, mode="json"),
        "response_id": response.response_id,
    }
    return llm_output(_summary(model_name, response.output, usage), FRAMEWORK, native)


def model_response(output: Any) -> ModelResponse:
    """The ``ModelResponse`` a ``get_response`` step recorded."""
    native = output[FRAMEWORK]
    return ModelResponse(
        output=_OUTPUT_ITEMS.validate_python(native["output"]),
        usage=_USAGE.validate_python(native["usage"]),
        response_id=native["response_id"],
    )


def streamed_response_output(model_name: str, response: Response) -> dict[str, Any]:
    """A ``stream_response`` step's output: the ``LlmResponse`` fields and the final
    OpenAI ``Response`` the stream completed with."""
    u = response.usage
    usage = Usage(u.input_tokens, u.output_tokens) if u is not None else Usage()
    native = {"response": response.model_dump(mode="json")}
    return llm_output(_summary(model_name, response.output, usage), FRAMEWORK, native)


def streamed_response(output: Any) -> Response:
    """The final ``Response`` a ``stream_response`` step recorded."""
    return Response.model_validate(output[FRAMEWORK]["response"])

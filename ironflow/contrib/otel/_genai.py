"""The span names and attributes Ironflow emits, in one place.

They follow the OpenTelemetry GenAI semantic conventions of **semantic-conventions
v1.41.0** (status: Development, so the names are pinned here, not taken from a package
that moves): ``invoke_agent`` (internal agent span), ``execute_tool``, ``chat``. What
the conventions do not cover (sleeps, waits, approvals, child runs, memory) is named
``ironflow.*``. Message contents are recorded only on opt-in, as the conventions ask.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = [
    "SCHEMA_URL",
    "SEMCONV_VERSION",
    "attempt_attributes",
    "base_id",
    "chat_end_attributes",
    "chat_start_attributes",
    "step_span",
    "tool_attributes",
]

SEMCONV_VERSION = "1.41.0"
SCHEMA_URL = f"https://opentelemetry.io/schemas/{SEMCONV_VERSION}"

# GenAI attribute names (semantic-conventions v1.41.0).
OPERATION = "gen_ai.operation.name"
PROVIDER = "gen_ai.provider.name"
AGENT_ID = "gen_ai.agent.id"
AGENT_NAME = "gen_ai.agent.name"
TOOL_NAME = "gen_ai.tool.name"
TOOL_CALL_ID = "gen_ai.tool.call.id"
TOOL_TYPE = "gen_ai.tool.type"
TOOL_ARGUMENTS = "gen_ai.tool.call.arguments"  # opt-in content
TOOL_RESULT = "gen_ai.tool.call.result"  # opt-in content
REQUEST_MODEL = "gen_ai.request.model"
REQUEST_MAX_TOKENS = "gen_ai.request.max_tokens"
REQUEST_TEMPERATURE = "gen_ai.request.temperature"
REQUEST_TOP_P = "gen_ai.request.top_p"
RESPONSE_MODEL = "gen_ai.response.model"
FINISH_REASONS = "gen_ai.response.finish_reasons"
INPUT_TOKENS = "gen_ai.usage.input_tokens"
OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
INPUT_MESSAGES = "gen_ai.input.messages"  # opt-in content
OUTPUT_MESSAGES = "gen_ai.output.messages"  # opt-in content
ERROR_TYPE = "error.type"

# Ironflow's own attributes.
RUN_ID = "ironflow.run.id"
RUN_ATTEMPT = "ironflow.run.attempt"
RUN_STATUS = "ironflow.run.status"
RUN_PARENT = "ironflow.run.parent_id"
RUN_EVENT = "ironflow.event.name"
RUN_REPLAYED = "ironflow.run.steps_replayed"
RUN_EXECUTED = "ironflow.run.steps_executed"
RUN_TAKEN_FROM = "ironflow.run.taken_from"
WORKER_ID = "ironflow.worker.id"
STEP_ID = "ironflow.step.id"
STEP_POSITION = "ironflow.step.position"
STEP_OUTCOME = "ironflow.step.outcome"
STEP_RETRY = "ironflow.step.retry"


def base_id(step_id: str) -> str:
    """The step's id without its ``#n`` repeat suffix: ``tool.ocr#2`` is ``tool.ocr``."""
    head, sep, count = step_id.rpartition("#")
    return head if sep and count.isdigit() else step_id


def step_span(step_id: str, input: Any) -> tuple[str, str]:
    """The span name of an executed step and its kind: ``tool``, ``chat`` or ``step``.

    ``tool.<name>`` is ``execute_tool <name>``; ``llm.<name>`` is ``chat <model>`` (the
    model requested); any other step is named by its id without the repeat suffix
    (``sleep``, ``wait.payment``, ``approve.merge``, ``spawn.child``,
    ``memory.append``): names from the code, so a span name never holds a value.
    """
    base = base_id(step_id)
    if base.startswith("tool."):
        return f"execute_tool {base[5:]}", "tool"
    if base.startswith("llm."):
        model = input.get("model") if isinstance(input, dict) else None
        return f"chat {model if isinstance(model, str) and model else base[4:]}", "chat"
    return base, "step"


def attempt_attributes(
    *, agent: str, run_id: str, attempt: int, event: str, parent_id: str | None, worker: str
) -> dict[str, Any]:
    """The ``invoke_agent`` span's attributes at its start."""
    attrs: dict[str, Any] = {
        OPERATION: "invoke_agent",
        AGENT_NAME: agent,
        AGENT_ID: agent,
        RUN_ID: run_id,
        RUN_ATTEMPT: attempt,
        RUN_EVENT: event,
        WORKER_ID: worker,
    }
    if parent_id is not None:
        attrs[RUN_PARENT] = parent_id
    return attrs


def tool_attributes(tool: str, call_id: str, input: Any, capture: bool) -> dict[str, Any]:
    """An ``execute_tool`` span's attributes at its start."""
    attrs: dict[str, Any] = {
        OPERATION: "execute_tool",
        TOOL_NAME: tool,
        TOOL_CALL_ID: call_id,
        TOOL_TYPE: "function",
    }
    if capture:
        attrs[TOOL_ARGUMENTS] = _json(input)
    return attrs


def chat_start_attributes(input: Any, capture: bool) -> dict[str, Any]:
    """A ``chat`` span's attributes from the recorded request (an ``LlmRequest``)."""
    attrs: dict[str, Any] = {OPERATION: "chat"}
    if not isinstance(input, dict):
        return attrs
    if isinstance(input.get("model"), str):
        attrs[REQUEST_MODEL] = input["model"]
    params = input.get("params")
    if isinstance(params, dict):
        for key, name in (
            ("max_tokens", REQUEST_MAX_TOKENS),
            ("temperature", REQUEST_TEMPERATURE),
            ("top_p", REQUEST_TOP_P),
        ):
            value = params.get(key)
            if isinstance(value, int | float) and not isinstance(value, bool):
                attrs[name] = value
    if capture and isinstance(input.get("messages"), list):
        attrs[INPUT_MESSAGES] = _json([_message(m) for m in input["messages"]])
    return attrs


def chat_end_attributes(output: Any, capture: bool) -> dict[str, Any]:
    """A ``chat`` span's attributes from the recorded response (an ``LlmResponse``)."""
    attrs: dict[str, Any] = {}
    if not isinstance(output, dict):
        return attrs
    if isinstance(output.get("model"), str) and output["model"]:
        attrs[RESPONSE_MODEL] = output["model"]
    usage = output.get("usage")
    if isinstance(usage, dict):
        for key, name in (("input_tokens", INPUT_TOKENS), ("output_tokens", OUTPUT_TOKENS)):
            if isinstance(usage.get(key), int):
                attrs[name] = usage[key]
    if isinstance(output.get("stop_reason"), str):
        attrs[FINISH_REASONS] = (output["stop_reason"],)
    if capture:
        message = {
            "role": "assistant",
            "content": output.get("content"),
            "tool_calls": output.get("tool_calls") or [],
        }
        reply = _message(message)
        if isinstance(output.get("stop_reason"), str):
            reply["finish_reason"] = output["stop_reason"]
        attrs[OUTPUT_MESSAGES] = _json([reply])
    return attrs


def _message(message: Any) -> dict[str, Any]:
    """A recorded ``Message`` in the conventions' shape: a role and typed parts."""
    if not isinstance(message, dict):
        return {"role": "user", "parts": [{"type": "text", "content": str(message)}]}
    parts: list[dict[str, Any]] = []
    if message.get("role") == "tool":
        parts.append(
            {
                "type": "tool_call_response",
                "id": message.get("tool_call_id"),
                "response": message.get("content"),
            }
        )
    elif message.get("content") is not None:
        parts.append({"type": "text", "content": message["content"]})
    for call in message.get("tool_calls") or []:
        if isinstance(call, dict):
            parts.append(
                {
                    "type": "tool_call",
                    "id": call.get("id"),
                    "name": call.get("name"),
                    "arguments": call.get("arguments"),
                }
            )
    return {"role": message.get("role", "user"), "parts": parts}


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)

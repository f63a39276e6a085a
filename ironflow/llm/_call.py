"""``ctx.llm``: one model call as the recorded step ``llm.<name>``.

The request (model, messages, tool schemas, params) is the step's input and the
:class:`LlmResponse` its output, so a replay returns the recorded answer without
asking the provider, and a changed prompt is caught as non-determinism.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ironflow._agent._dsl import ToolDefinition
from ironflow._pure._limits import MAX_STEP_NAME_CHARS, is_code_name
from ironflow.errors import InvalidInputError, LlmError, ProviderNotConfiguredError
from ironflow.llm._provider import LlmCall, Provider, _current, get_default_provider
from ironflow.llm._schema import tool_schema
from ironflow.llm._types import LlmRequest, LlmResponse, Message, ToolSchema
from ironflow.replay._engine import Execution, current_step
from ironflow.store._codec import structure, to_json_value

__all__ = [
    "CallCounter",
    "MessagesInput",
    "ToolsInput",
    "build_request",
    "llm_step",
    "provider_name",
    "step_name",
]

#: What ``messages=`` accepts: a list of :class:`Message` (or dicts of its fields, or
#: a previous :class:`LlmResponse`), or one string as a single user message.
MessagesInput = str | Iterable[Message | LlmResponse | Mapping[str, Any]]
#: What ``tools=`` accepts: ``@tool`` functions, or ready :class:`ToolSchema` objects.
ToolsInput = Iterable[Callable[..., Any] | ToolSchema | ToolDefinition] | None

_BAD = re.compile(r"[^A-Za-z0-9_.\-]+")


def step_name(model: str, name: str | None) -> str:
    """``name`` if given (checked), else the model's name with unusable characters as '-'."""
    if name is not None:
        if not is_code_name(name, MAX_STEP_NAME_CHARS):
            raise InvalidInputError(
                f"ctx.llm(name={name!r}): use letters, digits, '.', '_' or '-', "
                f"starting with a letter or digit, at most {MAX_STEP_NAME_CHARS} characters"
            )
        return name
    cleaned = _BAD.sub("-", model)[:MAX_STEP_NAME_CHARS].strip("-._")
    return cleaned or "model"


def provider_name(provider: Provider) -> str:
    """The provider's name for traces and metrics: its ``provider_name`` attribute, else
    its class name without "Provider", lower-cased (``OpenAIProvider``: ``openai``)."""
    name = getattr(provider, "provider_name", None)
    if isinstance(name, str) and name:
        return name
    return type(provider).__name__.removesuffix("Provider").lower() or "unknown"


def _message(item: Any, i: int) -> Message:
    if isinstance(item, Message):
        return item
    if isinstance(item, LlmResponse):
        return item.message
    if isinstance(item, Mapping):
        try:
            return structure(dict(item), Message)  # type: ignore[no-any-return]
        except Exception:
            pass
    raise InvalidInputError(
        f"ctx.llm: messages[{i}] is {item!r}; each message must be an ironflow.llm.Message "
        "(Message.user('...')) or a dict like {'role': 'user', 'content': '...'} with role "
        "system, user, assistant or tool"
    )


def _tool(item: Any) -> ToolSchema:
    if isinstance(item, ToolSchema):
        return item
    if isinstance(item, ToolDefinition) or ToolDefinition.from_fn(item) is not None:
        return tool_schema(item)
    raise InvalidInputError(
        f"ctx.llm: tools holds {item!r}; pass @tool functions (or ToolSchema objects)"
    )


def build_request(
    model: str, messages: MessagesInput, tools: ToolsInput, params: Mapping[str, Any]
) -> LlmRequest:
    """Normalize what ``ctx.llm`` was given into one :class:`LlmRequest`."""
    if not isinstance(model, str) or not model:
        raise InvalidInputError(f"ctx.llm needs model='<model name>', not {model!r}")
    if isinstance(messages, str):
        normalized: tuple[Message, ...] = (Message.user(messages),)
    else:
        normalized = tuple(_message(m, i) for i, m in enumerate(messages))
    schemas = tuple(_tool(t) for t in tools) if tools is not None else ()
    return LlmRequest(model=model, messages=normalized, tools=schemas, params=dict(params))


class CallCounter:
    """Numbers one execution's ``ctx.llm`` calls per provider, in call order from 0.

    The handler re-executes from the top on every attempt and picks the same provider
    for the same call, so the numbers are the same on every execution of a run.
    """

    def __init__(self) -> None:
        # Keyed by id(), with the provider kept alive so its id cannot be reused.
        self._counts: dict[int, tuple[Provider | None, int]] = {}

    def next(self, provider: Provider | None) -> int:
        """The index of this call among the calls ``provider`` answers in this run."""
        _, count = self._counts.get(id(provider), (provider, 0))
        self._counts[id(provider)] = (provider, count + 1)
        return count


def llm_step(
    execution: Execution,
    counter: CallCounter,
    *,
    model: str,
    messages: MessagesInput,
    tools: ToolsInput,
    name: str | None,
    provider: Provider | None,
    params: Mapping[str, Any],
) -> Any:
    """Make one model call as the step ``llm.<name>`` (see ``ctx.llm``)."""
    step_id = f"llm.{step_name(model, name)}"
    request = build_request(model, messages, tools, params)
    recorded_input = to_json_value(request, f"step {step_id!r} input", "input")
    if provider is not None and not isinstance(provider, Provider):
        raise InvalidInputError(
            f"ctx.llm(provider={provider!r}): a provider needs a complete(request) method"
        )
    chosen = provider if provider is not None else get_default_provider()
    if chosen is None and not execution.is_replaying:
        # Before the step: nothing is recorded, so the run can succeed once configured.
        raise ProviderNotConfiguredError(model)
    index = counter.next(chosen)

    def call() -> LlmResponse:
        if chosen is None:
            raise ProviderNotConfiguredError(model)
        execution.note("provider", provider_name(chosen))
        token = _current.set(LlmCall(index, current_step()))
        try:
            response = chosen.complete(request)
        finally:
            _current.reset(token)
        if not isinstance(response, LlmResponse):
            raise LlmError(
                f"{type(chosen).__name__}.complete returned {type(response).__name__}; "
                "a provider must return an ironflow.llm.LlmResponse"
            )
        return response

    return execution.step(step_id, recorded_input, call, (), {}, LlmResponse)

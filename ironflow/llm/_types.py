"""The records a model call is made of: messages, tool calls, usage, request, response.

All are frozen attrs classes made of JSON values, so a request is stored as an
``llm.<name>`` step's input and a response as its output, and a replay gets the
very same :class:`LlmResponse` back from the record.
"""

from __future__ import annotations

from typing import Any, Literal

import attrs

__all__ = [
    "LlmRequest",
    "LlmResponse",
    "Message",
    "Role",
    "ToolCall",
    "ToolSchema",
    "Usage",
]

Role = Literal["system", "user", "assistant", "tool"]


@attrs.frozen
class ToolCall:
    """The model asking for one tool call: the tool's name and its JSON arguments.

    ``id`` is the provider's call id; a tool result answers it with the same id.
    """

    name: str
    arguments: dict[str, Any] = attrs.field(factory=dict)
    id: str = ""


@attrs.frozen
class Message:
    """One message of a conversation, in a provider-neutral shape.

    ``tool_calls`` is set on an assistant message that asks for tools; a ``tool``
    message carries one tool's result, ``tool_call_id`` naming the call it answers.
    """

    role: Role
    content: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    name: str | None = None

    @classmethod
    def system(cls, content: str) -> Message:
        """A system prompt."""
        return cls("system", content)

    @classmethod
    def user(cls, content: str) -> Message:
        """A user turn."""
        return cls("user", content)

    @classmethod
    def assistant(
        cls, content: str | None = None, tool_calls: tuple[ToolCall, ...] = ()
    ) -> Message:
        """A model turn: text, tool calls, or both."""
        return cls("assistant", content, tuple(tool_calls))

    @classmethod
    def tool(cls, tool_call_id: str, content: str, *, name: str | None = None) -> Message:
        """The result of the tool call ``tool_call_id``, as text the model reads."""
        return cls("tool", content, tool_call_id=tool_call_id, name=name)


@attrs.frozen
class Usage:
    """Tokens a model call consumed, as the provider reported them (0 when it did not)."""

    input_tokens: int = 0
    output_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        """Input plus output tokens."""
        return self.input_tokens + self.output_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens, self.output_tokens + other.output_tokens
        )


@attrs.frozen
class ToolSchema:
    """A tool as a model sees it: name, description and a JSON schema for its arguments."""

    name: str
    description: str = ""
    parameters: dict[str, Any] = attrs.field(factory=lambda: {"type": "object", "properties": {}})


@attrs.frozen
class LlmRequest:
    """What :meth:`~ironflow.AgentContext.llm` asks a provider; stored as the step's input.

    ``params`` are passed through to the provider as they are (``temperature``,
    ``max_tokens``, ...) and must be JSON values.
    """

    model: str
    messages: tuple[Message, ...]
    tools: tuple[ToolSchema, ...] = ()
    params: dict[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class LlmResponse:
    """What a provider answered; stored as the step's output and returned on replay."""

    content: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    usage: Usage = attrs.field(factory=Usage)
    model: str = ""
    stop_reason: str | None = None

    @property
    def text(self) -> str:
        """The answer's text, ``""`` when the model only called tools."""
        return self.content or ""

    @property
    def message(self) -> Message:
        """This answer as the assistant message to append to the conversation."""
        return Message.assistant(self.content, self.tool_calls)

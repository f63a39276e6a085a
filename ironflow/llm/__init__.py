"""Model calls as durable steps: ``ctx.llm``, providers, tool schemas, a tools loop.

The core never imports a vendor SDK: :class:`OpenAIProvider` and
:class:`AnthropicProvider` import theirs when constructed (``pip install
'ironflow[openai]'`` or ``'ironflow[anthropic]'``), and :class:`ScriptedProvider`
answers offline from a script, for tests, examples and demos.
"""

from ironflow.llm._call import MessagesInput, ToolsInput
from ironflow.llm._loop import ToolsLoopResult, run_tools_loop
from ironflow.llm._provider import (
    LlmCall,
    Provider,
    current_call,
    get_default_provider,
    set_default_provider,
)
from ironflow.llm._schema import json_schema, tool_schema
from ironflow.llm._scripted import Reply, ScriptedProvider
from ironflow.llm._types import (
    LlmRequest,
    LlmResponse,
    Message,
    Role,
    ToolCall,
    ToolSchema,
    Usage,
)

__all__ = [
    "AnthropicProvider",
    "LlmCall",
    "LlmRequest",
    "LlmResponse",
    "Message",
    "MessagesInput",
    "OpenAIProvider",
    "Provider",
    "Reply",
    "Role",
    "ScriptedProvider",
    "ToolCall",
    "ToolSchema",
    "ToolsInput",
    "ToolsLoopResult",
    "Usage",
    "current_call",
    "get_default_provider",
    "json_schema",
    "run_tools_loop",
    "set_default_provider",
    "tool_schema",
]


TYPE_CHECKING = False
if TYPE_CHECKING:
    from ironflow.llm._anthropic import AnthropicProvider
    from ironflow.llm._openai import OpenAIProvider


def __getattr__(name: str) -> object:
    # The adapters are loaded on first use, so `import ironflow` stays fast.
    if name == "AnthropicProvider":
        from ironflow.llm._anthropic import AnthropicProvider

        return AnthropicProvider
    if name == "OpenAIProvider":
        from ironflow.llm._openai import OpenAIProvider

        return OpenAIProvider
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""A deterministic, offline provider: replies come from a script, not a network."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence

import attrs

from ironflow.errors import LlmError, ScriptExhaustedError
from ironflow.llm._provider import current_call
from ironflow.llm._types import LlmRequest, LlmResponse, ToolCall, Usage

__all__ = ["Reply", "ScriptedProvider", "StaticReply"]

#: One scripted reply: text, a response, one or more tool calls, or a function of the
#: request returning one of those.
StaticReply = str | LlmResponse | ToolCall | Sequence[ToolCall]
Reply = StaticReply | Callable[[LlmRequest], StaticReply]


class ScriptedProvider:
    """Answers model calls from a script, for tests, examples and demos: no key, no network.

    ``ScriptedProvider(["hello", ToolCall("search", {"q": "x"}), "done"])`` gives the
    first ``ctx.llm`` call it answers in a run the first reply, the second call the
    second, and so on. The position comes from the run (:attr:`LlmCall.index`: this
    provider's n-th call in the run, in call order, replayed calls included), not from
    this object's state, so every run starts the script from the top and a run resumed
    after a crash, in a fresh process, gets exactly the reply an uncrashed run would
    have got. Outside a run the replies are handed out in order.

    ``script`` may instead be one function of the request, called for every call. A
    reply that is itself callable is called with the request. Tool calls without an id
    get ``call_<n>_<k>``; replies given as text or tool calls get a usage estimate of
    one token per whitespace-separated word, so token counts are deterministic too.
    Every request is kept in :attr:`requests` (thread-safe), so a test can count calls.
    """

    def __init__(
        self,
        script: Sequence[Reply] | Callable[[LlmRequest], StaticReply],
        *,
        repeat_last: bool = False,
    ) -> None:
        if isinstance(script, str | LlmResponse | ToolCall):
            raise LlmError(
                f"ScriptedProvider takes a list of replies or a function, not {script!r}; "
                "wrap a single reply in a list"
            )
        self._script = script if callable(script) else tuple(script)
        self._repeat_last = repeat_last
        self._lock = threading.Lock()
        self._outside_run = 0
        #: Every request answered, in the order the calls arrived.
        self.requests: list[LlmRequest] = []

    @property
    def calls(self) -> int:
        """How many times :meth:`complete` was called."""
        with self._lock:
            return len(self.requests)

    def complete(self, request: LlmRequest) -> LlmResponse:
        """Answer ``request`` with its scripted reply (see the class docstring)."""
        call = current_call()
        with self._lock:
            self.requests.append(request)
            if call is None:
                index = self._outside_run
                self._outside_run += 1
            else:
                index = call.index
        reply = self._reply_for(index, request)
        while callable(reply):
            reply = reply(request)
        return _as_response(reply, request, index)

    def _reply_for(self, index: int, request: LlmRequest) -> Reply:
        script = self._script
        if callable(script):
            return script
        if index < len(script):
            return script[index]
        if self._repeat_last and script:
            return script[-1]
        raise ScriptExhaustedError(index, len(script))


def _words(text: str | None) -> int:
    return len(text.split()) if text else 0


def _as_response(reply: object, request: LlmRequest, index: int) -> LlmResponse:
    if isinstance(reply, ToolCall):
        reply = [reply]
    if isinstance(reply, LlmResponse):
        response = reply
    elif isinstance(reply, str):
        response = LlmResponse(content=reply, stop_reason="stop")
    elif isinstance(reply, Sequence) and all(isinstance(c, ToolCall) for c in reply):
        response = LlmResponse(tool_calls=tuple(reply), stop_reason="tool_calls")
    else:
        raise LlmError(
            f"ScriptedProvider: reply #{index + 1} is {reply!r}; a reply is a str, an "
            "LlmResponse, a ToolCall, a list of ToolCalls, or a function returning one"
        )
    calls = tuple(
        c if c.id else attrs.evolve(c, id=f"call_{index}_{k}")
        for k, c in enumerate(response.tool_calls)
    )
    usage = response.usage
    if usage == Usage() and not isinstance(reply, LlmResponse):
        usage = Usage(
            input_tokens=sum(_words(m.content) for m in request.messages),
            output_tokens=_words(response.content)
            + sum(_words(json.dumps(c.arguments)) + 1 for c in calls),
        )
    return attrs.evolve(
        response, tool_calls=calls, usage=usage, model=response.model or request.model
    )

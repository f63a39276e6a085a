"""ScriptedProvider: deterministic offline replies."""

from __future__ import annotations

import pytest

from ironflow.errors import LlmError, ScriptExhaustedError
from ironflow.llm import LlmRequest, LlmResponse, Message, ScriptedProvider, ToolCall, Usage


def request(text: str = "hello there") -> LlmRequest:
    return LlmRequest(model="m", messages=(Message.user(text),))


def script() -> list[object]:
    return [
        "first answer",
        ToolCall("search", {"q": "x"}),
        [ToolCall("a"), ToolCall("b", {"n": 1}, id="given")],
        LlmResponse(content="as is", usage=Usage(7, 3), model="other"),
        lambda req: f"echo {req.messages[-1].content}",
    ]


def test_replies_come_in_order_and_are_normalized() -> None:
    """Text, tool calls, a response and a function each become an LlmResponse, in order."""
    provider = ScriptedProvider(script())  # type: ignore[arg-type]
    answers = [provider.complete(request()) for _ in range(5)]
    assert answers[0] == LlmResponse(
        content="first answer", usage=Usage(2, 2), model="m", stop_reason="stop"
    )
    assert answers[1].tool_calls == (ToolCall("search", {"q": "x"}, id="call_1_0"),)
    assert answers[1].stop_reason == "tool_calls" and answers[1].content is None
    assert [c.id for c in answers[2].tool_calls] == ["call_2_0", "given"]
    assert answers[3] == LlmResponse(content="as is", usage=Usage(7, 3), model="other")
    assert answers[4].content == "echo hello there"
    assert provider.calls == 5 and provider.requests[0] == request()


def test_the_same_script_gives_the_same_answers() -> None:
    """Two providers with one script answer the same requests identically, usage included."""
    one, two = ScriptedProvider(script()), ScriptedProvider(script())  # type: ignore[arg-type]
    texts = ["a", "b c", "d e f", "g", "h i"]
    assert [one.complete(request(t)) for t in texts] == [two.complete(request(t)) for t in texts]


def test_running_out_of_replies_is_a_clear_error() -> None:
    """The call past the end raises ScriptExhaustedError, unless repeat_last is set."""
    provider = ScriptedProvider(["only"])
    provider.complete(request())
    with pytest.raises(ScriptExhaustedError, match=r"call #2 .* holds 1.*repeat_last=True"):
        provider.complete(request())
    repeating = ScriptedProvider(["one", "last"], repeat_last=True)
    assert [repeating.complete(request()).content for _ in range(4)] == [
        "one",
        "last",
        "last",
        "last",
    ]


def test_a_function_script_answers_every_call() -> None:
    """A function instead of a list is asked for every reply."""
    provider = ScriptedProvider(lambda req: req.messages[0].content or "")
    assert provider.complete(request("x y")).content == "x y"
    assert provider.complete(request("z")).content == "z"


def test_a_bare_reply_or_a_bad_reply_is_refused() -> None:
    """A single reply not in a list, or a reply of the wrong type, is a clear error."""
    with pytest.raises(LlmError, match="wrap a single reply in a list"):
        ScriptedProvider("hello")  # a str is a Sequence, so only the runtime check catches it
    with pytest.raises(LlmError, match="reply #1 is 42"):
        ScriptedProvider([42]).complete(request())  # type: ignore[list-item]

"""ctx.llm: one model call as the recorded step llm.<name>, replayed without the provider."""

from __future__ import annotations

import asyncio
from typing import Any

from ironflow import AgentContext, StepFailedError, agent, tool
from ironflow.errors import InvalidInputError
from ironflow.llm import (
    LlmRequest,
    LlmResponse,
    Message,
    ScriptedProvider,
    Usage,
    current_call,
    set_default_provider,
)
from ironflow.store import LmdbStore
from tests.llm.conftest import Crash, attempt, replay, run_agent, start

crash_after_llm = {"on": False}


@tool
def checkpoint(label: str) -> str:
    if crash_after_llm["on"]:
        crash_after_llm["on"] = False
        raise Crash()
    return label


@agent(id="writer", triggers=["write"])
def writer(ctx: AgentContext) -> dict[str, Any]:
    first = ctx.llm(
        model="gpt-4o-mini",
        messages=[Message.system("be brief"), {"role": "user", "content": "a haiku"}],
        temperature=0.2,
    )
    assert isinstance(first, LlmResponse), type(first)
    checkpoint(label="after-first")
    second = ctx.llm(model="gpt-4o-mini", messages=[Message.user("again"), first])
    named = ctx.llm(model="openai/gpt-4o:latest", messages="third", name="critic")
    default_named = ctx.llm(model="openai/gpt-4o:latest", messages="fourth")
    return {
        "texts": [first.text, second.text, named.text, default_named.text],
        "tokens": first.usage.total_tokens,
    }


def writer_script() -> ScriptedProvider:
    return ScriptedProvider(["one two three", "second", "third", "fourth"])


def test_llm_step_records_request_response_and_usage(store: LmdbStore) -> None:
    """Each call is the step llm.<name> with the request as input and the response as output."""
    provider = writer_script()
    set_default_provider(provider)
    run = run_agent(store, writer)
    assert run.status == "completed", run.error
    assert run.output == {"texts": ["one two three", "second", "third", "fourth"], "tokens": 7}
    steps = store.get_steps(run.id)
    assert [s.id for s in steps] == [
        "llm.gpt-4o-mini",
        "tool.checkpoint",
        "llm.gpt-4o-mini#2",
        "llm.critic",
        "llm.openai-gpt-4o-latest",
    ]
    first = steps[0]
    assert first.input["model"] == "gpt-4o-mini"
    assert first.input["params"] == {"temperature": 0.2}
    assert [(m["role"], m["content"]) for m in first.input["messages"]] == [
        ("system", "be brief"),
        ("user", "a haiku"),
    ]
    assert first.output["content"] == "one two three"
    assert first.output["usage"] == {"input_tokens": 4, "output_tokens": 3}
    assert first.output["model"] == "gpt-4o-mini"
    # The previous response, passed as a message, is recorded as the assistant turn.
    assert steps[2].input["messages"][1]["role"] == "assistant"
    assert provider.requests[0].params == {"temperature": 0.2}


def test_replay_returns_recorded_responses_without_calling_the_provider(
    store: LmdbStore,
) -> None:
    """A crash after an llm step: the resumed run reads it from the record, and ends the same."""
    provider = writer_script()
    set_default_provider(provider)
    run_id = start(store, writer)
    crash_after_llm["on"] = True
    assert attempt(store, writer) is None  # killed inside tool.checkpoint
    assert provider.calls == 1
    assert [s.id for s in store.get_steps(run_id)] == ["llm.gpt-4o-mini"]

    # A fresh process: a new provider object, started from scratch.
    fresh = writer_script()
    set_default_provider(fresh)
    outcome = attempt(store, writer)
    assert outcome is not None and outcome.status == "completed", outcome
    assert outcome.output["texts"] == ["one two three", "second", "third", "fourth"]
    assert fresh.calls == 3  # the three calls that were never recorded, not the first
    assert fresh.requests[0].messages[0].content == "again"


def test_a_call_in_flight_at_a_crash_gets_the_same_scripted_reply_again(
    store: LmdbStore,
) -> None:
    """The script position comes from the run, so a fresh provider answers as an uncrashed run."""
    killed = {"done": False}

    def dies_once(request: LlmRequest) -> str:
        if not killed["done"]:
            killed["done"] = True
            raise Crash()
        return "never used"

    set_default_provider(ScriptedProvider(["one two three", dies_once]))
    run_id = start(store, writer)
    assert attempt(store, writer) is None  # killed while the second model call was in flight
    assert [s.id for s in store.get_steps(run_id)] == ["llm.gpt-4o-mini", "tool.checkpoint"]
    set_default_provider(writer_script())
    outcome = attempt(store, writer)
    assert outcome is not None and outcome.status == "completed"
    assert outcome.output["texts"] == ["one two three", "second", "third", "fourth"]


def test_no_provider_fails_before_recording_and_names_the_fix(store: LmdbStore) -> None:
    """Without provider= or a default, ctx.llm raises before the step; replays need none."""
    run = run_agent(store, writer)
    assert run.status == "failed"
    assert run.error is not None and run.error.type == "ProviderNotConfiguredError"
    assert "set_default_provider" in run.error.message and "provider=" in run.error.message
    assert store.get_steps(run.id) == []

    set_default_provider(writer_script())
    done = run_agent(store, writer)
    set_default_provider(None)
    outcome = replay(store, done.id, writer)
    assert outcome.status == "completed" and outcome.output == done.output


def test_provider_argument_overrides_the_default(store: LmdbStore) -> None:
    """provider= wins over the default; each provider's script starts at the top per run."""
    explicit = ScriptedProvider(["e1", "e2"])
    set_default_provider(ScriptedProvider(["d1", "d2"]))

    @agent(id="explicit", triggers=["explicit"])
    def explicit_agent(ctx: AgentContext) -> list[str]:
        return [
            ctx.llm(model="m", messages="hi").text,
            ctx.llm(model="m", messages="hi", provider=explicit).text,
            ctx.llm(model="m", messages="hi").text,
            ctx.llm(model="m", messages="hi", provider=explicit).text,
        ]

    assert run_agent(store, explicit_agent).output == ["d1", "e1", "d2", "e2"]
    assert run_agent(store, explicit_agent).output == ["d1", "e1", "d2", "e2"]


def test_a_changed_prompt_is_non_determinism(store: LmdbStore) -> None:
    """Replaying a record against a different prompt fails, naming both requests."""
    set_default_provider(writer_script())
    run = run_agent(store, writer)

    @agent(id="writer", triggers=["write"])
    def changed(ctx: AgentContext) -> None:
        ctx.llm(model="gpt-4o-mini", messages="a limerick", temperature=0.2)

    outcome = replay(store, run.id, changed)
    assert outcome.error is not None and outcome.error.type == "NonDeterminismError"
    assert "a limerick" in outcome.error.message and "llm.gpt-4o-mini" in outcome.error.message


def test_a_provider_error_fails_the_step_and_replays_as_the_same_failure(
    store: LmdbStore,
) -> None:
    """A raising provider is a failed llm step; the run can catch StepFailedError."""

    def broken(request: LlmRequest) -> str:
        raise ConnectionError("rate limited")

    provider = ScriptedProvider(broken)

    @agent(id="fallback", triggers=["fallback"])
    def fallback(ctx: AgentContext) -> str:
        try:
            ctx.llm(model="m", messages="hi", provider=provider)
        except StepFailedError as exc:
            return f"{exc.error_type}: {exc.message}"
        return "unreachable"

    run = run_agent(store, fallback)
    assert run.output == "ConnectionError: rate limited"
    assert [(s.id, s.status) for s in store.get_steps(run.id)] == [("llm.m", "failed")]


def test_bad_messages_and_names_are_refused_before_recording(store: LmdbStore) -> None:
    """A message that is no Message, or an unusable step name, is an InvalidInputError."""
    set_default_provider(ScriptedProvider(["x"]))
    seen: list[str] = []

    @agent(id="bad", triggers=["bad"])
    def bad(ctx: AgentContext) -> None:
        for kwargs in (
            {"messages": [{"role": "robot", "content": "x"}]},
            {"messages": [42]},
            {"messages": "x", "name": "no spaces"},
            {"messages": "x", "tools": [print]},
        ):
            try:
                ctx.llm(model="m", **kwargs)
            except InvalidInputError as exc:
                seen.append(str(exc))

    run = run_agent(store, bad)
    assert run.status == "completed", run.error
    assert len(seen) == 4
    assert "messages[0]" in seen[0] and "messages[0]" in seen[1]
    assert "'no spaces'" in seen[2] and "@tool" in seen[3]
    assert store.get_steps(run.id) == []


indexes: list[int] = []


def indexed(request: LlmRequest) -> LlmResponse:
    info = current_call()
    assert info is not None and info.step is not None
    indexes.append(info.index)
    return LlmResponse(content=f"{request.messages[0].content}@{info.step.step_id}")


@agent(id="parallel-llm", triggers=["parallel-llm"])
async def parallel_llm(ctx: AgentContext) -> list[str]:
    answers = await asyncio.gather(
        ctx.llm(model="m", messages="a"),
        ctx.llm(model="m", messages="b"),
        ctx.llm(model="m", messages="c", name="other"),
    )
    return [a.text for a in answers]


def test_async_agent_awaits_llm_and_gather_keeps_call_order(store: LmdbStore) -> None:
    """In an async agent ctx.llm is awaitable; gathered calls get ids and indexes in call order."""
    indexes.clear()
    set_default_provider(ScriptedProvider(indexed))
    run = run_agent(store, parallel_llm)
    assert run.status == "completed", run.error
    assert run.output == ["a@llm.m", "b@llm.m#2", "c@llm.other"]
    assert sorted(indexes) == [0, 1, 2]
    assert [s.id for s in store.get_steps(run.id)] == ["llm.m", "llm.m#2", "llm.other"]
    step = store.get_steps(run.id)[0]
    assert step.output["usage"] == {"input_tokens": 0, "output_tokens": 0}
    assert Usage(**step.output["usage"]) == Usage()

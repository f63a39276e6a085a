"""A model whose calls are ``llm.<model>`` steps in a run, and a provider that hands them out."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from agents import Handoff, ModelSettings
from agents.agent_output import AgentOutputSchemaBase
from agents.items import ModelResponse, TResponseInputItem, TResponseStreamEvent
from agents.models.interface import Model, ModelProvider, ModelTracing
from openai.types.responses import Response, ResponseCompletedEvent

from ironflow.contrib._steps import (
    PendingStep,
    current_execution,
    durable_step,
    llm_input,
    llm_step_id,
)
from ironflow.contrib.openai_agents._convert import (
    llm_request,
    model_response,
    model_response_output,
    streamed_response,
    streamed_response_output,
)
from ironflow.errors import LlmError

__all__ = ["StepModel", "StepModelProvider", "model_name_of"]


def model_name_of(model: Model, fallback: str | None = None) -> str:
    """The name a model's steps are called by: its ``model`` string if it has one."""
    name = getattr(model, "model", None)
    if isinstance(name, str) and name:
        return name
    return fallback or type(model).__name__


class StepModel(Model):
    """Wraps a model so that, inside an Ironflow run, each call is the step ``llm.<model>``.

    The request is the step's input and the response its output, recorded before the
    runner goes on; a replay returns the recorded response without calling the model.
    A streamed call streams live while it runs and is recorded when complete; replayed,
    it yields the recorded response as one ``response.completed`` event. Outside a run,
    calls go straight to the wrapped model.
    """

    def __init__(self, wrapped: Model, name: str) -> None:
        self.wrapped = wrapped
        self.name = name

    async def close(self) -> None:
        await self.wrapped.close()

    async def get_response(
        self,
        system_instructions: str | None,
        input: str | list[TResponseInputItem],
        model_settings: ModelSettings,
        tools: list[Any],
        output_schema: AgentOutputSchemaBase | None,
        handoffs: list[Handoff[Any, Any]],
        tracing: ModelTracing,
        *,
        previous_response_id: str | None,
        conversation_id: str | None,
        prompt: Any,
    ) -> ModelResponse:
        async def call() -> ModelResponse:
            return await self.wrapped.get_response(
                system_instructions,
                input,
                model_settings,
                tools,
                output_schema,
                handoffs,
                tracing,
                previous_response_id=previous_response_id,
                conversation_id=conversation_id,
                prompt=prompt,
            )

        execution = current_execution()
        if execution is None:
            return await call()
        step_id = llm_step_id(self.name)
        request = llm_request(
            self.name, system_instructions, input, model_settings, tools, output_schema, handoffs
        )

        async def recorded() -> dict[str, Any]:
            return model_response_output(self.name, await call())

        result = await durable_step(execution, step_id, llm_input(request, step_id), recorded)
        return model_response(result.output)

    async def stream_response(
        self,
        system_instructions: str | None,
        input: str | list[TResponseInputItem],
        model_settings: ModelSettings,
        tools: list[Any],
        output_schema: AgentOutputSchemaBase | None,
        handoffs: list[Handoff[Any, Any]],
        tracing: ModelTracing,
        *,
        previous_response_id: str | None,
        conversation_id: str | None,
        prompt: Any,
    ) -> AsyncIterator[TResponseStreamEvent]:
        def stream() -> AsyncIterator[TResponseStreamEvent]:
            return self.wrapped.stream_response(
                system_instructions,
                input,
                model_settings,
                tools,
                output_schema,
                handoffs,
                tracing,
                previous_response_id=previous_response_id,
                conversation_id=conversation_id,
                prompt=prompt,
            )

        execution = current_execution()
        if execution is None:
            async for event in stream():
                yield event
            return
        step_id = llm_step_id(self.name)
        request = llm_request(
            self.name, system_instructions, input, model_settings, tools, output_schema, handoffs
        )
        pending = PendingStep(execution, step_id, llm_input(request, step_id))
        if pending.replayed:
            result = await pending.run(_never)
            yield _completed(streamed_response(result.output))
            return
        # Live: the stream is read inside the step (its own task), each event passed on
        # as it comes, and the step recorded once the stream completed.
        events: asyncio.Queue[TResponseStreamEvent | None] = asyncio.Queue()

        async def read() -> dict[str, Any]:
            final: Response | None = None
            try:
                async for event in stream():
                    events.put_nowait(event)
                    if isinstance(event, ResponseCompletedEvent):
                        final = event.response
            finally:
                events.put_nowait(None)
            if final is None:
                raise LlmError(f"{self.name}: the stream ended without response.completed")
            return streamed_response_output(self.name, final)

        task = asyncio.ensure_future(pending.run(read))
        try:
            while True:
                live = await events.get()
                if live is None:
                    break
                if not isinstance(live, ResponseCompletedEvent):
                    yield live
            result = await task
        finally:
            if not task.done():
                task.cancel()
        # The completed event the runner reads is the recorded one, as on a replay.
        yield _completed(streamed_response(result.output))


async def _never() -> Any:
    raise AssertionError("a recorded step does not run its body")


def _completed(response: Response) -> ResponseCompletedEvent:
    return ResponseCompletedEvent(type="response.completed", response=response, sequence_number=0)


class StepModelProvider(ModelProvider):
    """Hands out the wrapped provider's models as :class:`StepModel`, named as asked for."""

    def __init__(self, wrapped: ModelProvider) -> None:
        self.wrapped = wrapped

    def get_model(self, model_name: str | None) -> Model:
        model = self.wrapped.get_model(model_name)
        return StepModel(model, model_name or model_name_of(model))

    async def aclose(self) -> None:
        close = getattr(self.wrapped, "aclose", None)
        if close is not None:
            await close()

"""IronflowModel: a Pydantic AI model whose requests are ``llm.<model>`` steps in a run."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from contextvars import ContextVar
from typing import Any

from pydantic_ai.agent import EventStreamHandler
from pydantic_ai.messages import ModelMessage, ModelResponse
from pydantic_ai.models import (
    CompletedStreamedResponse,
    Model,
    ModelRequestParameters,
    StreamedResponse,
)
from pydantic_ai.models.wrapper import WrapperModel
from pydantic_ai.settings import ModelSettings
from pydantic_ai.tools import RunContext

from ironflow.contrib._steps import current_execution, durable_step, llm_input, llm_step_id
from ironflow.contrib.pydantic_ai._convert import llm_request, llm_response_output, model_response

__all__ = ["IronflowModel", "stream_handler"]

#: The event stream handler of the durable run in progress: model-request events are
#: handed to it inside the request's step, live and once (a replay does not repeat them).
stream_handler: ContextVar[EventStreamHandler[Any] | None] = ContextVar(
    "ironflow_pydantic_ai_stream_handler", default=None
)


class IronflowModel(WrapperModel):
    """Wraps a model so that, inside an Ironflow run, each request is the step ``llm.<model>``.

    The request (messages, tool schemas, settings) is the step's input and the response
    its output, recorded before the agent goes on; a replay returns the recorded
    response without asking the model. Outside a run, requests go straight to the
    wrapped model.
    """

    def __init__(self, wrapped: Model | str) -> None:
        super().__init__(wrapped)

    async def request(
        self,
        messages: list[ModelMessage],
        model_settings: ModelSettings | None,
        model_request_parameters: ModelRequestParameters,
    ) -> ModelResponse:
        execution = current_execution()
        if execution is None:
            return await self.wrapped.request(messages, model_settings, model_request_parameters)
        step_id = llm_step_id(self.wrapped.model_name)
        request = llm_request(
            self.wrapped.model_name, messages, model_settings, model_request_parameters
        )

        async def call() -> dict[str, Any]:
            response = await self.wrapped.request(
                messages, model_settings, model_request_parameters
            )
            return llm_response_output(response)

        result = await durable_step(execution, step_id, llm_input(request, step_id), call)
        return model_response(result.output)

    @asynccontextmanager
    async def request_stream(
        self,
        messages: list[ModelMessage],
        model_settings: ModelSettings | None,
        model_request_parameters: ModelRequestParameters,
        run_context: RunContext[Any] | None = None,
    ) -> AsyncIterator[StreamedResponse]:
        execution = current_execution()
        if execution is None:
            async with self.wrapped.request_stream(
                messages, model_settings, model_request_parameters, run_context
            ) as streamed:
                yield streamed
            return
        step_id = llm_step_id(self.wrapped.model_name)
        request = llm_request(
            self.wrapped.model_name, messages, model_settings, model_request_parameters
        )
        handler = stream_handler.get()

        async def call() -> dict[str, Any]:
            # The whole stream is taken inside the step: the run's handler sees its
            # events live, and the response is recorded once it is complete.
            async with self.wrapped.request_stream(
                messages, model_settings, model_request_parameters, run_context
            ) as streamed:
                if handler is not None and run_context is not None:
                    await handler(run_context, streamed)
                async for _ in streamed:
                    pass
            return llm_response_output(streamed.get())

        result = await durable_step(execution, step_id, llm_input(request, step_id), call)
        # With a handler the events were delivered in the step; without one (run_stream,
        # iter), the recorded parts are replayed as events so streaming readers work.
        yield CompletedStreamedResponse(
            model_response(result.output),
            model_request_parameters=model_request_parameters,
            replay_events=handler is None,
        )

"""The provider interface, the process-wide default provider, and the call in flight."""

from __future__ import annotations

import contextvars
import threading
from typing import Protocol, runtime_checkable

import attrs

from ironflow.llm._types import LlmRequest, LlmResponse
from ironflow.replay._engine import StepInfo

__all__ = [
    "LlmCall",
    "Provider",
    "current_call",
    "get_default_provider",
    "set_default_provider",
]


@runtime_checkable
class Provider(Protocol):
    """Something that answers model calls: a scripted fake, or an SDK adapter.

    ``complete`` is called once per unrecorded ``llm`` step, possibly from a worker
    pool thread (in an ``async def`` agent), so it must be thread-safe. It may raise;
    the step is then recorded as failed. After a crash the call in flight is made
    again, so it is *at least once*: use :func:`current_call` for an idempotency key.
    """

    def complete(self, request: LlmRequest) -> LlmResponse:
        """Answer one request."""
        ...


@attrs.frozen
class LlmCall:
    """The model call a provider is answering, as :func:`current_call` returns it.

    ``index`` counts the ``ctx.llm`` calls this provider answers in this run, in call
    order from 0, replayed ones included, so it is the same number on every execution
    of the run, in whatever process.
    """

    index: int
    step: StepInfo | None = None


_current: contextvars.ContextVar[LlmCall | None] = contextvars.ContextVar(
    "ironflow_llm_call", default=None
)


def current_call() -> LlmCall | None:
    """The ``ctx.llm`` call being answered in this context, or None outside one."""
    return _current.get()


_lock = threading.Lock()
_default: Provider | None = None


def set_default_provider(provider: Provider | None) -> Provider | None:
    """Make ``provider`` answer every ``ctx.llm`` call that names no ``provider=``.

    Process-wide: call it once when the agents' module is imported (the worker imports
    it before running anything). ``None`` clears it. Returns the previous default, so
    a test can put it back.
    """
    global _default
    with _lock:
        previous, _default = _default, provider
    return previous


def get_default_provider() -> Provider | None:
    """The provider set by :func:`set_default_provider`, or None."""
    return _default

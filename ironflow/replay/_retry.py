"""How a failing step is tried again: the policy ``@tool(retries=...)`` builds."""

from __future__ import annotations

import random

import attrs

from ironflow.errors import DefinitionError, NonRetryableError, NotSerializableError

__all__ = ["RetryPolicy"]


@attrs.frozen
class RetryPolicy:
    """How a failing step is tried again: up to ``retries`` more times, with backoff.

    The wait before try ``n + 1`` is ``backoff * 2 ** (n - 1)`` seconds, at most
    ``max_backoff``, times a random factor from 0.5 to 1 (jitter, so that many runs
    failing together do not retry together). Exceptions that are
    :class:`~ironflow.errors.NonRetryableError` or one of ``non_retryable`` fail the
    step at once.
    """

    retries: int = 0
    backoff: float = 1.0
    max_backoff: float = 300.0
    non_retryable: tuple[type[BaseException], ...] = ()

    def should_retry(self, exc: BaseException, failed_tries: int) -> bool:
        """Whether a step that failed ``failed_tries`` times, the last with ``exc``, goes on."""
        if failed_tries > self.retries:
            return False
        # A value that cannot be stored, or a misused API, fails the same way every try.
        permanent = (NonRetryableError, NotSerializableError, DefinitionError)
        return not isinstance(exc, (*permanent, *self.non_retryable))

    def delay(self, failed_tries: int) -> float:
        """Seconds to wait before the next try, after ``failed_tries`` failed ones."""
        base = min(self.max_backoff, self.backoff * 2.0 ** min(failed_tries - 1, 64))
        return base * (0.5 + random.random() / 2)

"""The retry policy: exponential backoff with full jitter, bounded, honouring the server's Retry-After."""

from __future__ import annotations

import random
from dataclasses import dataclass

from tenacity import RetryCallState

RETRY_AFTER_CAP = 300.0  # a Retry-After beyond five minutes is honoured only up to this


@dataclass(frozen=True)
class BackoffWait:
    """``delay(attempt)`` is uniform in [min, min(max, min * 2**attempt)], raised to any Retry-After.

    Also usable as a tenacity ``wait`` (it reads ``retry_after`` from the failed attempt's exception).
    """

    minimum: float
    maximum: float

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number ``attempt`` (1-based)."""
        ceiling = min(self.maximum, self.minimum * (2 ** max(0, attempt - 1)) * 2)
        base = random.uniform(self.minimum, max(self.minimum, ceiling))
        if retry_after is not None:
            return max(base, min(retry_after, RETRY_AFTER_CAP))
        return base

    def __call__(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome is not None and state.outcome.failed else None
        return self.delay(state.attempt_number, getattr(exc, "retry_after", None))


def backoff_wait(minimum: float, maximum: float) -> BackoffWait:
    """The configured backoff (``backoff_min_ms``/``backoff_max_ms`` in seconds)."""
    return BackoffWait(max(0.0, minimum), max(minimum, maximum))

"""The one retry policy (chunk workers, probe, single stream, API calls): exponential backoff with full
jitter, bounded, honouring the server's Retry-After (capped), from ``concurrency`` in the config."""

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


# Tries against a host that refuses connections or does not resolve: a second or two of backoff covers a restart
# blip; a minute of retries for a typo or a server that is down helps nobody.
UNREACHABLE_ATTEMPTS = 3


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry one request: ``attempts`` tries in all (``unreachable_attempts`` when
    the last failure was ``unreachable``), waiting ``wait.delay`` between them."""

    attempts: int
    wait: BackoffWait
    unreachable_attempts: int = UNREACHABLE_ATTEMPTS

    def gives_up(self, attempt: int, unreachable: bool) -> bool:
        """True when try number ``attempt`` (1-based) was the last one."""
        return attempt >= self.attempts or (unreachable and attempt >= self.unreachable_attempts)


def retry_policy(max_retries: int, backoff_min_ms: int, backoff_max_ms: int) -> RetryPolicy:
    """The configured policy (``concurrency.max_retries`` / ``backoff_min_ms`` / ``backoff_max_ms``)."""
    return RetryPolicy(max(1, max_retries + 1), backoff_wait(backoff_min_ms / 1000, backoff_max_ms / 1000))

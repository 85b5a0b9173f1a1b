"""When and how long to retry a call to an external system (tenacity underneath).

Only transient failures are retried: the network, HTTP 409, 429 and 5xx, and whatever the
peer marks retryable (``Stripe-Should-Retry: true``); ``Stripe-Should-Retry: false`` wins
over the status. The wait is exponential with full jitter, but never shorter than the
peer's ``Retry-After``. Attempts and waits are bounded; after the last attempt the caller
dead-letters the operation with the reason.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt

from beanbill.rating.errors import BeanbillError

DEFAULT_ATTEMPTS = 6
DEFAULT_BASE_SECONDS = 0.5
DEFAULT_MAX_WAIT_SECONDS = 30.0
MAX_RETRY_AFTER_SECONDS = 300.0
TRANSIENT_STATUSES = frozenset({409, 429})

T = TypeVar("T")


class TransientError(BeanbillError):
    """Worth another try, after at least ``retry_after_seconds`` when the peer said so."""

    def __init__(self, message: str, retry_after_seconds: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds


class PermanentError(BeanbillError):
    """Retrying cannot help (a 4xx other than 409/429, a validation error): dead-letter it."""


def _retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    value = {k.lower(): v for k, v in headers.items()}.get("retry-after")
    if value is None:
        return None
    try:
        return min(max(float(value), 0.0), MAX_RETRY_AFTER_SECONDS)
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff


def classify(status: int, headers: Mapping[str, str], message: str) -> BeanbillError | None:
    """The error an HTTP answer stands for, or None when it succeeded."""
    lowered = {k.lower(): v.lower() for k, v in headers.items()}
    should_retry = lowered.get("stripe-should-retry")
    if 200 <= status < 300:
        return None
    if should_retry == "false":
        return PermanentError(f"HTTP {status} (peer says do not retry): {message}")
    if should_retry == "true" or status in TRANSIENT_STATUSES or status >= 500:
        return TransientError(f"HTTP {status}: {message}", _retry_after_seconds(headers))
    return PermanentError(f"HTTP {status}: {message}")


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = DEFAULT_ATTEMPTS
    base_seconds: float = DEFAULT_BASE_SECONDS
    max_wait_seconds: float = DEFAULT_MAX_WAIT_SECONDS

    def wait_seconds(self, state: RetryCallState) -> float:
        ceiling = min(self.max_wait_seconds, self.base_seconds * 2 ** (state.attempt_number - 1))
        wait = random.uniform(0, ceiling)  # full jitter
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, TransientError) and error.retry_after_seconds is not None:
            wait = max(wait, error.retry_after_seconds)
        return wait

    def call(self, operation: Callable[[], T], sleep: Callable[[float], None] | None = None) -> T:
        """Run ``operation``, retrying transient errors; the last error propagates."""
        retrying = Retrying(
            stop=stop_after_attempt(self.attempts),
            wait=self.wait_seconds,
            retry=retry_if_exception_type(TransientError),
            reraise=True,
            sleep=sleep or time.sleep,
        )
        return retrying(operation)

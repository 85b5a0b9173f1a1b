"""A token bucket per API key: a client may burst, then goes at the sustained rate.

In memory, per server process: a limit against a runaway script, not an accounting
record (a restart refills every bucket). A refused request is told how long to wait
(``Retry-After``, whole seconds, rounded up).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from beanbill.api.problems import ApiSettingsError

MAX_TRACKED_KEYS = 100_000  # buckets kept; beyond it the fullest (idle) ones are forgotten


@dataclass(frozen=True)
class RateLimit:
    """``burst`` requests at once, refilled at ``per_second`` requests a second."""

    per_second: float = 20.0
    burst: int = 100

    def __post_init__(self) -> None:
        if not (self.per_second > 0 and math.isfinite(self.per_second)) or self.burst < 1:
            raise ApiSettingsError("a rate limit needs a positive rate and a burst of at least 1")


@dataclass
class _Bucket:
    tokens: float
    updated: float


class TokenBuckets:
    """One bucket per key id; thread-safe (request handlers run in a thread pool)."""

    def __init__(self, limit: RateLimit, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def take(self, key_id: str) -> float:
        """Take one token: 0 when the request may go, else the seconds until one is there."""
        now = self.clock()
        with self._lock:
            bucket = self._buckets.get(key_id)
            if bucket is None:
                if len(self._buckets) >= MAX_TRACKED_KEYS:
                    self._forget_full(now)
                bucket = self._buckets[key_id] = _Bucket(float(self.limit.burst), now)
            elapsed = max(0.0, now - bucket.updated)
            bucket.tokens = min(
                float(self.limit.burst), bucket.tokens + elapsed * self.limit.per_second
            )
            bucket.updated = now
            if bucket.tokens >= 1:
                bucket.tokens -= 1
                return 0.0
            return (1 - bucket.tokens) / self.limit.per_second

    def _forget_full(self, now: float) -> None:
        """Drop the buckets that would be full by now: forgetting them changes nothing."""
        refill = self.limit.burst / self.limit.per_second
        for key_id in [k for k, b in self._buckets.items() if now - b.updated >= refill]:
            del self._buckets[key_id]


def retry_after_seconds(wait: float) -> int:
    """``Retry-After`` is whole seconds: round up, never 0."""
    return max(1, math.ceil(wait))

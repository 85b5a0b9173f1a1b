"""A client-side request rate limit shared by the threads that talk to one system.

Stripe answers 429 beyond 25 requests/s in test mode (100 live); pacing ourselves just
under the limit keeps the nightly push from spending its retries on rate-limit errors.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class RateLimiter:
    """Evenly spaced slots: at most ``per_second`` calls start in any one second."""

    def __init__(
        self,
        per_second: int,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if per_second <= 0:
            raise ValueError("a rate limit must be positive")
        self.interval_seconds = 1.0 / per_second
        self._clock = clock
        self._sleep = sleep
        self._next_slot = clock()
        self._lock = threading.Lock()

    def wait(self) -> None:
        with self._lock:
            now = self._clock()
            slot = max(now, self._next_slot)
            self._next_slot = slot + self.interval_seconds
        if slot > now:
            self._sleep(slot - now)

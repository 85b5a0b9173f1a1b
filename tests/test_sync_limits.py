"""The rate limiter: calls spaced evenly under the remote's limit, none held back when idle."""

from __future__ import annotations

from beanbill.sync.limits import RateLimiter


def test_the_rate_limiter_spaces_calls_evenly() -> None:
    now = [100.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)

    limiter = RateLimiter(4, clock=lambda: now[0], sleep=sleep)
    for _ in range(4):
        limiter.wait()
    assert slept == [0.25, 0.5, 0.75]
    now[0] = 110.0
    limiter.wait()
    assert slept == [0.25, 0.5, 0.75]  # an idle limiter lets the next call through at once

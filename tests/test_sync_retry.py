"""Retries: which answers are retried, how long to wait, and the keys that make a retry harmless."""

from __future__ import annotations

import pytest

from beanbill.sync.interface import idempotency_key
from beanbill.sync.retry import PermanentError, RetryPolicy, TransientError, classify


@pytest.mark.parametrize(
    ("status", "headers", "kind"),
    [
        (200, {}, None),
        (500, {}, TransientError),
        (503, {"Retry-After": "7"}, TransientError),
        (429, {}, TransientError),
        (409, {}, TransientError),
        (400, {}, PermanentError),
        (402, {"Stripe-Should-Retry": "true"}, TransientError),
        (500, {"Stripe-Should-Retry": "false"}, PermanentError),
    ],
)
def test_only_transient_answers_are_retried(
    status: int, headers: dict[str, str], kind: type[Exception] | None
) -> None:
    error = classify(status, headers, "message")
    assert (type(error) if error else None) is kind


def test_waits_grow_with_jitter_honour_retry_after_and_stop() -> None:
    waits: list[float] = []
    answers = iter([TransientError("503", retry_after_seconds=7.0), TransientError("500"),
                    TransientError("500")])  # fmt: skip

    def flaky() -> str:
        error = next(answers, None)
        if error is not None:
            raise error
        return "ok"

    policy = RetryPolicy(attempts=5, base_seconds=0.5, max_wait_seconds=4.0)
    assert policy.call(flaky, sleep=waits.append) == "ok"
    assert len(waits) == 3 and waits[0] >= 7.0 and all(0 <= w <= 4.0 for w in waits[1:])
    with pytest.raises(TransientError):
        RetryPolicy(attempts=3).call(
            lambda: (_ for _ in ()).throw(TransientError("down")), sleep=waits.append
        )
    calls: list[int] = []

    def permanent() -> None:
        calls.append(1)
        raise PermanentError("400")

    with pytest.raises(PermanentError):
        RetryPolicy(attempts=5).call(permanent, sleep=waits.append)
    assert calls == [1]  # never retried


def test_idempotency_keys_are_stable_and_short_enough() -> None:
    key = idempotency_key("ws-a", "stripe", "INV-2026-000001", "create-invoice")
    assert key == idempotency_key("ws-a", "stripe", "INV-2026-000001", "create-invoice")
    assert len(key) <= 255  # Stripe's limit
    # Two workspaces sharing one Stripe account never replay each other's answers.
    assert key != idempotency_key("ws-b", "stripe", "INV-2026-000001", "create-invoice")
    with pytest.raises(ValueError, match="over 255"):
        idempotency_key("ws-a", "stripe", "N" * 250, "create-invoice")

"""Sync groundwork: the durable state store and the retry policy (the engine comes next)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from sync.interface import idempotency_key
from sync.retry import PermanentError, RetryPolicy, TransientError, classify
from sync.state import MIGRATIONS, PushStatus, SqliteSyncState, SyncStateError


def test_push_records_survive_reopening_and_dead_letters_can_be_requeued(tmp_path: Path) -> None:
    state = SqliteSyncState(tmp_path)
    state.record_attempt("INV-2026-000001", "stripe", "timeout")
    state.record_attempt("INV-2026-000001", "stripe", None)
    state.mark_synced("INV-2026-000001", "stripe", {"invoice": "in_123"})
    state.record_attempt("INV-2026-000002", "stripe", "HTTP 400: bad tax id")
    state.mark_dead("INV-2026-000002", "stripe", "HTTP 400: bad tax id")
    reopened = SqliteSyncState(tmp_path)
    first = reopened.get("INV-2026-000001", "stripe")
    assert first is not None and (first.status, first.attempts, first.remote_ids) == (
        PushStatus.SYNCED, 2, {"invoice": "in_123"},
    )  # fmt: skip
    assert [r.status for r in reopened.records("stripe")] == [PushStatus.SYNCED, PushStatus.DEAD]
    assert reopened.requeue_dead("stripe") == 1
    assert reopened.get("INV-2026-000002", "stripe").status is PushStatus.PENDING  # type: ignore[union-attr]
    assert reopened.schema_version() == len(MIGRATIONS)


def test_the_inbox_keeps_each_event_once_until_processed(tmp_path: Path) -> None:
    state = SqliteSyncState(tmp_path)
    assert state.store_event("stripe", "evt_1", "invoice.paid", {"id": "evt_1", "amount": 1234})
    assert not state.store_event("stripe", "evt_1", "invoice.paid", {"id": "evt_1", "amount": 1234})
    state.store_event("stripe", "evt_2", "charge.refunded", {"id": "evt_2"})
    assert [e.event_id for e in state.unprocessed_events("stripe", 10)] == ["evt_1", "evt_2"]
    state.mark_processed("stripe", {"evt_1": "posted"})
    assert [e.event_id for e in SqliteSyncState(tmp_path).unprocessed_events("stripe", 10)] == [
        "evt_2"
    ]


def test_a_store_from_a_newer_beanbill_is_refused(tmp_path: Path) -> None:
    SqliteSyncState(tmp_path)
    with sqlite3.connect(tmp_path / "sync.sqlite") as connection:
        connection.execute("PRAGMA user_version = 99")
    with pytest.raises(SyncStateError, match="schema version 99"):
        SqliteSyncState(tmp_path)


CONCURRENT = """
import sys
from pathlib import Path
from sync.state import SqliteSyncState
state = SqliteSyncState(Path(sys.argv[1]))
for index in range(150):
    state.store_event("stripe", f"evt_{index}", "invoice.paid", {"n": index})
    state.record_attempt(f"INV-{index}", "stripe", None)
"""


def test_concurrent_writers_neither_lose_nor_duplicate(tmp_path: Path) -> None:
    processes = [
        subprocess.Popen([sys.executable, "-c", CONCURRENT, str(tmp_path)]) for _ in range(3)
    ]
    assert [p.wait(timeout=120) for p in processes] == [0, 0, 0]
    state = SqliteSyncState(tmp_path)
    assert len(state.unprocessed_events("stripe", 1000)) == 150
    assert {r.attempts for r in state.records("stripe")} == {3}


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
    key = idempotency_key("stripe", "INV-2026-000001", "create-invoice")
    assert key == idempotency_key("stripe", "INV-2026-000001", "create-invoice")
    assert len(key) <= 255  # Stripe's limit

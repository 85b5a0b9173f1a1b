"""Sync groundwork: the durable state store and the retry policy (the engine comes next)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from beanbill.sync.interface import idempotency_key
from beanbill.sync.retry import PermanentError, RetryPolicy, TransientError, classify
from beanbill.sync.state import MIGRATIONS, PushStatus, SqliteSyncState, SyncStateError


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
from beanbill.sync.state import SqliteSyncState
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


def test_stripe_lines_add_vat_and_credits_to_exactly_the_amount_due() -> None:
    from dataclasses import replace
    from datetime import date
    from decimal import Decimal

    from beanbill.connectors.stripe import stripe_lines
    from beanbill.ledger.invoicing.documents import (
        DocumentType,
        InvoiceDocument,
        InvoiceLine,
        Party,
    )
    from beanbill.ledger.invoicing.vat import VatCategory, VatTreatment

    vat = VatTreatment(VatCategory.STANDARD, Decimal(20), None, None)
    party = Party("P", ("a",), "FR")
    lines = tuple(
        InvoiceLine(str(n), "x", Decimal(1), "C62", Decimal(1), Decimal(1), 333 + n, vat)
        for n in range(3)
    )
    document = InvoiceDocument("INV-1", DocumentType.INVOICE, date(2026, 11, 5),
                               date(2026, 12, 5), date(2026, 10, 1), date(2026, 10, 31), "EUR",
                               party, party, lines, paid_minor=250)  # fmt: skip
    result = stripe_lines(document)
    assert [line.key for line in result] == ["line-1", "line-2", "line-3", "vat-S-20", "prepaid"]
    assert sum(line.amount_minor for line in result) == document.due_minor == 1002 + 200 - 250
    assert stripe_lines(replace(document, paid_minor=0))[-1].key == "vat-S-20"


def test_each_movement_kind_balances_between_the_right_accounts() -> None:
    from datetime import date

    from beanbill.connectors.stripe import ACCOUNTS
    from beanbill.sync.interface import Movement, MovementKind
    from beanbill.sync.payments import Unmatched, movement_entry

    receivable = "Assets:Receivable:Acme"
    expected = {
        MovementKind.PAYMENT: ("Assets:Stripe:Balance", receivable),
        MovementKind.REFUND: (receivable, "Assets:Stripe:Balance"),
        MovementKind.FEE: ("Expenses:Fees:Stripe", "Assets:Stripe:Balance"),
        MovementKind.PAYOUT: ("Assets:Bank:Operating", "Assets:Stripe:Balance"),
        MovementKind.DISPUTE_HOLD: ("Assets:Stripe:Disputed", "Assets:Stripe:Balance"),
        MovementKind.DISPUTE_WON: ("Assets:Stripe:Balance", "Assets:Stripe:Disputed"),
        MovementKind.DISPUTE_LOST: (receivable, "Assets:Stripe:Disputed"),
    }
    for kind, (debit, credit) in expected.items():
        movement = Movement(f"t:{kind}", kind, date(2026, 11, 9), 1234, "EUR", "x_1", "INV-1")
        entry = movement_entry(movement, "stripe", ACCOUNTS, "acme", receivable, "EUR")
        assert [(p.account, p.amount_minor) for p in entry.postings] == [
            (debit, 1234),
            (credit, -1234),
        ]
    payment = Movement("t", MovementKind.PAYMENT, date(2026, 11, 9), 5, "EUR", "x")
    with pytest.raises(Unmatched, match="no organization"):
        movement_entry(payment, "stripe", ACCOUNTS, None, None, "EUR")
    with pytest.raises(Unmatched, match="USD is not"):
        movement_entry(payment._replace(currency="USD"), "stripe", ACCOUNTS, "a", receivable, "EUR")


def test_the_rate_limiter_spaces_calls_evenly() -> None:
    from beanbill.sync.limits import RateLimiter

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

"""Money movements (payments, refunds, fees, payouts, disputes) as balanced ledger entries."""

from __future__ import annotations

from datetime import date

import pytest

from beanbill.connectors.stripe import ACCOUNTS
from beanbill.sync.interface import Movement, MovementKind
from beanbill.sync.payments import Unmatched, movement_entry


def test_each_movement_kind_balances_between_the_right_accounts() -> None:
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

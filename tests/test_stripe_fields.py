"""Reading Stripe objects: only fields the SDK declares for the pinned version, typed strictly."""

from __future__ import annotations

import pytest
import stripe

from beanbill.connectors.stripe import (
    Fields,
    UndeclaredStripeField,
    credit_note_split,
    declared_fields,
)
from beanbill.sync.interface import MalformedEvent
from beanbill.sync.retry import PermanentError


def test_a_field_stripe_does_not_have_is_a_defect_not_a_none() -> None:
    dispute = Fields(stripe.Dispute, {"id": "dp_1", "customer": "cus_1", "charge": "ch_1"})
    assert dispute.reference("charge") == "ch_1"
    with pytest.raises(UndeclaredStripeField, match=r"Dispute\.customer does not exist"):
        dispute.get("customer")
    assert "customer" in declared_fields(stripe.Refund)  # a refund names its customer


@pytest.mark.parametrize("value", [1.5, "100", True, None, 10**14, -1])
def test_amounts_are_integers_in_range(value: object) -> None:
    with pytest.raises(MalformedEvent, match="amount_paid"):
        Fields(stripe.Invoice, {"id": "in_1", "amount_paid": value}).amount("amount_paid")


def test_an_object_that_is_not_an_object_is_malformed() -> None:
    with pytest.raises(MalformedEvent):
        Fields(stripe.Invoice, ["in_1"])
    with pytest.raises(MalformedEvent, match="metadata"):
        Fields(stripe.Invoice, {"id": "in_1", "metadata": "x"}).metadata()


def invoice(status: str, total: int, remaining: int, credited: int = 0) -> Fields:
    return Fields(
        stripe.Invoice,
        {
            "id": "in_1",
            "status": status,
            "total": total,
            "amount_remaining": remaining,
            "pre_payment_credit_notes_amount": credited,
            "post_payment_credit_notes_amount": 0,
        },
    )


def test_a_credit_note_is_split_by_what_remains_due() -> None:
    assert credit_note_split(1000, invoice("open", 1000, 1000)) == (1000, 0)  # unpaid
    assert credit_note_split(1000, invoice("open", 1000, 400)) == (400, 600)  # partly paid
    assert credit_note_split(1000, invoice("paid", 1000, 0)) == (0, 1000)  # paid
    assert credit_note_split(300, invoice("open", 1000, 400, credited=200)) == (300, 0)
    with pytest.raises(PermanentError, match="only 800 is left to credit"):
        credit_note_split(1000, invoice("open", 1000, 400, credited=200))


def test_what_was_paid_outside_stripe_is_not_booked_into_the_stripe_balance() -> None:
    from datetime import UTC, datetime

    from beanbill.connectors.stripe import StripeConnector
    from beanbill.rating.config import StripeSettings

    connector = StripeConnector(StripeSettings(), "sk_test_offline", None, 30, "UTC", "ws-t")
    paid_at = int(datetime(2026, 11, 10, tzinfo=UTC).timestamp())
    invoice = {"id": "in_1", "status": "paid", "amount_paid": 1000, "currency": "eur",
               "amount_paid_off_stripe": 400, "created": paid_at, "starting_balance": 0,
               "ending_balance": 0, "status_transitions": {"paid_at": paid_at}}  # fmt: skip
    payment = connector.payment_of(Fields(stripe.Invoice, invoice))
    assert payment is not None and payment.amount_minor == 600
    by_hand = {**invoice, "amount_paid_off_stripe": 1000}
    assert connector.payment_of(Fields(stripe.Invoice, by_hand)) is None


def test_stripe_sends_only_send_invoice_invoices() -> None:
    from pydantic import ValidationError

    from beanbill.rating.config import StripeSettings

    with pytest.raises(ValidationError, match="send_invoices needs"):
        StripeSettings(send_invoices=True, collection_method="charge_automatically")

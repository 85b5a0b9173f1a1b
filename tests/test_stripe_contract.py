"""Contract tests against real Stripe test mode; they run only when STRIPE_TEST_SECRET_KEY is set.

The local peer is written from Stripe's documentation; these check the same behaviours
against Stripe itself: our number and VAT on the invoice, the minimum charge, a credit
note on a paid invoice, a card payment, a refund and its event, a dispute (Stripe's
``pm_card_createDispute`` test card, i.e. 4000000000000259), a retry while the invoice
is still a draft.
"""

from __future__ import annotations

import os
import time
from datetime import date
from decimal import Decimal
from typing import Any

import pytest
import stripe

from beanbill.connectors.stripe import STRIPE_API_VERSION, StripeConnector, stripe_lines
from beanbill.ledger.invoicing.documents import DocumentType, InvoiceDocument, InvoiceLine, Party
from beanbill.ledger.invoicing.vat import VatCategory, VatTreatment
from beanbill.rating.config import StripeSettings
from beanbill.sync.interface import MovementKind, WebhookEvent

KEY = os.environ.get("STRIPE_TEST_SECRET_KEY", "")
SETTLE_SECONDS = 60

pytestmark = pytest.mark.skipif(
    not KEY.startswith("sk_test_"), reason="set STRIPE_TEST_SECRET_KEY (a test-mode key)"
)
VAT = VatTreatment(VatCategory.STANDARD, Decimal(20), None, None)
PARTY = Party("beanbill contract test", ("1 Main Street",), "FR", email="t@example.com")


def connector() -> StripeConnector:
    settings = StripeSettings(requests_per_second=20)
    return StripeConnector(settings, KEY, None, 30, "UTC", f"contract-{int(time.time())}")


def document(net_minor: int, org: str = "org-contract", **extra: Any) -> InvoiceDocument:
    line = InvoiceLine("1", "vCPU", Decimal(2), "HUR", Decimal("0.615"), Decimal(1), net_minor, VAT)
    return InvoiceDocument(
        f"TEST-{time.time_ns()}", DocumentType.INVOICE, date.today(), date.today(),
        date.today(), date.today(), "EUR", PARTY, PARTY, (line,), buyer_reference=org, **extra,
    )  # fmt: skip


def api() -> Any:
    return stripe.StripeClient(KEY, stripe_version=STRIPE_API_VERSION).v1


def pay_with(invoice_id: str, payment_method: str) -> stripe.Invoice:
    v1 = api()
    invoice = v1.invoices.retrieve(invoice_id)
    method = v1.payment_methods.attach(payment_method, params={"customer": str(invoice.customer)})
    return v1.invoices.pay(invoice_id, params={"payment_method": str(method.id)})


def events_of(kind: str, about: str) -> list[WebhookEvent]:
    """Events of ``kind`` whose object mentions ``about``, waiting for Stripe to emit them."""
    deadline = time.monotonic() + SETTLE_SECONDS
    while True:
        found = [
            WebhookEvent(str(e.id), str(e.type), e.to_dict())
            for e in api().events.list(params={"type": kind, "limit": 20}).data
            if about in str(e.to_dict()["data"]["object"])
        ]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(2)


def test_our_number_and_vat_reach_stripe_and_a_second_push_finds_the_invoice() -> None:
    stripe_connector = connector()
    invoice = document(123)
    first = stripe_connector.push(invoice, {})
    assert first.total_minor == invoice.due_minor == 148
    assert stripe_connector.push(invoice, {}).remote_ids == first.remote_ids
    remote = api().invoices.retrieve(first.remote_ids["invoice"])
    assert remote.number == invoice.number
    assert sum(t.amount for t in remote.total_taxes or []) == invoice.tax_minor == 25
    assert first.remote_ids["hosted_invoice_url"] == remote.hosted_invoice_url


def test_an_invoice_under_the_minimum_charge_is_paid_from_the_balance() -> None:
    pushed = connector().push(document(20), {})  # 0.24 EUR: under 0.50 EUR
    remote = api().invoices.retrieve(pushed.remote_ids["invoice"])
    assert (remote.status, remote.amount_paid) == ("paid", 0)
    assert remote.ending_balance - remote.starting_balance == remote.total


def test_a_card_payment_a_refund_and_a_credit_note_on_the_paid_invoice() -> None:
    stripe_connector = connector()
    invoice = document(5000)
    pushed = stripe_connector.push(invoice, {})
    paid = pay_with(pushed.remote_ids["invoice"], "pm_card_visa")
    assert paid.status == "paid" and paid.amount_paid == invoice.due_minor
    [event] = events_of("invoice.paid", str(paid.id))
    [payment] = [
        m for m in stripe_connector.interpret(event).movements if m.kind is MovementKind.PAYMENT
    ]
    assert payment.amount_minor == invoice.due_minor

    payments = api().invoice_payments.list(params={"invoice": str(paid.id)}).data
    intent = payments[0].payment.payment_intent
    refund = api().refunds.create(params={"payment_intent": str(intent), "amount": 100})
    [refunded] = events_of("refund.created", str(refund.id))
    [movement] = stripe_connector.interpret(refunded).movements
    assert (movement.kind, movement.amount_minor) == (MovementKind.REFUND, 100)
    assert movement.remote_customer == str(paid.customer)

    note = InvoiceDocument(
        f"CN-{invoice.number}", DocumentType.CREDIT_NOTE, date.today(), date.today(),
        date.today(), date.today(), "EUR", PARTY, PARTY, invoice.lines,
        buyer_reference=invoice.buyer_reference, preceding_number=invoice.number,
    )  # fmt: skip
    credited = stripe_connector.push(note, pushed.remote_ids)
    assert credited.total_minor == note.due_minor
    remote_note = api().credit_notes.retrieve(credited.remote_ids["credit_note"])
    assert remote_note.post_payment_amount == note.due_minor


def test_a_dispute_moves_the_amount_and_its_fee() -> None:
    stripe_connector = connector()
    pushed = stripe_connector.push(document(5000), {})
    paid = pay_with(pushed.remote_ids["invoice"], "pm_card_createDispute")
    payments = api().invoice_payments.list(params={"invoice": str(paid.id)}).data
    intent = str(payments[0].payment.payment_intent)
    [event] = events_of("charge.dispute.funds_withdrawn", intent)
    kinds = {m.kind for m in stripe_connector.interpret(event).movements}
    assert kinds == {MovementKind.DISPUTE_HOLD, MovementKind.FEE}


def test_a_push_retried_while_the_invoice_is_a_draft_adds_nothing_twice() -> None:
    stripe_connector = connector()
    invoice = document(777)
    customer = stripe_connector._find_or_create_customer(invoice)
    draft = stripe_connector._create_invoice(invoice, customer)
    stripe_connector._add_missing_lines(invoice, str(draft.id), stripe_lines(invoice))
    finished = stripe_connector.push(invoice, {"customer": customer})
    assert finished.remote_ids["invoice"] == str(draft.id)
    lines = api().invoices.line_items.list(str(draft.id)).data
    assert len(lines) == len(stripe_lines(invoice))
    assert finished.total_minor == invoice.due_minor

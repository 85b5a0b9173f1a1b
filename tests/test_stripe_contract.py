"""Contract test against real Stripe test mode; runs only when STRIPE_TEST_SECRET_KEY is set."""

from __future__ import annotations

import os
import time
from datetime import date
from decimal import Decimal

import pytest

from beanbill.connectors.stripe import StripeConnector
from beanbill.ledger.invoicing.documents import DocumentType, InvoiceDocument, InvoiceLine, Party
from beanbill.ledger.invoicing.vat import VatCategory, VatTreatment
from beanbill.rating.config import StripeSettings

KEY = os.environ.get("STRIPE_TEST_SECRET_KEY", "")

pytestmark = pytest.mark.skipif(
    not KEY.startswith("sk_test_"), reason="set STRIPE_TEST_SECRET_KEY (a test-mode key)"
)


def test_a_pushed_invoice_has_our_total_on_real_stripe_and_a_second_push_finds_it() -> None:
    connector = StripeConnector(StripeSettings(requests_per_second=20), KEY, None, 30, "UTC")
    vat = VatTreatment(VatCategory.STANDARD, Decimal(20), None, None)
    party = Party("beanbill contract test", ("1 Main Street",), "FR", email="t@example.com")
    line = InvoiceLine("1", "vCPU", Decimal(2), "HUR", Decimal("0.615"), Decimal(1), 123, vat)
    document = InvoiceDocument(
        f"TEST-{int(time.time())}", DocumentType.INVOICE, date.today(), date.today(),
        date.today(), date.today(), "EUR", party, party, (line,), buyer_reference="org-contract",
    )  # fmt: skip
    first = connector.push(document, {})
    assert first.total_minor == document.due_minor == 148
    assert connector.push(document, {}).remote_ids == first.remote_ids

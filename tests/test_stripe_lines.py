"""Stripe invoice lines from a document: lines, VAT and credits sum to exactly the amount due."""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from decimal import Decimal

from beanbill.connectors.stripe import stripe_lines
from beanbill.ledger.invoicing.documents import DocumentType, InvoiceDocument, InvoiceLine, Party
from beanbill.ledger.invoicing.vat import VatCategory, VatTreatment


def test_stripe_lines_add_vat_and_credits_to_exactly_the_amount_due() -> None:
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

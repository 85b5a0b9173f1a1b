"""The invoice document model: what an issued invoice or credit note says, exactly.

Connectors (Stripe, ERP, e-mail) read these records; renderers (HTML/PDF, Factur-X CII,
UBL) write them. Amounts are integer minor units; prices are Decimals with at most six
decimals (rule BR-FR-DEC-03), per-second meters being priced per hour.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date
from decimal import Decimal
from enum import StrEnum
from pathlib import Path

from pydantic import TypeAdapter, ValidationError

from beanbill.ledger.invoicing.vat import (
    VatBreakdown,
    VatCategory,
    VatLine,
    VatTreatment,
    breakdown,
)
from beanbill.rating.characters import REFUSED_CHARACTERS
from beanbill.rating.errors import BeanbillError


class DocumentError(BeanbillError):
    """An issued document's snapshot is missing or unreadable."""


class DocumentType(StrEnum):
    """UNTDID 1001 document type codes (EN16931 BT-3)."""

    INVOICE = "380"
    CREDIT_NOTE = "381"
    PREPAYMENT_INVOICE = "386"  # a payment on account (credit purchased), VAT due on receipt


@dataclass(frozen=True)
class Party:
    name: str
    address: tuple[str, ...]
    country: str
    vat_id: str | None = None
    siren: str | None = None
    email: str | None = None


@dataclass(frozen=True)
class InvoiceLine:
    """One line. The first fields are the e-invoice's (BT-129..BT-131, BT-146, BT-149);
    the ``shown_*`` fields are what people read on the PDF, in the unit the catalog
    publishes its price in (``232.8767 h × 0.025 €/h``); None in documents issued before
    they existed, which show the e-invoice's quantity and price."""

    line_id: str
    description: str
    quantity: Decimal
    unit_code: str  # UN/ECE recommendation 20: HUR hour, C62 one, E34 gigabyte, ...
    unit_price: Decimal  # per ``base_quantity`` units, at most six decimals
    base_quantity: Decimal
    net_minor: int
    vat: VatTreatment
    shown_quantity: Decimal | None = None  # in ``shown_unit``
    shown_unit: str | None = None  # "h", "GB-month", "M requests", "month"
    shown_price: Decimal | None = None  # per one ``shown_unit``, exact (any decimals)
    section: str | None = None  # central invoices: the team organization's name
    # The product family it bills (its revenue account, for an ERP); None for reductions,
    # regularizations, credit, and in documents issued before the field existed.
    family: str | None = None


@dataclass(frozen=True)
class PaymentInstructions:
    """How to pay (BG-16): credit transfer to the seller's account, quoting the reference."""

    reference: str  # BT-83 remittance information: the document number
    iban: str | None = None  # BT-84
    bic: str | None = None  # BT-86


@dataclass(frozen=True)
class InvoiceDocument:
    number: str
    type: DocumentType
    issue_date: date
    due_date: date | None  # None: nothing to pay (a credit note, a paid prepayment invoice)
    period_start: date
    period_end: date  # last day included
    currency: str
    seller: Party
    buyer: Party
    lines: tuple[InvoiceLine, ...]
    notes: tuple[tuple[str, str], ...] = ()  # (UNTDID 4451 subject code, text)
    buyer_reference: str | None = None
    preceding_number: str | None = None  # the invoice a credit note corrects
    preceding_issue_date: date | None = None
    paid_minor: int = 0  # paid in advance (BT-113, VAT included), deducted from the amount due
    # The VAT inside ``paid_minor`` that prepayment invoices already charged: the ledger
    # books only ``tax_minor - prepaid_vat_minor`` of this document's VAT.
    prepaid_vat_minor: int = 0
    prepayment_numbers: tuple[str, ...] = ()  # the prepayment invoices deducted
    payment: PaymentInstructions | None = None
    reason: str | None = None  # a credit note's reason (required for credit notes)
    # Provisioned (unified) invoices: the period the credit provision is for; the
    # document's own period is the one whose consumption is regularized.
    provision_start: date | None = None
    provision_end: date | None = None  # last day included
    carried_minor: int = 0  # of ``net_minor``: periods below the minimum, carried here

    def vat_breakdown(self) -> list[VatBreakdown]:
        return breakdown(
            VatLine(line.vat.category, line.vat.rate_percent, line.net_minor) for line in self.lines
        )

    @property
    def net_minor(self) -> int:
        return sum(line.net_minor for line in self.lines)

    @property
    def tax_minor(self) -> int:
        return sum(entry.tax_minor for entry in self.vat_breakdown())

    @property
    def gross_minor(self) -> int:
        return self.net_minor + self.tax_minor

    @property
    def due_minor(self) -> int:
        return self.gross_minor - self.paid_minor


def with_number(document: InvoiceDocument, number: str) -> InvoiceDocument:
    """The document under its assigned number (a draft's reference is its draft number)."""
    payment = document.payment
    if payment is not None and payment.reference == document.number:
        payment = replace(payment, reference=number)
    return replace(document, number=number, payment=payment)


def _texts(document: InvoiceDocument) -> list[tuple[str, str]]:
    texts = []
    for role, party in (("seller", document.seller), ("buyer", document.buyer)):
        texts += [(f"{role} name", party.name)]
        texts += [(f"{role} address", line) for line in party.address]
    texts += [(f"line {line.line_id}", line.description) for line in document.lines]
    texts += [(f"note {code}", text) for code, text in document.notes]
    texts += [(f"line {line.line_id} section", line.section or "") for line in document.lines]
    texts += [("reason", document.reason or "")]
    return texts


def _structure_problem(document: InvoiceDocument) -> str | None:
    """What would make the document an invalid EN16931 e-invoice, named by its rule."""
    payable = document.type is not DocumentType.CREDIT_NOTE
    if payable and document.due_minor > 0 and document.due_date is None:
        return "an amount to pay needs a due date (BR-CO-25)"
    if not payable and not (document.preceding_number and document.preceding_issue_date):
        return "a credit note names the invoice it corrects and its date (BR-FR-CO-05)"
    categories = {line.vat.category for line in document.lines}
    if VatCategory.OUTSIDE_SCOPE in categories and len(categories) > 1:
        return "a document not subject to VAT has no other VAT category (BR-O-11)"
    if VatCategory.OUTSIDE_SCOPE in categories and not document.seller.siren:
        return (
            "a document not subject to VAT leaves the seller's VAT number out (BR-O-02), so "
            "the seller needs its SIREN to be identified (BR-CO-26): set [seller] siren"
        )
    return None


def check_renderable(document: InvoiceDocument) -> None:
    """Refuse, before a number is spent on it, a document its renderers could not write."""
    problem = _structure_problem(document)
    if problem is not None:
        raise DocumentError(f"{document.buyer_reference}: {problem}")
    for where, text in _texts(document):
        found = REFUSED_CHARACTERS.search(text)
        if found:
            raise DocumentError(
                f"{document.buyer_reference}: {where} holds U+{ord(found.group()):04X}, which "
                f"an XML 1.0 invoice and its PDF cannot carry: {text[:80]!r}"
            )


_SNAPSHOT = TypeAdapter(InvoiceDocument)


def document_json(document: InvoiceDocument) -> bytes:
    """The issued document as data: connectors push exactly what was issued, not a re-derivation."""
    return _SNAPSHOT.dump_json(document, indent=1)


def load_document(path: Path) -> InvoiceDocument:
    try:
        return _SNAPSHOT.validate_json(path.read_bytes())
    except (OSError, ValidationError) as error:
        raise DocumentError(f"{path}: not a readable document snapshot: {error}") from error

"""An invoice as a pure function of what is due, its rated detail, the catalog, seller and terms.

Like Kill Bill's invoice generator: no files, no database, no clock — the same inputs give
the same document, so it is tested directly, and issuing, previewing and correcting all
derive through it.

- postpaid and prepaid: the period's consumption. Granted credit drawn is a price
  reduction (a negative line: VAT is charged on what the customer pays for, art. 79 of
  the VAT Directive); purchased credit drawn is a payment on account, deducted as paid in
  advance (BT-113) — with the VAT its prepayment invoice already charged, which this
  invoice states but the ledger does not book twice. Issuance moves the unbilled part to
  the receivable with the VAT.
- provisioned (the unified invoice): a credit provision for the coming period equal to
  the period's consumption, itemized by family, plus the regularization of
  over-consumption. Issuance credits both to the credits account.
- periods carried forward (below the minimum amount) are billed on the next invoice,
  each line saying the period it comes from.

The document must move exactly what the ledger holds (lines net − purchased credits −
discounts = what issuance moves), or derivation fails.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from decimal import Decimal
from typing import NamedTuple

from beanbill.ledger.entries import minor_digits
from beanbill.ledger.invoicing import InvoicingError
from beanbill.ledger.invoicing.coupons import coupon_lines
from beanbill.ledger.invoicing.documents import (
    DocumentType,
    InvoiceDocument,
    InvoiceLine,
    Party,
    PaymentInstructions,
)
from beanbill.ledger.invoicing.due import Consumption, DueInvoice
from beanbill.ledger.invoicing.lines import DEFAULT_UNIT_CODE, detail_lines
from beanbill.ledger.invoicing.vat import VatTreatment, treatment
from beanbill.rating.config import BillingMode, Catalog, Customer, InvoicingSettings, Seller
from beanbill.rating.periods import Period, period_of
from beanbill.rating.rated_store import RatedGroup

# UNTDID 4451 subject codes of the payment-terms notes every invoice carries.
LATE_PENALTY_NOTE = "PMD"
RECOVERY_INDEMNITY_NOTE = "PMT"
EARLY_PAYMENT_NOTE = "AAB"


class InvoiceTerms(NamedTuple):
    """What the issuer decides: the number, the date, the currency and the invoicing settings."""

    number: str
    issue_date: date
    currency: str
    invoicing: InvoicingSettings


@dataclass(frozen=True)
class Derived:
    """An invoice document and what issuing it moves in the ledger."""

    document: InvoiceDocument
    unbilled_minor: tuple[tuple[str, int], ...]  # per org, leaves the unbilled account
    credits_minor: tuple[tuple[str, int], ...]  # per org, to the credits account (provisioned)
    discount_minor: int = 0  # coupons: to the discounts account (contra revenue)
    granted_minor: int = 0  # granted credit used: from promotions to discounts (a reduction)


@dataclass
class _Moves:
    lines: list[InvoiceLine] = field(default_factory=list)
    unbilled: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    credits: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    paid_net_minor: int = 0  # purchased credit drawn, excluding VAT
    prepaid_vat_minor: int = 0  # the VAT of it that prepayment invoices charged
    prepayment_numbers: set[str] = field(default_factory=set)
    discount_minor: int = 0
    granted_minor: int = 0
    carried_minor: int = 0

    def add(self, line: InvoiceLine) -> None:
        self.lines.append(replace(line, line_id=str(len(self.lines) + 1)))


def party(customer: Customer) -> Party:
    return Party(
        customer.name,
        tuple(customer.address),
        customer.country,
        customer.vat_id,
        customer.siren,
        customer.email,
    )


def seller_party(seller: Seller) -> Party:
    return Party(
        seller.legal_name,
        tuple(seller.address),
        seller.country,
        seller.vat_id,
        seller.siren,
        seller.email,
    )


def seller_legal_line(seller: Seller) -> str:
    parts = [
        seller.legal_form,
        f"capital {seller.share_capital}" if seller.share_capital else None,
        seller.registration,
    ]
    return " - ".join(part for part in parts if part)


def _one(
    label: str, amount_minor: int, digits: int, vat: VatTreatment, family: str | None = None
) -> InvoiceLine:
    """A line of quantity 1 for a whole amount (a provision, a regularization)."""
    price = Decimal(amount_minor).scaleb(-digits)
    return InvoiceLine(
        "0",
        label,
        Decimal(1),
        DEFAULT_UNIT_CODE,
        price,
        Decimal(1),
        amount_minor,
        vat,
        family=family,
    )


def provision_period(due: DueInvoice) -> Period:
    """The period a unified invoice's credit provision is for: the one after its own."""
    return period_of(due.customer.billing_period, due.period_end)


def _span(first: date, last: date) -> str:
    """Days as people say them: "October 2026" for a whole month, else the dates."""
    if first.day == 1 and (last + timedelta(days=1)).day == 1 and first.month == last.month:
        return f"{first:%B %Y}"
    return first.isoformat() if first == last else f"{first.isoformat()} – {last.isoformat()}"


def _provisioned(due: DueInvoice, digits: int, vat: VatTreatment) -> _Moves:
    """The unified invoice: next period's provision by family, then over-consumption."""
    moves = _Moves()
    provision: dict[str, int] = defaultdict(int)
    over = 0
    for consumption in due.consumptions:
        for family, amount in consumption.income_by_family().items():
            provision[family] += amount
            moves.credits[consumption.org] += amount
        over += consumption.over_consumption()
        in_unbilled = consumption.over_consumption_unbilled()
        if in_unbilled:
            moves.unbilled[consumption.org] += in_unbilled
        moves.credits[consumption.org] += consumption.over_consumption() - in_unbilled
    coming = provision_period(due)
    coming_span = _span(coming.start, coming.end - timedelta(days=1))
    consumed_span = _span(due.period_start, due.period_end - timedelta(days=1))
    for family, amount in sorted(provision.items()):
        label = f"Credit provision for {coming_span}: {family} (as consumed in {consumed_span})"
        moves.add(_one(label, amount, digits, vat, family))
    if over:
        label = f"Regularization of over-consumption in {consumed_span}"
        moves.add(_one(label, over, digits, vat))
    return moves


def _reduction(label: str, amount_minor: int, digits: int, vat: VatTreatment) -> InvoiceLine:
    """A negative line (a price reduction). BR-27: a net price is never negative, so the
    quantity is -1."""
    price = Decimal(amount_minor).scaleb(-digits)
    line = InvoiceLine(
        "0", label, Decimal(-1), DEFAULT_UNIT_CODE, price, Decimal(1), -amount_minor, vat
    )
    return shown_as_reduction(line)


def shown_as_reduction(line: InvoiceLine) -> InvoiceLine:
    """A reduction reads "1 × −25.00 €" on the PDF (the e-invoice keeps −1 × 25.00)."""
    return replace(line, shown_quantity=Decimal(1), shown_unit="", shown_price=-line.unit_price)


def _apply_draws(
    moves: _Moves, consumption: Consumption, digits: int, vat: VatTreatment, section: str | None
) -> None:
    """Granted credit as a reduction line; purchased credit as paid in advance."""
    for draw in consumption.draws:
        if draw.kind == "grant":
            label = f"Promotional credit, a price reduction (ref. {draw.lot_id})"
            moves.add(replace(_reduction(label, draw.amount_minor, digits, vat), section=section))
            moves.granted_minor += draw.amount_minor
            continue
        moves.paid_net_minor += draw.amount_minor
        moves.prepaid_vat_minor += draw.vat_minor
        if draw.prepayment_number:
            moves.prepayment_numbers.add(draw.prepayment_number)


def _days_of(consumption: Consumption) -> str:
    """Which days a posting covers, when not its whole period: `` (2026-11-01)`` posted
    daily, `` (2026-10-26 – 2026-10-31)`` for a week's part in one month."""
    first, last = consumption.days
    if last is None:
        return ""
    if first == last:
        return f" ({last.isoformat()})"
    return f" ({(first or consumption.period_start).isoformat()} – {last.isoformat()})"


def _consumed(
    due: DueInvoice,
    rated: Mapping[str, Sequence[RatedGroup]],
    catalog: Catalog,
    digits: int,
    vat: VatTreatment,
) -> _Moves:
    """Postpaid and prepaid: one line per rated group, credits drawn, then coupons."""
    moves = _Moves()
    families: list[str] = []
    for consumption in due.consumptions:
        groups = rated.get(consumption.txn_id)
        if groups is None:
            raise InvoicingError(f"{consumption.txn_id}: no rated detail was given for it")
        section = due.name_of(consumption.org) if due.central else None
        carried = consumption.period != due.period
        for detail in detail_lines(consumption, groups, catalog, digits):
            label = detail.description + _days_of(consumption)
            if carried:
                label += f" - carried from {consumption.period}"
                moves.carried_minor += detail.net_minor
            families.append(detail.family)
            moves.add(
                InvoiceLine(
                    "0",
                    label,
                    detail.quantity,
                    detail.unit_code,
                    detail.unit_price,
                    detail.base_quantity,
                    detail.net_minor,
                    vat,
                    detail.shown_quantity,
                    detail.shown_unit,
                    detail.shown_price,
                    section,
                    detail.family,
                )
            )
        _apply_draws(moves, consumption, digits, vat, section)
        moves.unbilled[consumption.org] += consumption.unbilled()
    unbilled = sum(moves.unbilled.values())
    priced = [line for line in moves.lines if line.quantity >= 0]  # not the reductions
    for line in coupon_lines(due, priced, families, unbilled, digits):
        moves.add(shown_as_reduction(replace(line, vat=vat)))
        moves.discount_minor -= line.net_minor
    return moves


def payment_instructions(seller: Seller, number: str) -> PaymentInstructions:
    """Pay by transfer quoting the document number (BT-83)."""
    return PaymentInstructions(reference=number, iban=seller.iban, bic=seller.bic)


def buyer_vat(seller: Seller, customer: Customer, invoicing: InvoicingSettings) -> VatTreatment:
    """The VAT a document for ``customer`` charges: one treatment per document."""
    return treatment(
        seller.country,
        customer.country,
        customer.vat_id,
        invoicing.vat_rate_percent,
        oss=invoicing.oss,
        oss_rates=invoicing.oss_rates,
    )


def derive(
    due: DueInvoice,
    rated: Mapping[str, Sequence[RatedGroup]],
    catalog: Catalog,
    seller: Seller,
    terms: InvoiceTerms,
) -> Derived:
    """The invoice for ``due``; ``rated`` holds each consumption's detail by its txn-id."""
    digits = minor_digits(terms.currency)
    customer = due.customer
    invoicing = terms.invoicing
    vat = buyer_vat(seller, customer, invoicing)
    provisioned = customer.billing_mode is BillingMode.PROVISIONED
    if provisioned:
        moves = _provisioned(due, digits, vat)
        coming = provision_period(due)
    else:
        moves = _consumed(due, rated, catalog, digits, vat)
    document = InvoiceDocument(
        number=terms.number,
        type=DocumentType.INVOICE,
        issue_date=terms.issue_date,
        due_date=terms.issue_date + timedelta(days=invoicing.payment_days),
        period_start=due.period_start,
        period_end=due.period_end - timedelta(days=1),
        currency=terms.currency,
        seller=seller_party(seller),
        buyer=party(customer),
        lines=tuple(moves.lines),
        notes=invoice_notes(invoicing),
        buyer_reference=customer.id,
        paid_minor=moves.paid_net_minor + moves.prepaid_vat_minor,
        prepaid_vat_minor=moves.prepaid_vat_minor,
        prepayment_numbers=tuple(sorted(moves.prepayment_numbers)),
        payment=payment_instructions(seller, terms.number),
        provision_start=coming.start if provisioned else None,
        provision_end=coming.end - timedelta(days=1) if provisioned else None,
        carried_minor=moves.carried_minor,
    )
    moved = sum(moves.unbilled.values()) + sum(moves.credits.values())
    if document.net_minor - moves.paid_net_minor + moves.discount_minor != moved:
        raise InvoicingError(
            f"{due.key}: lines net {document.net_minor} - credits {moves.paid_net_minor} "
            f"!= ledger {moved}"
        )
    return Derived(
        document,
        tuple(sorted(moves.unbilled.items())),
        tuple(sorted(moves.credits.items())),
        moves.discount_minor,
        moves.granted_minor,
    )


def invoice_notes(invoicing: InvoicingSettings) -> tuple[tuple[str, str], ...]:
    """The payment-terms notes every invoice carries (UNTDID 4451 subject codes)."""
    return (
        (LATE_PENALTY_NOTE, invoicing.late_penalty_note),
        (RECOVERY_INDEMNITY_NOTE, invoicing.recovery_indemnity_note),
        (EARLY_PAYMENT_NOTE, invoicing.early_payment_note),
    )

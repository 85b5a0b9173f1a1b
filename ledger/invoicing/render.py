"""Invoice documents for people: one Jinja2 template → HTML, and PDF/A-3b with Factur-X.

What the e-invoice says in codes (HUR, C62, category AE), the page says in words a
customer reads without the catalog: ``232.8767 h × 0.025 €/h``, "Reverse charge", "Paid
in advance (prepayment invoice INV-…)". Numbers and currency symbols come from Babel
(locale en); prices keep every digit they have and amounts are exact minor units, never
floats. This module computes the text; the template only lays it out.

The template autoescapes everything, so customer-supplied names cannot inject markup.
The PDF is written by WeasyPrint as PDF/A-3b; the CII XML is embedded with factur-x
(relationship "Data", Factur-X XMP), not with WeasyPrint's own attachments.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from functools import cache

import facturx
import jinja2
import weasyprint
from babel.numbers import format_currency, format_decimal, get_currency_symbol

from beanbill.ledger.entries import minor_digits
from beanbill.ledger.invoicing.documents import DocumentType, InvoiceDocument, InvoiceLine
from beanbill.ledger.invoicing.einvoice import cii_xml
from beanbill.ledger.invoicing.vat import VatBreakdown, VatCategory

LOCALE = "en"
MINUS = "\u2212"  # a real minus sign: "−€10.00" reads as a deduction, not a dash
# UN/ECE recommendation 20 codes as people write them; "one" (C62) is no unit at all.
UNIT_NAMES = {
    "SEC": "s",
    "MIN": "min",
    "HUR": "h",
    "DAY": "day",
    "WEE": "week",
    "MON": "month",
    "ANN": "year",
    "AD": "byte",
    "2P": "kB",
    "4L": "MB",
    "E34": "GB",
    "E35": "TB",
    "KWH": "kWh",
    "C62": "",
    "H87": "",
    "EA": "",
}
TITLES = {
    DocumentType.INVOICE: "Invoice",
    DocumentType.CREDIT_NOTE: "Credit note",
    DocumentType.PREPAYMENT_INVOICE: "Prepayment invoice",
}
CATEGORY_NAMES = {
    VatCategory.REVERSE_CHARGE: "Reverse charge",
    VatCategory.OUTSIDE_SCOPE: "Not subject to VAT",
    VatCategory.EXPORT: "Exempt from VAT (export)",
}
UNSECTIONED = "Other charges"  # a central invoice's lines of no team
TAIL_LINES = 3  # lines kept on the page of the totals


@dataclass(frozen=True)
class LineView:
    """A row of the lines table: an invoice line, or a team's heading or subtotal."""

    line_id: str
    description: str  # a heading's or subtotal's text
    quantity: str  # "232.8767 h"
    price: str  # "× 0.025 €/h"
    vat: str  # "20 %"
    amount: str  # "€5.82"
    kind: str = "line"  # "line", "section" (a heading), "subtotal"


@dataclass(frozen=True)
class SectionView:
    """A team's lines on a central invoice (``name`` None: an invoice without sections)."""

    name: str | None
    lines: tuple[LineView, ...]
    subtotal: str


@dataclass(frozen=True)
class TotalRow:
    label: str
    amount: str
    kind: str = ""  # CSS class: "grand", "deduction", "detail" (one cell: an aside)


@dataclass(frozen=True)
class PaymentView:
    """The payment block: how to pay what is owed, or only the reference; the contact."""

    owed: bool  # something is to be paid: say how
    reference: str  # "" without payment instructions (the contact only)
    iban: str  # in groups of four, "" without one
    bic: str
    amount: str  # "€14.89 by 2026-12-01"
    contact: str  # the seller's e-mail, "" without one


@cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("beanbill.ledger.invoicing", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


# --- numbers --------------------------------------------------------------------------------


def money(amount_minor: int, currency: str) -> str:
    """An amount in minor units with its symbol: ``€1,234.50``, ``−€10.00``, ``¥1,234``."""
    value = Decimal(abs(amount_minor)).scaleb(-minor_digits(currency))
    text = format_currency(value, currency, locale=LOCALE)
    return MINUS + text if amount_minor < 0 else text


def quantity_text(value: Decimal) -> str:
    """Every digit the quantity has, grouped: ``1,480.9044``; ``1E+2`` → ``100``."""
    return str(format_decimal(value, locale=LOCALE, decimal_quantization=False))


def price_text(value: Decimal, currency: str) -> str:
    """A unit price with all its digits, and at least the currency's: ``0.025``, ``9.90``."""
    digits = minor_digits(currency)
    pattern = "#,##0" + ("." + "0" * digits if digits else "")
    text = format_decimal(abs(value), format=pattern, locale=LOCALE, decimal_quantization=False)
    return MINUS + text if value < 0 else str(text)


def percent_text(value: Decimal) -> str:
    return f"{quantity_text(value)} %"


def unit_name(code: str) -> str:
    return UNIT_NAMES.get(code, code)


def _with_unit(number: str, unit: str) -> str:
    return f"{number} {unit}" if unit else number


def line_view(line: InvoiceLine, currency: str) -> LineView:
    """What people read of a line: in the catalog's unit when the document says it (the
    ``shown_*`` fields), else the e-invoice's quantity and price with unit names."""
    symbol = get_currency_symbol(currency, LOCALE)
    if line.shown_quantity is not None and line.shown_price is not None:
        unit = line.shown_unit or ""
        quantity = _with_unit(quantity_text(line.shown_quantity), unit)
        per = f"/{unit}" if unit else ""
        price = f"× {price_text(line.shown_price, currency)} {symbol}{per}"
    else:
        unit = unit_name(line.unit_code)
        quantity = _with_unit(quantity_text(line.quantity), unit)
        amount = f"{price_text(line.unit_price, currency)} {symbol}"
        if line.base_quantity != 1:  # as the e-invoice says it: 2.499984 € per 100 h
            price = f"× {amount} per {_with_unit(quantity_text(line.base_quantity), unit)}"
        else:
            price = f"× {amount}/{unit}" if unit else f"× {amount}"
    return LineView(
        line.line_id,
        line.description,
        quantity,
        price,
        percent_text(line.vat.rate_percent),
        money(line.net_minor, currency),
    )


def sections(invoice: InvoiceDocument) -> list[SectionView]:
    """The lines by team (in the order teams first appear), or one unnamed section."""
    grouped: dict[str | None, list[InvoiceLine]] = {}
    for line in invoice.lines:
        grouped.setdefault(line.section, []).append(line)
    result = []
    for name, lines in grouped.items():
        heading = name if name is not None or len(grouped) == 1 else UNSECTIONED
        result.append(
            SectionView(
                heading,
                tuple(line_view(line, invoice.currency) for line in lines),
                money(sum(line.net_minor for line in lines), invoice.currency),
            )
        )
    return result


def table_rows(invoice: InvoiceDocument) -> tuple[list[LineView], list[LineView]]:
    """The lines table's rows, split before its last ``TAIL_LINES`` lines: the page
    breaks before that tail rather than leave the totals with one line (or none)."""
    rows: list[LineView] = []
    tail_start = 0
    for section in sections(invoice):
        if section.name is not None:
            rows.append(LineView("", section.name, "", "", "", "", "section"))
        tail_start = len(rows) + max(len(section.lines) - TAIL_LINES, 0)
        if tail_start == len(rows) and section.name is not None:
            tail_start -= 1  # a short team keeps its heading
        rows += section.lines
        if section.name is not None:
            subtotal = f"Subtotal {section.name} (excl. VAT)"
            rows.append(LineView("", subtotal, "", "", "", section.subtotal, "subtotal"))
    return rows[:tail_start], rows[tail_start:]


# --- words ----------------------------------------------------------------------------------


def period_text(start: date, end: date) -> str:
    """``October 2026`` for a whole calendar month, else ``2026-10-01 – 2026-10-14``."""
    last_day = calendar.monthrange(start.year, start.month)[1]
    if start.day == 1 and (end.year, end.month, end.day) == (start.year, start.month, last_day):
        return f"{calendar.month_name[start.month]} {start.year}"
    if start == end:
        return start.isoformat()
    return f"{start.isoformat()} – {end.isoformat()}"


def vat_label(entry: VatBreakdown, invoice: InvoiceDocument) -> str:
    """ "VAT 20 %" ("VAT 21 % (BE)" when another country's, under OSS), "Reverse charge"…"""
    if entry.category is not VatCategory.STANDARD:
        return CATEGORY_NAMES.get(entry.category, f"VAT category {entry.category.value}")
    label = f"VAT {percent_text(entry.rate_percent)}"
    countries = {
        line.vat.country
        for line in invoice.lines
        if (line.vat.category, line.vat.rate_percent) == (entry.category, entry.rate_percent)
    }
    if len(countries) == 1 and "" not in countries and countries != {invoice.seller.country}:
        label += f" ({countries.pop()})"
    return label


def _listed(numbers: Iterable[str]) -> str:
    return ", ".join(numbers)


def total_rows(invoice: InvoiceDocument) -> list[TotalRow]:
    currency = invoice.currency
    rows = [TotalRow("Total excl. VAT", money(invoice.net_minor, currency))]
    entries = invoice.vat_breakdown()
    for entry in entries:
        label = vat_label(entry, invoice)
        if len(entries) > 1:
            label += f" on {money(entry.base_minor, currency)}"
        rows.append(TotalRow(label, money(entry.tax_minor, currency)))
    rows.append(TotalRow("Total incl. VAT", money(invoice.gross_minor, currency)))
    if invoice.paid_minor:
        numbers = invoice.prepayment_numbers
        if numbers:
            plural = "s" if len(numbers) > 1 else ""
            label = f"Paid in advance (prepayment invoice{plural} {_listed(numbers)})"
        elif invoice.type is DocumentType.PREPAYMENT_INVOICE:
            label = "Paid"
        else:
            label = "Prepaid credits applied"
        rows.append(TotalRow(label, money(-invoice.paid_minor, currency), "deduction"))
        if invoice.prepaid_vat_minor:
            already = money(invoice.prepaid_vat_minor, currency)
            rows.append(TotalRow(f"of which VAT already invoiced: {already}", "", "detail"))
    credit = invoice.type is DocumentType.CREDIT_NOTE
    label = "Total credited" if credit else "Total to pay"
    rows.append(TotalRow(label, money(invoice.due_minor, currency), "grand"))
    return rows


def _nothing_to_pay(invoice: InvoiceDocument) -> bool:
    return invoice.type is not DocumentType.CREDIT_NOTE and invoice.due_minor <= 0


def header_lines(invoice: InvoiceDocument) -> list[str]:
    """Below the title and number: dates, what is corrected, the periods."""
    lines = [f"Issued {invoice.issue_date.isoformat()}"]
    if invoice.type is DocumentType.CREDIT_NOTE:
        if invoice.preceding_number:
            corrects = f"Corrects invoice {invoice.preceding_number}"
            if invoice.preceding_issue_date:
                corrects += f" of {invoice.preceding_issue_date.isoformat()}"
            lines.append(corrects)
    elif _nothing_to_pay(invoice):
        lines.append("Paid — nothing to pay" if invoice.paid_minor else "Nothing to pay")
    elif invoice.due_date is not None:
        lines.append(f"Due {invoice.due_date.isoformat()}")
    service = period_text(invoice.period_start, invoice.period_end)
    if invoice.type is DocumentType.PREPAYMENT_INVOICE:
        return lines  # a payment on account: the credits it buys serve no period yet
    if invoice.provision_start is not None:
        provision_end = invoice.provision_end or invoice.provision_start
        lines.append(f"Credit provision for {period_text(invoice.provision_start, provision_end)}")
        lines.append(f"Service period (regularized) {service}")
    else:
        lines.append(f"Service period {service}")
    return lines


def notices(invoice: InvoiceDocument) -> list[str]:
    """The VAT exemption mentions (legally required), then the carried minimum note."""
    mentions = sorted(
        {line.vat.exemption_reason for line in invoice.lines if line.vat.exemption_reason}
    )
    if invoice.carried_minor:
        carried = money(invoice.carried_minor, invoice.currency)
        mentions.append(
            f"Includes {carried} carried from earlier periods below the minimum invoice amount"
        )
    return mentions


def group_iban(iban: str) -> str:
    """The paper form of an IBAN (ISO 13616): groups of four, ``FR76 3000 6000 …``."""
    compact = "".join(iban.split()).upper()
    return " ".join(compact[i : i + 4] for i in range(0, len(compact), 4))


def payment_view(invoice: InvoiceDocument) -> PaymentView | None:
    payment = invoice.payment
    contact = invoice.seller.email or ""
    if payment is None:
        return PaymentView(False, "", "", "", "", contact) if contact else None
    owed = invoice.type is not DocumentType.CREDIT_NOTE and invoice.due_minor > 0
    amount = money(invoice.due_minor, invoice.currency) if owed else ""
    if owed and invoice.due_date is not None:
        amount += f" by {invoice.due_date.isoformat()}"
    iban = group_iban(payment.iban) if payment.iban else ""
    return PaymentView(owed, payment.reference, iban, payment.bic or "", amount, contact)


# --- documents ------------------------------------------------------------------------------


def invoice_html(invoice: InvoiceDocument, seller_legal: str = "") -> str:
    return (
        _environment()
        .get_template("invoice.html.j2")
        .render(
            invoice=invoice,
            title=TITLES[invoice.type],
            seller_legal=seller_legal,
            header_lines=header_lines(invoice),
            rows=table_rows(invoice),
            totals=total_rows(invoice),
            notices=notices(invoice),
            payment=payment_view(invoice),
        )
    )


def invoice_pdf(invoice: InvoiceDocument, seller_legal: str = "") -> bytes:
    """PDF/A-3b with the invoice's Factur-X (EN16931) XML embedded."""
    pdf = weasyprint.HTML(string=invoice_html(invoice, seller_legal)).write_pdf(
        pdf_variant="pdf/a-3b"
    )
    return bytes(
        facturx.generate_from_binary(
            pdf, cii_xml(invoice), flavor="factur-x", level="en16931", check_xsd=True
        )
    )

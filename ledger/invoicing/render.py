"""Invoice documents for people: one Jinja2 template → HTML, and PDF/A-3b with Factur-X.

The template autoescapes everything, so customer-supplied names cannot inject markup.
The PDF is written by WeasyPrint as PDF/A-3b; the CII XML is embedded with factur-x
(relationship "Data", Factur-X XMP), not with WeasyPrint's own attachments.
"""

from __future__ import annotations

from decimal import Decimal
from functools import cache

import facturx
import jinja2
import weasyprint

from beanbill.ledger.entries import format_minor
from beanbill.ledger.invoicing.documents import DocumentType, InvoiceDocument
from beanbill.ledger.invoicing.einvoice import cii_xml

UNIT_NAMES = {"HUR": "h", "C62": "unit", "E34": "GB", "SEC": "s", "MON": "month"}
TITLES = {DocumentType.INVOICE: "Invoice", DocumentType.CREDIT_NOTE: "Credit note"}


@cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("beanbill.ledger.invoicing", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )


def invoice_html(invoice: InvoiceDocument, seller_legal: str = "") -> str:
    def money(minor: int) -> str:
        amount = Decimal(format_minor(minor, invoice.currency))
        return f"{amount:,}".replace(",", " ")

    exemptions = sorted(
        {line.vat.exemption_reason for line in invoice.lines if line.vat.exemption_reason}
    )
    return (
        _environment()
        .get_template("invoice.html.j2")
        .render(
            invoice=invoice,
            title=TITLES[invoice.type],
            seller_legal=seller_legal,
            exemptions=exemptions,
            money=money,
            quantity=lambda value: format(value.normalize(), "f"),
            price=lambda value: format(value, "f"),
            percent=lambda value: format(value.normalize(), "f"),
            unit=lambda code: UNIT_NAMES.get(code, code),
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

"""Invoice HTML and PDF/A-3 with embedded Factur-X: readable, escaped, extractable, valid.

The sample documents below are the ones a person looks at (``python -m
tests.test_render /tmp/look`` writes them as PDF); the tests read the PDFs back as text
with pdftotext, the way a customer or an accountant would read them.
"""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import sys
from dataclasses import replace
from datetime import date
from decimal import Decimal
from functools import cache
from html import unescape
from pathlib import Path

import facturx
import pypdf
import pytest

from beanbill.ledger.invoicing.documents import (
    DocumentType,
    InvoiceDocument,
    InvoiceLine,
    PaymentInstructions,
)
from beanbill.ledger.invoicing.render import (
    invoice_html,
    invoice_pdf,
    line_view,
    money,
    period_text,
    price_text,
    quantity_text,
    table_rows,
    total_rows,
)
from beanbill.ledger.invoicing.vat import VatCategory, VatTreatment, treatment
from tests.einvoice_validation import validate_cii
from tests.support import FRENCH_BUYER, GERMAN_BUYER, US_BUYER, invoice

IBAN = "FR7630006000011234567890189"
LEGAL = "SAS au capital de 100 000 EUR - RCS Paris 732 829 320"

# --- sample documents ---------------------------------------------------------------------


def _line(
    line_id: int,
    description: str,
    shown: tuple[str, str, str] | None,
    net_minor: int,
    vat: VatTreatment,
    section: str | None = None,
) -> InvoiceLine:
    """A line whose e-invoice fields are its shown ones (hours: HUR, else one C62)."""
    if shown is None:
        return InvoiceLine(
            str(line_id), description, Decimal(1), "C62", Decimal(net_minor).scaleb(-2),
            Decimal(1), net_minor, vat, section=section,
        )  # fmt: skip
    quantity, unit, price = Decimal(shown[0]), shown[1], Decimal(shown[2])
    code = "HUR" if unit == "h" else "E34" if unit == "GB" else "C62"
    return InvoiceLine(
        str(line_id), description, quantity, code, price, Decimal(1), net_minor, vat,
        shown_quantity=quantity, shown_unit=unit, shown_price=price, section=section,
    )  # fmt: skip


def _usage_lines(
    vat: VatTreatment, orgs: list[str], start: int = 1, section_of: dict[str, str] | None = None
) -> list[InvoiceLine]:
    lines = []
    for org in orgs:
        section = (section_of or {}).get(org)
        for app in range(1, 6):
            hours = Decimal("232.8767") + 24 * app
            net = int((hours * 2 * Decimal("0.025") * 100).to_integral_value())
            lines.append((f"vCPU · {org}/app-{app}", (str(hours * 2), "h", "0.025"), net, section))
        lines += [
            (f"Memory · {org}/app-1", ("1862.0136", "GB-h", "0.0035"), 652, section),
            (f"Block storage · {org}/vol-1", ("250", "GB-month", "0.04"), 1000, section),
            (f"Egress · {org}/lb", ("150.5", "GB", "0.01"), 151, section),
            (f"Egress · {org}/lb (free allowance)", ("100", "GB", "0"), 0, section),
            (f"API requests · {org}/gateway", ("12.345678", "M requests", "0.40"), 494, section),
        ]
    return [
        _line(start + i, description, shown, net, vat, section)
        for i, (description, shown, net, section) in enumerate(lines)
    ]


def monthly_invoice() -> InvoiceDocument:
    """Many lines, prepaid credits, a coupon, an amount carried from below the minimum."""
    vat = treatment("FR", "FR", None)
    lines = _usage_lines(vat, ["org-0002", "org-0003", "org-0004"])
    lines += [
        _line(len(lines) + 1, "Backup Plus, October 2026", ("1", "month", "9.90"), 990, vat),
        _line(len(lines) + 2, "Migration service", None, 4900, vat),
        _line(len(lines) + 3, "Coupon WELCOME10: 10 % off vCPU", None, -1234, vat),
    ]
    base = invoice(FRENCH_BUYER)
    return replace(
        base,
        number="INV-2026-000042",
        lines=tuple(lines),
        paid_minor=2500,
        carried_minor=731,
        payment=PaymentInstructions("INV-2026-000042", IBAN, "AGRIFRPP"),
    )


def central_invoice() -> InvoiceDocument:
    """A parent organization billed for two teams, each its section and subtotal."""
    vat = treatment("FR", "FR", None)
    teams = {"org-0010": "Data Platform team", "org-0011": "Mobile & Web team"}
    lines = _usage_lines(vat, list(teams), section_of=teams)
    return replace(
        invoice(FRENCH_BUYER),
        number="INV-2026-000043",
        buyer=replace(FRENCH_BUYER, name="Acme Group SAS"),
        lines=tuple(lines),
        buyer_reference="org-0001",
        payment=PaymentInstructions("INV-2026-000043", IBAN, "AGRIFRPP"),
    )


def credit_note() -> InvoiceDocument:
    base = invoice(FRENCH_BUYER)
    return replace(
        base,
        number="INV-2026-000044",
        type=DocumentType.CREDIT_NOTE,
        due_date=None,
        preceding_number="INV-2026-000001",
        preceding_issue_date=date(2026, 11, 1),
        reason="Egress of 2026-10-05 billed twice (incident #4411); this credits it in full.",
        lines=(_line(1, "Egress · org-0001/lb", ("250.5", "GB", "0.01"), 251, base.lines[0].vat),),
        payment=PaymentInstructions("INV-2026-000044", IBAN, "AGRIFRPP"),
    )


def prepayment_invoice() -> InvoiceDocument:
    """A credit purchase paid by card: VAT due on receipt, nothing left to pay."""
    vat = treatment("FR", "FR", None)
    line = _line(1, "Prepaid credits, usable from 2026-11-15", None, 50000, vat)
    document = replace(
        invoice(FRENCH_BUYER),
        number="INV-2026-000045",
        type=DocumentType.PREPAYMENT_INVOICE,
        issue_date=date(2026, 11, 15),
        due_date=None,
        period_start=date(2026, 11, 15),
        period_end=date(2026, 11, 15),
        lines=(line,),
        payment=PaymentInstructions("INV-2026-000045", IBAN, "AGRIFRPP"),
    )
    return replace(document, paid_minor=document.gross_minor)


def reverse_charge_invoice() -> InvoiceDocument:
    """Provisioned, to a German business, deducting two prepayment invoices."""
    vat = treatment("FR", "DE", GERMAN_BUYER.vat_id)
    return replace(
        invoice(GERMAN_BUYER),
        number="INV-2026-000046",
        lines=(
            _line(1, "Credit provision for November 2026: Compute", None, 30000, vat),
            _line(2, "Credit provision for November 2026: Network", None, 4500, vat),
            _line(3, "Regularization of over-consumption in October 2026", None, 1289, vat),
        ),
        provision_start=date(2026, 11, 1),
        provision_end=date(2026, 11, 30),
        paid_minor=10000,
        prepayment_numbers=("INV-2026-000030", "INV-2026-000035"),
        payment=PaymentInstructions("INV-2026-000046", IBAN, "AGRIFRPP"),
    )


def outside_eu_invoice() -> InvoiceDocument:
    """To a US company, in dollars, without an IBAN: the reference and the e-mail only."""
    vat = treatment("FR", "US", None)
    return replace(
        invoice(US_BUYER),
        number="INV-2026-000047",
        currency="USD",
        lines=tuple(_usage_lines(vat, ["org-0020"])),
        payment=PaymentInstructions("INV-2026-000047"),
    )


def prepaid_vat_invoice() -> InvoiceDocument:
    """Consumption paid by a prepayment invoice whose VAT was already charged."""
    vat = treatment("FR", "FR", None)
    return replace(
        invoice(FRENCH_BUYER),
        number="INV-2026-000048",
        lines=tuple(_usage_lines(vat, ["org-0002"])),
        paid_minor=6000,
        prepaid_vat_minor=1000,
        prepayment_numbers=("INV-2026-000045",),
        payment=PaymentInstructions("INV-2026-000048", IBAN),
    )


def old_invoice() -> InvoiceDocument:
    """Issued before the shown fields, category G and payment instructions existed."""
    export = VatTreatment(
        VatCategory.EXPORT, Decimal(0), "Exempt - export (art. 146 Directive 2006/112/EC)",
        "VATEX-EU-G",
    )  # fmt: skip
    return replace(
        invoice(US_BUYER),
        number="INV-2025-000007",
        lines=(
            InvoiceLine(
                "1",
                "vCPU - org-0002/app-1",
                Decimal("1480.9044"),
                "HUR",
                Decimal("2.499984"),
                Decimal(100),
                3702,
                export,
            ),
            InvoiceLine(
                "2",
                "Requests - org-0002/gw",
                Decimal("12345678"),
                "C62",
                Decimal("0.0004"),
                Decimal(1000),
                494,
                export,
            ),
            InvoiceLine(
                "3",
                "Storage - org-0002/vol",
                Decimal("100"),
                "E34",
                Decimal("0.04"),
                Decimal(1),
                400,
                export,
            ),
        ),
    )


SAMPLES = {
    "monthly": monthly_invoice,
    "central": central_invoice,
    "credit-note": credit_note,
    "prepayment": prepayment_invoice,
    "reverse-charge": reverse_charge_invoice,
    "outside-eu": outside_eu_invoice,
    "prepaid-vat": prepaid_vat_invoice,
    "old": old_invoice,
}

# --- reading PDFs as people do ------------------------------------------------------------

needs_pdftotext = pytest.mark.skipif(
    shutil.which("pdftotext") is None, reason="pdftotext (poppler-utils) is not installed"
)


def pdf_text(pdf: bytes) -> str:
    """The PDF's text in reading order, lines kept (``pdftotext -layout``)."""
    result = subprocess.run(
        ["pdftotext", "-layout", "-enc", "UTF-8", "-", "-"],
        input=pdf,
        capture_output=True,
        check=True,
    )
    return result.stdout.decode("utf-8")


def html_text(html: str) -> str:
    """The words of an HTML page, without its markup, in one line."""
    body = html[html.index("<body>") :]
    inline = re.sub(r"</?span[^>]*>", "", body)
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", inline)).split())


def squeezed(text: str) -> str:
    """Runs of spaces as one: ``-layout`` pads the columns."""
    return "\n".join(" ".join(line.split()) for line in text.splitlines())


@cache
def sample_text(name: str) -> str:
    """A sample's PDF as text, its columns' padding squeezed (rendered once per session)."""
    return squeezed(pdf_text(invoice_pdf(SAMPLES[name](), LEGAL)))


# --- numbers ------------------------------------------------------------------------------


def test_numbers_keep_every_digit_and_use_the_currency_symbol() -> None:
    assert money(123450, "EUR") == "€1,234.50"
    assert money(-1000, "EUR") == "−€10.00"
    assert money(1234, "JPY") == "¥1,234"
    assert money(5, "USD") == "$0.05"
    assert quantity_text(Decimal("1480.9044")) == "1,480.9044"
    assert quantity_text(Decimal("1E+2")) == "100"
    assert price_text(Decimal("0.0000069444"), "EUR") == "0.0000069444"
    assert price_text(Decimal("9.9"), "EUR") == "9.90"
    assert price_text(Decimal("0.123456789012345678"), "EUR") == "0.123456789012345678"
    assert period_text(date(2026, 10, 1), date(2026, 10, 31)) == "October 2026"
    assert period_text(date(2026, 2, 1), date(2026, 2, 28)) == "February 2026"
    assert period_text(date(2026, 10, 1), date(2026, 10, 14)) == "2026-10-01 – 2026-10-14"


def test_a_line_reads_in_the_unit_people_think_in() -> None:
    vat = treatment("FR", "FR", None)
    shown = _line(1, "vCPU · org-0002/app-1", ("232.8767", "h", "0.025"), 582, vat)
    view = line_view(shown, "EUR")
    assert (view.quantity, view.price, view.amount) == ("232.8767 h", "× 0.025 €/h", "€5.82")
    [old, requests, storage] = old_invoice().lines
    assert line_view(old, "EUR").price == "× 2.499984 € per 100 h"
    assert line_view(old, "EUR").quantity == "1,480.9044 h"
    assert line_view(requests, "EUR").price == "× 0.0004 € per 1,000"
    assert (line_view(storage, "EUR").quantity, line_view(storage, "EUR").price) == (
        "100 GB",
        "× 0.04 €/GB",
    )
    one = line_view(_line(2, "Migration service", None, 4900, vat), "EUR")
    assert (one.quantity, one.price) == ("1", "× 49.00 €")


def test_vat_rows_name_the_category_and_the_oss_country() -> None:
    belgian = treatment("FR", "BE", None, oss=True)
    french = treatment("FR", "FR", None)
    document = replace(
        invoice(FRENCH_BUYER),
        lines=(
            _line(1, "vCPU · a", ("1", "h", "0.025"), 1000, belgian),
            _line(2, "vCPU · b", ("1", "h", "0.025"), 1000, french),
        ),
    )
    labels = [row.label for row in total_rows(document)]
    assert labels == [
        "Total excl. VAT", "VAT 20 % on €10.00", "VAT 21 % (BE) on €10.00", "Total incl. VAT",
        "Total to pay",
    ]  # fmt: skip


def test_the_last_lines_stay_with_the_totals_and_a_short_team_with_its_heading() -> None:
    body, tail = table_rows(monthly_invoice())
    assert [row.line_id for row in tail] == ["31", "32", "33"] and len(body) == 30
    vat = treatment("FR", "FR", None)
    teams = {"org-0010": "Data", "org-0011": "Web"}
    lines = _usage_lines(vat, list(teams), section_of=teams)[:12]  # Web: two lines
    body, tail = table_rows(replace(central_invoice(), lines=tuple(lines)))
    assert [row.kind for row in tail] == ["section", "line", "line", "subtotal"]
    assert body[0].kind == "section" and body[-1].kind == "subtotal"
    mixed = replace(lines[-1], section=None, line_id="13")
    body, tail = table_rows(replace(central_invoice(), lines=(*lines, mixed)))
    assert [row.description for row in tail if row.kind == "section"] == ["Other charges"]


# --- HTML ---------------------------------------------------------------------------------


def test_html_escapes_customer_text() -> None:
    hostile = '<script>alert("x")</script> & Co\'s'
    document = central_invoice()
    document = replace(
        document,
        buyer=replace(FRENCH_BUYER, name=hostile, address=(hostile,)),
        lines=tuple(replace(line, description=hostile, section=hostile) for line in document.lines),
        reason=hostile,
        type=DocumentType.CREDIT_NOTE,
    )
    html = invoice_html(document, LEGAL)
    assert "<script>" not in html
    escaped = "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; Co&#39;s"
    assert html.count(escaped) >= len(document.lines) + 4  # name, address, section, reason


def test_old_invoice_still_renders_and_matches_the_first_shape() -> None:
    html = invoice_html(invoice(FRENCH_BUYER), LEGAL)
    for text in ("INV-2026-000001", "Due 2026-12-01", "100.5 h", "× 0.025 €/h", "€12.41",
                 "€14.89", "Fixed indemnity for recovery costs: 40 EUR."):  # fmt: skip
        assert text in html, text


def test_reverse_charge_mention_and_zero_vat_appear() -> None:
    html = invoice_html(invoice(GERMAN_BUYER))
    assert "Autoliquidation - reverse charge (art. 283-2 CGI" in html and "DE123456788" in html


# --- PDF: what a reader finds -----------------------------------------------------------------


@needs_pdftotext
def test_monthly_invoice_reads_in_hours_euros_and_says_how_to_pay() -> None:
    text = sample_text("monthly")
    for expected in (
        "Invoice",
        "INV-2026-000042",
        "Due 2026-12-01",
        "Service period October 2026",
        "vCPU · org-0002/app-1",
        "513.7534 h × 0.025 €/h",
        "1,862.0136 GB-h × 0.0035 €/GB-h",
        "12.345678 M requests × 0.40 €/M requests",
        "−€12.34",  # the coupon
        "VAT 20 %",
        "Prepaid credits applied −€25.00",
        "Includes €7.31 carried from earlier periods below the",  # wrapped in its box
        "IBAN FR76 3000 6000 0112 3456 7890 189",
        "BIC AGRIFRPP, reference INV-2026-000042",
        "billing@nimbus.example",
        "SAS au capital de 100 000 EUR",
    ):
        assert expected in text, expected
    assert "HUR" not in text and "C62" not in text
    document = monthly_invoice()
    assert f"Total to pay {money(document.due_minor, 'EUR')}" in text
    words = html_text(invoice_html(document))
    assert (
        "Pay by bank transfer to IBAN FR76 3000 6000 0112 3456 7890 189 BIC AGRIFRPP, "
        "reference INV-2026-000042 Amount due €387.88 by 2026-12-01"
    ) in words
    assert "Includes €7.31 carried from earlier periods below the minimum invoice amount" in words


@needs_pdftotext
def test_central_invoice_has_a_heading_and_a_subtotal_per_team() -> None:
    text = sample_text("central")
    document = central_invoice()
    for team in ("Data Platform team", "Mobile & Web team"):
        subtotal = sum(line.net_minor for line in document.lines if line.section == team)
        assert f"\n{team}\n" in text, team
        assert f"Subtotal {team} (excl. VAT) {money(subtotal, 'EUR')}" in text
    assert text.index("Subtotal Data Platform team") < text.index("\nMobile & Web team\n")


@needs_pdftotext
def test_credit_note_names_what_it_corrects_why_and_has_no_due_date() -> None:
    text = sample_text("credit-note")
    assert "Credit note" in text and "Corrects invoice INV-2026-000001 of 2026-11-01" in text
    assert "Reason: Egress of 2026-10-05 billed twice" in text
    assert "Total credited €3.01" in text
    assert "Due" not in text and "Pay by bank transfer" not in text and "Total to pay" not in text


@needs_pdftotext
def test_paid_prepayment_invoice_says_nothing_is_to_pay() -> None:
    text = sample_text("prepayment")
    assert "Prepayment invoice" in text and "Paid — nothing to pay" in text
    assert "Total to pay €0.00" in text and "Due" not in text
    assert "Pay by bank transfer" not in text and "Reference INV-2026-000045" in text


@needs_pdftotext
def test_provisioned_reverse_charge_invoice() -> None:
    text = sample_text("reverse-charge")
    assert "Credit provision for November 2026" in text
    assert "Service period (regularized) October 2026" in text
    assert "Reverse charge €0.00" in text
    assert "Autoliquidation - reverse charge (art. 283-2 CGI" in text
    assert "Paid in advance (prepayment invoices −€100.00" in text  # wrapped in its cell
    words = html_text(invoice_html(reverse_charge_invoice()))
    assert (
        "Paid in advance (prepayment invoices INV-2026-000030, INV-2026-000035) −€100.00" in words
    )
    assert "Total to pay €257.89" in text


@needs_pdftotext
def test_outside_eu_invoice_in_dollars_without_iban() -> None:
    text = sample_text("outside-eu")
    assert "Not subject to VAT $0.00" in text and "× 0.025 $/h" in text
    assert "TVA non applicable - art. 259-1 du CGI" in text
    assert "Quote the reference INV-2026-000047 with your" in text  # then "payment", wrapped
    assert "Amount due $99.17 by 2026-12-01" in text
    assert "billing@nimbus.example" in text and "IBAN" not in text


@needs_pdftotext
def test_prepaid_vat_is_said_to_be_already_invoiced() -> None:
    text = sample_text("prepaid-vat")
    assert "of which VAT already invoiced: €10.00" in text
    words = html_text(invoice_html(prepaid_vat_invoice()))
    assert "Paid in advance (prepayment invoice INV-2026-000045) −€60.00" in words
    assert "IBAN FR76 3000 6000 0112 3456 7890 189, reference INV-2026-000048" in words


@needs_pdftotext
def test_old_document_with_category_g_and_no_shown_units_renders() -> None:
    text = sample_text("old")
    assert "1,480.9044 h × 2.499984 € per 100 h" in text
    assert "Exempt from VAT (export)" in text and "art. 146" in text
    assert "Pay by bank transfer" not in text and "billing@nimbus.example" in text


# --- PDF/A-3 and Factur-X ---------------------------------------------------------------------


def test_pdf_is_pdf_a3_with_the_factur_x_xml_embedded_and_valid() -> None:
    pdf = invoice_pdf(invoice(FRENCH_BUYER))
    assert pdf.startswith(b"%PDF-")
    root = pypdf.PdfReader(io.BytesIO(pdf)).root_object
    stream = root["/Metadata"].get_object()
    assert isinstance(stream, pypdf.generic.StreamObject)
    metadata = stream.get_data()
    assert b"<pdfaid:part>3</pdfaid:part>" in metadata
    assert b"<pdfaid:conformance>B</pdfaid:conformance>" in metadata
    assert b"<fx:ConformanceLevel>EN 16931</fx:ConformanceLevel>" in metadata
    assert "/AF" in root  # the XML is an associated file of the document
    name, xml = facturx.get_facturx_xml_from_pdf(pdf)
    assert name == "factur-x.xml"
    assert validate_cii(xml, french_seller=True) == []


def write_samples(directory: Path) -> list[Path]:
    """Every sample as PDF in ``directory``, to look at."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, build in SAMPLES.items():
        path = directory / f"{name}.pdf"
        path.write_bytes(invoice_pdf(build(), LEGAL))
        written.append(path)
    return written


if __name__ == "__main__":
    for path in write_samples(Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/look")):
        print(path)

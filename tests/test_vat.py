"""VAT treatments by buyer, and EN16931 rounding: once per rate, not per line."""

from __future__ import annotations

from decimal import Decimal

import pytest

from beanbill.ledger.invoicing.vat import VatCategory, VatError, VatLine, breakdown, treatment


def test_vat_treatments_by_buyer() -> None:
    assert treatment("FR", "FR", None) == (VatCategory.STANDARD, Decimal(20), None, None, "FR")
    assert treatment("FR", "FR", "FR44732829320").category is VatCategory.STANDARD
    reverse = treatment("FR", "DE", "DE123456788")
    assert (reverse.category, reverse.rate_percent) == (VatCategory.REVERSE_CHARGE, 0)
    assert reverse.exemption_reason is not None
    assert "Autoliquidation" in reverse.exemption_reason  # a French seller's mention
    assert "art. 283-2 CGI" in reverse.exemption_reason  # with its legal basis
    assert "art. 196" in reverse.exemption_reason
    german = treatment("DE", "FR", "FR44732829320").exemption_reason or ""
    assert "art. 196" in german and "283-2" not in german
    assert treatment("FR", "DE", None).rate_percent == 20  # B2C: seller's rate (no OSS)
    assert treatment("FR", "US", None).category is VatCategory.OUTSIDE_SCOPE  # services
    assert treatment("DE", "DE", None).rate_percent == 19
    with pytest.raises(VatError):
        treatment("US", "US", None)


def test_vat_is_rounded_once_per_rate_not_per_line() -> None:
    lines = [VatLine(VatCategory.STANDARD, Decimal(20), 1)] * 5  # five lines of 0.01
    [entry] = breakdown(lines)
    assert (entry.base_minor, entry.tax_minor) == (5, 1)  # per line it would be 5 × 0 = 0
    mixed = breakdown([
        VatLine(VatCategory.STANDARD, Decimal(20), 1234),
        VatLine(VatCategory.REVERSE_CHARGE, Decimal(0), 999),
        VatLine(VatCategory.STANDARD, Decimal("5.5"), 10),
    ])  # fmt: skip
    assert [(e.category, e.rate_percent, e.base_minor, e.tax_minor) for e in mixed] == [
        (VatCategory.REVERSE_CHARGE, 0, 999, 0),
        (VatCategory.STANDARD, Decimal("5.5"), 10, 1),  # 0.55 → 1, half up
        (VatCategory.STANDARD, 20, 1234, 247),  # 246.8 → 247
    ]

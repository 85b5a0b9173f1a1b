"""VAT treatments and EN16931 rounding; gapless invoice numbers that survive kills."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest

from beanbill.ledger.invoicing.numbering import InvoiceNumbers, NumberingError
from beanbill.ledger.invoicing.vat import VatCategory, VatError, VatLine, breakdown, treatment

DAY = date(2026, 11, 1)


def test_vat_treatments_by_buyer() -> None:
    assert treatment("FR", "FR", None) == (VatCategory.STANDARD, Decimal(20), None, None)
    assert treatment("FR", "FR", "FR44732829320").category is VatCategory.STANDARD
    reverse = treatment("FR", "DE", "DE123456788")
    assert (reverse.category, reverse.rate_percent) == (VatCategory.REVERSE_CHARGE, 0)
    assert reverse.exemption_reason == "Reverse charge - Autoliquidation"
    assert treatment("FR", "DE", None).rate_percent == 20  # B2C: seller's rate (no OSS)
    assert treatment("FR", "US", None).category is VatCategory.EXPORT
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


def test_numbers_are_sequential_and_bound_to_their_document(tmp_path: Path) -> None:
    numbers = InvoiceNumbers(tmp_path)
    first = numbers.assign("INV-2026", "invoice:a:2026-10", DAY)
    second = numbers.assign("INV-2026", "invoice:b:2026-10", DAY)
    assert (first.number, second.number) == ("INV-2026-000001", "INV-2026-000002")
    assert numbers.assign("INV-2026", "invoice:a:2026-10", DAY) == first  # same key, same number
    assert numbers.assign("CN-2026", "credit-note:x", DAY).number == "CN-2026-000001"
    assert [a.number for a in numbers.pending()] == [
        "CN-2026-000001",
        "INV-2026-000001",
        "INV-2026-000002",
    ]
    numbers.mark_issued(first.number)
    assert first.number not in [a.number for a in numbers.pending()]
    with pytest.raises(NumberingError):
        numbers.assign("inv 2026", "x", DAY)


ASSIGN_SCRIPT = """
import sys
from datetime import date
from pathlib import Path
from datetime import date
from beanbill.ledger.invoicing.numbering import InvoiceNumbers
numbers = InvoiceNumbers(Path(sys.argv[1]))
for index in range(int(sys.argv[2]), int(sys.argv[2]) + 400):
    assigned = numbers.assign("INV-2026", f"invoice:org-{index}:2026-10", date(2026, 11, 1))
    numbers.mark_issued(assigned.number)
"""


def test_killed_and_concurrent_issuers_leave_no_gap_and_no_reuse(tmp_path: Path) -> None:
    command = [sys.executable, "-c", ASSIGN_SCRIPT, str(tmp_path)]
    for delay_seconds in (0.3, 0.5, 0.7):
        process = subprocess.Popen([*command, "0"])
        time.sleep(delay_seconds)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    concurrent = [subprocess.Popen([*command, start]) for start in ("0", "200")]
    assert [p.wait(timeout=120) for p in concurrent] == [0, 0]
    assigned = InvoiceNumbers(tmp_path).all()
    assert [a.value for a in assigned] == list(range(1, 601))  # orgs 0..599, each once
    assert len({a.document_key for a in assigned}) == 600
    assert InvoiceNumbers(tmp_path).pending() == []

"""Gapless invoice numbers, bound to their document, that survive kills and concurrent issuers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import pytest

from beanbill.ledger.invoicing.numbering import InvoiceNumbers, NumberingError

DAY = date(2026, 11, 1)


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

"""Gapless invoice numbers, bound to their document, that survive kills and concurrent issuers.

Every test runs against both stores, SQLite and PostgreSQL (tests/peers/postgres.py).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pytest

from beanbill.ledger.invoicing.numbering import (
    Assigned,
    NumberingError,
    NumberStore,
    numbers_at,
)
from beanbill.rating.config import StateSettings
from tests.peers.postgres import BACKENDS, backend_settings

DAY = date(2026, 11, 1)


@dataclass
class Store:
    state_dir: Path
    settings: StateSettings

    def open(self) -> NumberStore:
        return numbers_at(self.state_dir, self.settings)

    def arguments(self) -> list[str]:
        """How a script (below) opens the same store: its folder, and the URL or ''."""
        return [str(self.state_dir), self.settings.url or "", self.settings.password_env]


@pytest.fixture(params=BACKENDS)
def store(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Store]:
    with backend_settings(request.param, monkeypatch) as settings:
        yield Store(tmp_path, settings)


def test_numbers_are_sequential_and_bound_to_their_document(store: Store) -> None:
    numbers = store.open()
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
    assert store.open().by_number(first.number) == first._replace(issued=True)
    assert numbers.pending_for("invoice:b:2026-10") == second
    with pytest.raises(NumberingError):
        numbers.assign("inv 2026", "x", DAY)
    with pytest.raises(NumberingError, match="out of date order"):
        numbers.assign("INV-2026", "invoice:c:2026-10", date(2026, 10, 31))
    with pytest.raises(NumberingError, match="never assigned"):
        numbers.mark_issued("INV-2026-000404")


def test_a_lost_state_is_restored_once_and_continues_after_the_ledger(store: Store) -> None:
    numbers = store.open()
    assert not numbers.exists()
    issued = [
        Assigned("INV-2026-000001", "INV-2026", 1, "invoice:a:2026-10", True, DAY),
        Assigned("INV-2026-000002", "INV-2026", 2, "invoice:b:2026-10", True, DAY),
    ]
    numbers.restore(issued)
    assert store.open().exists() and store.open().all() == issued
    assert numbers.assign("INV-2026", "invoice:c:2026-10", DAY).value == 3
    with pytest.raises(NumberingError, match="never overwritten"):
        numbers.restore(issued)


def test_an_empty_ledger_still_starts_the_state(store: Store) -> None:
    numbers = store.open()
    numbers.restore([])  # what `invoice` does on its first run
    assert store.open().exists() and numbers.all() == []


ASSIGN_SCRIPT = """
import sys
from datetime import date
from pathlib import Path
from beanbill.ledger.invoicing.numbering import numbers_at
from beanbill.rating.config import StateSettings
settings = StateSettings(url=sys.argv[2] or None, password_env=sys.argv[3])
numbers = numbers_at(Path(sys.argv[1]), settings)
for index in range(int(sys.argv[4]), int(sys.argv[4]) + 400):
    assigned = numbers.assign("INV-2026", f"invoice:org-{index}:2026-10", date(2026, 11, 1))
    numbers.mark_issued(assigned.number)
"""


def test_killed_and_concurrent_issuers_leave_no_gap_and_no_reuse(store: Store) -> None:
    command = [sys.executable, "-c", ASSIGN_SCRIPT, *store.arguments()]
    store.open()  # created once: the issuers race on numbers, not on the schema
    for delay_seconds in (0.3, 0.5, 0.7):
        process = subprocess.Popen([*command, "0"])
        time.sleep(delay_seconds)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    concurrent = [subprocess.Popen([*command, start]) for start in ("0", "200")]
    assert [p.wait(timeout=120) for p in concurrent] == [0, 0]
    assigned = store.open().all()
    assert [a.value for a in assigned] == list(range(1, 601))  # orgs 0..599, each once
    assert len({a.document_key for a in assigned}) == 600
    assert store.open().pending() == []

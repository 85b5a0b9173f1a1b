"""Fava, the accountants' window: it loads the demo ledger cleanly and serves its pages."""

from __future__ import annotations

import subprocess
import time
import urllib.request
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

from beancount import loader
from beancount.core.data import Open, Query
from beancount.core.inventory import Inventory
from beanquery.query import run_query
from fava.core import FavaLedger

from beanbill.ledger.books import load_books
from beanbill.ledger.invoicing.issue import issue
from beanbill.ledger.main_file import FAVA_OPTIONS, QUERIES
from beanbill.ledger.post import post, record_credit
from beanbill.ports import free_port
from beanbill.rating.periods import Month
from beanbill.rating.workspace import Workspace
from tests.support import BEANBILL, rated_demo

STARTUP_SECONDS = 60


def posted_demo(root: Path) -> Workspace:
    workspace, _ = rated_demo(root, 8, seed=11)
    record_credit(workspace, "org-0003", "purchase", "50.00", date(2026, 10, 1), None, 100, None)
    post(workspace, Month(2026, 10), date(2026, 11, 22))
    return workspace


def fetch(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.status, response.read().decode()


def test_fava_loads_the_ledger_and_serves_income_statement_and_an_account(tmp_path: Path) -> None:
    workspace = posted_demo(tmp_path / "demo")
    assert FavaLedger(str(workspace.ledger_path)).errors == []
    port = free_port()
    server = subprocess.Popen(
        [BEANBILL, "fava", "-w", str(workspace.root), "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            try:
                status, page = fetch(f"{base}/")
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.3)
        assert status == 200
        slug = "nimbus-cloud-sas-billing-ledger"
        status, page = fetch(f"{base}/{slug}/income_statement/")
        assert status == 200 and "Income:Usage:Compute" in page
        status, page = fetch(f"{base}/{slug}/account/Liabilities:Credits:Org-0003/")
        assert status == 200 and "Org-0003" in page
    finally:
        server.terminate()
        server.wait(timeout=10)


def _total(rows: list[tuple[Any, ...]], column: int) -> Decimal:
    """The sum of a query column of amounts (positions or inventories) in EUR."""
    total = Decimal(0)
    for row in rows:
        value = row[column]
        if isinstance(value, Inventory):
            total += value.get_currency_units("EUR").number or Decimal(0)
        else:
            total += value.units.number if hasattr(value, "units") else value.number
    return total


def test_the_ready_made_queries_run_and_agree_with_the_books(tmp_path: Path) -> None:
    """Every query of the main file runs in beanquery (what Fava's Query page runs), and
    its figures equal the balances of the accounts it reads."""
    workspace = posted_demo(tmp_path / "demo")
    issue(workspace, Month(2026, 10), date(2026, 11, 22))
    entries, errors, options = loader.load_file(str(workspace.ledger_path))
    assert errors == []
    in_ledger = [entry.name for entry in entries if isinstance(entry, Query)]
    assert in_ledger == [name for name, _ in QUERIES]
    results = {name: run_query(entries, options, query)[1] for name, query in QUERIES}
    books = load_books(workspace.ledger_path, "EUR")
    opened = [entry.account for entry in entries if isinstance(entry, Open)]

    def balance(prefix: str) -> Decimal:
        accounts = {account for account in opened if account.startswith(prefix)}
        return Decimal(sum(books.balances(accounts).values())).scaleb(-2)

    assert _total(results["Unbilled"], 1) == balance("Assets:Unbilled:")
    assert _total(results["Receivables"], 1) == balance("Assets:Receivable:") != 0
    assert _total(results["Credits held"], 1) == -balance("Liabilities:Credits:")
    assert _total(results["Revenue by family"], 3) == -balance("Income:")
    assert _total(results["VAT by month"], 3) == -balance("Liabilities:VAT") != 0
    lots = results["Credit lots"]
    expected = sorted(
        books.lots().values(), key=lambda lot: (lot.expires or date.max, lot.acquired)
    )
    assert [(row[1], row[2]) for row in lots] == [(lot.lot_id, lot.kind) for lot in expected]
    fava = FavaLedger(str(workspace.ledger_path))
    assert fava.errors == []
    assert fava.fava_options.invert_income_liabilities_equity
    assert [p.pattern for p in fava.fava_options.collapse_pattern] == [FAVA_OPTIONS[1][1]]

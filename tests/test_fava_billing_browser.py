"""The Fava billing pages in a real browser (Debian's chromium, driven by Playwright).

Fava serves the demo books (``beanbill fava``) with the billing extension enabled; the
pages must show the invoices and an aging total equal to beanquery's receivable balance,
without one JavaScript error. Screenshots are kept in the test's folder and copied to
/tmp/look-fava/ for a person to look at.
"""

from __future__ import annotations

import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest

from beanbill.stripe_peer import free_port
from tests.support import BEANBILL
from tests.test_fava_billing import Books, build_books, load, receivable_balance

sync_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = Path("/usr/bin/chromium")  # never a browser Playwright downloads
LOOK = Path("/tmp/look-fava")
SLUG = "nimbus-cloud-sas-billing-ledger"
AS_OF = date(2027, 3, 5)
STARTUP_SECONDS = 60

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="apt-get install -y chromium")


def wait_until_served(url: str, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while True:
        try:
            with urllib.request.urlopen(url, timeout=10):
                return
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                raise
            time.sleep(0.3)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Books, str]]:
    books = build_books(tmp_path_factory.mktemp("billing-browser") / "demo")
    port = free_port()
    server = subprocess.Popen(
        [BEANBILL, "fava", "-w", str(books.workspace.root), "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}/{SLUG}"
        wait_until_served(f"{base}/", server)
        yield books, base
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_the_billing_pages_and_the_income_statement_render_without_errors(
    served: tuple[Books, str], tmp_path: Path
) -> None:
    books, base = served
    entries, options = load(books.workspace)
    owed = Decimal(receivable_balance(entries, options, AS_OF)).scaleb(-2)
    errors: list[str] = []
    shots: list[Path] = []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM))
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda error: errors.append(str(error)))

        def visit(name: str, url: str, ready: str) -> str:
            page.goto(url)
            page.wait_for_selector(ready)
            page.wait_for_load_state("networkidle")
            shot = tmp_path / f"{name}.png"
            page.screenshot(path=str(shot), full_page=True)
            shots.append(shot)
            return page.inner_text("article") if page.query_selector("article") else ""

        extension = f"{base}/extension/BillingReport/"
        text = visit("invoices", f"{extension}?as-of={AS_OF}", "#bb-invoices")
        for number in (books.credited, books.paid, books.part_paid, books.prepayment):
            assert number in text
        row = page.locator(f"tr[data-number='{books.part_paid}']")
        assert "overdue" in row.inner_text()
        assert row.locator("a", has_text="PDF").count() == 1

        visit("invoices-overdue", f"{extension}?as-of={AS_OF}&status=overdue", "#bb-invoices")
        numbers = page.locator("#bb-invoices tbody tr[data-number]")
        assert numbers.count() >= 1
        assert all("overdue" in numbers.nth(i).inner_text() for i in range(numbers.count()))
        assert books.credited not in page.inner_text("#bb-invoices")

        visit("receivables", f"{extension}?as-of={AS_OF}&tab=receivables", "#bb-aging")
        assert page.inner_text("#bb-total-EUR") == f"{owed:.2f} EUR"
        # A customer's link leads, through Fava's own router, to their invoices that day.
        org = page.locator("#bb-aging tbody tr[data-org] a").first
        org_id = org.inner_text()
        org.click()
        page.wait_for_selector("#bb-invoices")
        page.wait_for_load_state("networkidle")
        assert f"as of {AS_OF}" in page.inner_text("article")
        customers = page.locator("#bb-invoices tbody tr[data-number] td:nth-child(2)")
        assert customers.count() >= 1
        assert {customers.nth(i).inner_text() for i in range(customers.count())} == {org_id}

        text = visit("income-statement", f"{base}/income_statement/", ".tree-table-new")
        assert "Income" in text and "Usage" in text
        browser.close()
    LOOK.mkdir(exist_ok=True)
    for shot in shots:
        shutil.copy(shot, LOOK / shot.name)
    assert errors == []

"""The Fava billing pages in a real browser (Debian's chromium, driven by Playwright).

Fava serves the demo books (``beanbill fava``) with the billing extension enabled; every
tab (invoices, receivables, credits, revenue, sync) and Fava's own pages (income
statement, balance sheet, journal, query) must show the books' content, with totals equal
to beanquery's, and raise no JavaScript error. One browser serves the module; screenshots
are kept in the test's folder and copied to /tmp/look-fava/ for a person to look at.
"""

from __future__ import annotations

import subprocess
import time
import urllib.request
from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
from beanquery.query import run_query

from beanbill.ports import free_port
from tests.browser import RecordingPage
from tests.support import BEANBILL
from tests.test_fava_billing import (
    DEAD_REASON,
    QUARANTINE_REASON,
    TARGET,
    Books,
    build_books,
    load,
)

sync_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = Path("/usr/bin/chromium")  # never a browser Playwright downloads
LOOK = Path("/tmp/look-fava")
SLUG = "nimbus-cloud-sas-billing-ledger"
AS_OF = date(2027, 3, 5)
EXPIRING_DAY = date(2027, 1, 15)  # the partly used grant's last day is 16 days away
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


def beanquery_total(books: Books, account_pattern: str, as_of: date) -> Decimal:
    """The sum of the postings to accounts matching ``account_pattern`` by ``as_of``."""
    entries, options = load(books.workspace)
    _, rows = run_query(
        entries,
        options,
        f"SELECT sum(number) WHERE account ~ '{account_pattern}' AND date <= {as_of.isoformat()}",
    )
    [(total,)] = rows
    return Decimal(total or 0)


class Browser(RecordingPage):
    """One page of Debian's chromium that records every console error and screenshot."""

    def visit(self, name: str, url: str, ready: str) -> str:
        """Open ``url``, wait for ``ready`` and the network to settle, keep a screenshot;
        the article's text."""
        self.page.goto(url)
        self.page.wait_for_selector(ready)
        self.page.wait_for_load_state("networkidle")
        self.screenshot(name)
        article = self.page.query_selector("article")
        return str(article.inner_text()) if article else ""

    def text(self, selector: str) -> str:
        return str(self.page.inner_text(selector))


@pytest.fixture(scope="module")
def browser(
    served: tuple[Books, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Browser]:
    folder = tmp_path_factory.mktemp("screenshots")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM))
        page = chromium.new_page(viewport={"width": 1400, "height": 900})
        seen = Browser(page, folder)
        yield seen
        chromium.close()
    seen.copy_screenshots(LOOK)


def extension_url(base: str, tab: str, as_of: date, **arguments: str) -> str:
    query = "&".join(f"{key}={value}" for key, value in arguments.items())
    return f"{base}/extension/BillingReport/?tab={tab}&as-of={as_of}" + (
        f"&{query}" if query else ""
    )


def test_invoices_show_status_documents_and_sync_per_target(
    served: tuple[Books, str], browser: Browser
) -> None:
    books, base = served
    text = browser.visit("invoices", extension_url(base, "invoices", AS_OF), "#bb-invoices")
    for number in (books.credited, books.paid, books.part_paid, books.prepayment):
        assert number in text
    row = browser.page.locator(f"tr[data-number='{books.part_paid}']")
    assert "overdue" in row.inner_text()
    assert row.locator("a", has_text="PDF").count() == 1
    assert row.locator(".bb-sync").inner_text().strip() == f"{TARGET}: dead"
    paid = browser.page.locator(f"tr[data-number='{books.paid}'] .bb-sync")
    assert paid.inner_text().strip() == f"{TARGET}: synced"

    url = extension_url(base, "invoices", AS_OF, status="overdue")
    browser.visit("invoices-overdue", url, "#bb-invoices")
    numbers = browser.page.locator("#bb-invoices tbody tr[data-number]")
    assert numbers.count() >= 1
    assert all("overdue" in numbers.nth(i).inner_text() for i in range(numbers.count()))
    assert books.credited not in browser.text("#bb-invoices")
    assert browser.errors == []


def test_receivables_total_the_receivable_balance_and_link_to_invoices(
    served: tuple[Books, str], browser: Browser
) -> None:
    books, base = served
    owed = beanquery_total(books, "^Assets:Receivable:", AS_OF)
    browser.visit("receivables", extension_url(base, "receivables", AS_OF), "#bb-aging")
    assert browser.text("#bb-total-EUR") == f"{owed:.2f} EUR"
    # A customer's link leads, through Fava's own router, to their invoices that day.
    org = browser.page.locator("#bb-aging tbody tr[data-org] a").first
    org_id = org.inner_text()
    org.click()
    browser.page.wait_for_selector("#bb-invoices")
    browser.page.wait_for_load_state("networkidle")
    assert f"as of {AS_OF}" in browser.page.inner_text("article")
    customers = browser.page.locator("#bb-invoices tbody tr[data-number] td:nth-child(2)")
    assert customers.count() >= 1
    assert {customers.nth(i).inner_text() for i in range(customers.count())} == {org_id}
    assert browser.errors == []


def test_credits_total_the_credit_balance_and_list_what_expires(
    served: tuple[Books, str], browser: Browser
) -> None:
    books, base = served
    held = -beanquery_total(books, "^Liabilities:Credits:", EXPIRING_DAY)
    url = extension_url(base, "credits", EXPIRING_DAY)
    browser.visit("credits", url, "#bb-credits")
    assert browser.text("#bb-credits-total-EUR") == f"{held:.2f} EUR"
    assert books.expiring_lot in browser.text("#bb-expiring")
    assert "expired" in browser.text(f"#bb-lots tr[data-lot='{books.expired_lot}']")
    assert browser.errors == []


def test_revenue_shows_a_chart_a_table_and_the_unbilled(
    served: tuple[Books, str], browser: Browser
) -> None:
    books, base = served
    earned = -beanquery_total(books, "^Income:", AS_OF)
    unbilled = beanquery_total(books, "^Assets:Unbilled:", AS_OF)
    browser.visit("revenue", extension_url(base, "revenue", AS_OF), "#bb-chart-EUR")
    assert browser.text("#bb-revenue-total-EUR") == f"{earned:.2f} EUR"
    assert browser.text("#bb-unbilled-total-EUR") == f"{unbilled:.2f} EUR"
    assert browser.page.locator("#bb-chart-EUR rect title").count() >= 5
    assert browser.page.locator("#bb-chart-EUR").bounding_box()["height"] > 200
    assert browser.errors == []


def test_sync_lists_dead_letters_pending_documents_and_the_inbox(
    served: tuple[Books, str], browser: Browser
) -> None:
    books, base = served
    browser.visit("sync", extension_url(base, "sync", AS_OF), f"#bb-sync-{TARGET}")
    section = f"#bb-sync-{TARGET}"
    assert books.part_paid in browser.text(f"{section} .bb-dead")
    assert DEAD_REASON in browser.text(f"{section} .bb-dead")
    assert books.credited in browser.text(f"{section} .bb-pending")
    assert books.credit_note in browser.text(f"{section} .bb-retrying")
    assert browser.text(f"{section} .bb-waiting-count") == "1"
    assert QUARANTINE_REASON in browser.text(f"{section} .bb-problems")
    assert browser.errors == []


@pytest.mark.parametrize(
    ("name", "path", "ready", "expected"),
    [
        ("income-statement", "income_statement/", ".tree-table-new", "Usage"),
        ("balance-sheet", "balance_sheet/", ".tree-table-new", "Receivable"),
        ("journal", "journal/", ".journal", "Invoice"),
        ("query", "query/?query_string=SELECT%20account%2C%20sum(position)%20GROUP%20BY%20account",
         "article table", "Income:Usage:Compute"),
    ],
)  # fmt: skip
def test_favas_own_pages_render_without_errors(
    served: tuple[Books, str], browser: Browser, name: str, path: str, ready: str, expected: str
) -> None:
    _, base = served
    text = browser.visit(name, f"{base}/{path}", ready)
    assert expected in text
    assert browser.errors == []

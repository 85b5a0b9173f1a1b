"""The customer portal in a real browser (Debian's chromium, driven by Playwright).

The API's app with the portal included is served by uvicorn on loopback; chromium logs
in with a customer key (whose organization has a hostile name), reads the overview,
drills down from family to one resource's day (through the table and through a click on
the chart), downloads an invoice's PDF, reads all payments and opens a team's pages. Any
JavaScript console error, page error or dialog (an escaped ``<script>`` that ran) fails
the test. The screenshots are copied to /tmp/look-portal/ for a person to look at.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from beanbill.ports import free_port
from tests.browser import RecordingPage
from tests.test_portal import HOSTILE_NAME, Portal, build_portal

sync_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = Path("/usr/bin/chromium")  # never a browser Playwright downloads
LOOK = Path("/tmp/look-portal")
STARTUP_SECONDS = 20

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="apt-get install -y chromium")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Portal, str]]:
    """The portal's app served by uvicorn in a thread of this process."""
    portal = build_portal(tmp_path_factory.mktemp("portal-browser") / "ws")
    port = free_port()
    config = uvicorn.Config(portal.app, host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + STARTUP_SECONDS
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the portal did not start"
        time.sleep(0.05)
    try:
        yield portal, f"http://127.0.0.1:{port}/portal"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


class Browser(RecordingPage):
    """One page of Debian's chromium recording console errors, dialogs and screenshots."""

    def __init__(self, page: Any, folder: Path) -> None:
        super().__init__(page, folder)
        page.on("dialog", self._dialog)

    def _dialog(self, dialog: Any) -> None:
        """A dialog is a script that ran (an escaped ``alert`` that was not): an error."""
        self.errors.append(f"dialog: {dialog.message}")
        dialog.dismiss()

    def settle(self, name: str, ready: str) -> None:
        """Wait for ``ready`` and the network, and keep a full-page screenshot."""
        self.page.wait_for_selector(ready)
        self.page.wait_for_load_state("networkidle")
        self.screenshot(name)

    def follow(self, name: str, selector: str, ready: str) -> None:
        with self.page.expect_navigation():
            self.page.click(selector)
        self.settle(name, ready)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    folder = tmp_path_factory.mktemp("portal-screenshots")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM))
        context = chromium.new_context(
            viewport={"width": 1280, "height": 860}, accept_downloads=True
        )
        context.set_default_timeout(10_000)
        seen = Browser(context.new_page(), folder)
        yield seen
        chromium.close()
    seen.copy_screenshots(LOOK)


def chart_point(browser: Browser, dataset: int) -> tuple[float, float]:
    """The page coordinates of the tallest bar of ``dataset`` in the usage chart."""
    point = browser.page.evaluate(
        """(dataset) => {
            const canvas = document.getElementById('usage-chart');
            const chart = Chart.getChart(canvas);
            const values = chart.data.datasets[dataset].data;
            const index = values.indexOf(Math.max(...values));
            const bar = chart.getDatasetMeta(dataset).data[index];
            const box = canvas.getBoundingClientRect();
            return [box.left + bar.x, box.top + (bar.y + bar.base) / 2];
        }""",
        dataset,
    )
    return float(point[0]), float(point[1])


def test_log_in_drill_down_to_a_day_and_download_a_pdf(
    served: tuple[Portal, str], browser: Browser, tmp_path: Path
) -> None:
    portal, base = served
    page = browser.page
    page.goto(f"{base}/org/fr-post")
    browser.settle("01-login", "input#key")
    page.fill("input#key", portal.keys["fr-post"])
    browser.follow("02-overview", "section.login button", "#cost-last-month")
    assert page.inner_text("#org-name") == HOSTILE_NAME
    assert page.locator("#teams tr[data-org='team-a']").count() == 1

    browser.follow("03-usage-month", "nav.tabs >> text=Usage", "canvas#usage-chart[data-ready]")
    assert "Usage of 2026-10" in page.inner_text("main")
    assert page.locator("canvas#usage-chart").bounding_box()["height"] > 200
    browser.follow("04-family", "#drill a >> text=Compute", "#drill[data-level='meter']")
    browser.follow("05-meter", "#drill a >> text=cpu", "#drill[data-level='resource']")
    assert [part.strip() for part in page.inner_text("#crumbs").split("›")[1:]] == [
        "Compute",
        "cpu",
    ]
    # The chart drills down too: a click on the tallest bar of the first resource.
    first = page.locator("#drill tbody tr").first.get_attribute("data-name")
    x, y = chart_point(browser, 0)
    with page.expect_navigation():
        page.mouse.click(x, y)
    browser.settle("06-resource", "#drill[data-level='day']")
    assert page.locator("canvas#usage-chart[data-ready]").count() == 1
    assert first in page.inner_text("#crumbs")
    with page.expect_navigation():
        page.locator("#drill tbody a").first.click()
    browser.settle("07-day", "#day-detail")
    assert "vCPU-second" in page.inner_text("#day-detail")

    browser.follow("08-invoices", "nav.tabs >> text=Invoices", "#invoices")
    [number] = portal.numbers("fr-post")
    with page.expect_download() as download:
        page.click(f"#invoices tr[data-number='{number}'] a >> text=PDF")
    saved = tmp_path / "invoice.pdf"
    download.value.save_as(saved)
    assert saved.read_bytes().startswith(b"%PDF")
    browser.follow("09-invoice", f"#invoices a >> text={number}", "#movements")
    assert "bank transfer" in page.inner_text("#movements")
    browser.follow("09b-payments", "nav.tabs >> text=Payments", "#payments")
    kinds = [row.get_attribute("data-kind") for row in page.locator("#payments tbody tr").all()]
    assert kinds == ["payment", "charge", "payment"]  # newest first
    assert HOSTILE_NAME in page.inner_text("#payments")  # shown as text, never run
    browser.follow("09c-payment-invoice", "#payments a >> nth=0", "#movements")
    assert number in page.inner_text("h2")

    browser.follow("10-overview-again", "nav.tabs >> text=Overview", "#teams")
    browser.follow("11-team", "#teams a >> text=Team A", "#cost-last-month")
    assert "invoiced centrally by fr-post" in page.inner_text("p.sub")
    browser.follow("12-team-usage", "nav.tabs >> text=Usage", "canvas#usage-chart[data-ready]")
    assert browser.errors == []


def test_credits_and_logging_out(served: tuple[Portal, str], browser: Browser) -> None:
    portal, base = served
    page = browser.page
    browser.follow("13-logged-out", "form.logout button", "input#key")
    page.fill("input#key", portal.keys["de-pre"])
    browser.follow("14-prepaid-overview", "section.login button", "#credit-balance")
    browser.follow("15-credits", "nav.tabs >> text=Credits", "#lots")
    assert "expiring" in page.inner_text("#lots tr[data-lot='de-pre-granted']")
    assert browser.errors == []
    page.goto(f"{base}/org/fr-post")  # another tenant's page: the document itself is a 404
    browser.settle("16-other-tenant", "section.error")
    assert page.inner_text("section.error h1") == "Not found"
    assert browser.errors == [
        "Failed to load resource: the server responded with a status of 404 (Not Found)"
    ]

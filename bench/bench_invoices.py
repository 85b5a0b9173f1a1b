"""1,000 invoices: derivation, rendering per format, validation, and issuance on all cores.

    .venv/bin/python bench/bench_invoices.py

A workspace of 1,000 monthly organizations (postpaid, prepaid, provisioned; a quarter
of them reverse-charge customers in Germany) with a month of usage is rated and posted
first (not measured). Then: deriving every invoice from the ledger; rendering a sample of
100 in one process, format by format (CPU seconds per invoice); validating their CII and
UBL with the official schematrons; and issuing all 1,000 (numbers, HTML, PDF/A-3 with
Factur-X, UBL, ledger) with one worker per core — wall time and CPU per invoice.
"""

from __future__ import annotations

import argparse
import random
import sys
import threading
import time
import tomllib
from collections.abc import Iterator
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import facturx  # noqa: E402
import psutil  # noqa: E402
import weasyprint  # noqa: E402

from beanbill.examples import german_vat_id, write_toml  # noqa: E402
from beanbill.ledger.invoicing.derive import seller_legal_line  # noqa: E402
from beanbill.ledger.invoicing.einvoice import cii_xml  # noqa: E402
from beanbill.ledger.invoicing.issue import issue, preview  # noqa: E402
from beanbill.ledger.invoicing.render import invoice_html  # noqa: E402
from beanbill.ledger.invoicing.ubl import ubl_xml  # noqa: E402
from beanbill.ledger.post import post, record_credit  # noqa: E402
from beanbill.rating.config import BillingMode  # noqa: E402
from beanbill.rating.ingest import ingest  # noqa: E402
from beanbill.rating.periods import Month  # noqa: E402
from beanbill.rating.rate import rate_months  # noqa: E402
from beanbill.rating.workspace import CUSTOMERS_FILE, Workspace  # noqa: E402
from bench.bench_ledger import make_workspace  # noqa: E402
from tests.einvoice_validation import validate_cii, validate_ubl  # noqa: E402
from tests.support import write_jsonl  # noqa: E402

ORGANIZATIONS = 1_000
SAMPLE = 100
MONTH = Month(2026, 10)


def mix_countries(root: Path) -> None:
    """The customers' countries as the benches bill them: a quarter reverse-charge
    businesses in Germany, an eighth consumers in Belgium (OSS), the rest French."""
    customers = tomllib.loads((root / CUSTOMERS_FILE).read_text())["customer"]
    rng = random.Random(5)
    for index, record in enumerate(customers):
        if index % 4 == 3:  # reverse-charge customers in Germany
            record["country"] = "DE"
            record["vat_id"] = german_vat_id(rng)
        elif index % 8 == 1:  # consumers in Belgium: OSS at the Belgian rate
            record["country"] = "BE"
            record.pop("vat_id", None)
    write_toml(root / CUSTOMERS_FILE, {"customer": customers})


def build(root: Path) -> tuple[Workspace, tuple[str, str]]:
    """The rated and posted workspace, and the measure of its credit purchases (each
    issues a prepayment invoice: numbered, rendered, posted, one command at a time)."""
    make_workspace(root, ORGANIZATIONS, ("monthly",))
    mix_countries(root)
    workspace = Workspace.load(root)
    ingest(workspace, [write_jsonl(root / "usage.jsonl", usage(workspace))])
    rate_months(workspace, [MONTH])
    started = time.perf_counter()
    purchases = 0
    for index, customer in enumerate(workspace.customers.customer):
        if customer.billing_mode is not BillingMode.POSTPAID:
            record_credit(
                workspace, customer.id, "purchase", "20.00", date(2026, 10, 1), None, 100, None
            )
            purchases += 1
        if index % 5 == 0:  # a granted credit: a price reduction line on the invoice
            record_credit(
                workspace, customer.id, "grant", "5.00", date(2026, 10, 1), None, 10, None
            )
    seconds = time.perf_counter() - started
    measured = (
        f"record {purchases:,} credit purchases with their prepayment invoices "
        f"and {ORGANIZATIONS // 5:,} grants, one command each",
        f"{seconds:.1f} s, {seconds / purchases * 1000:.0f} ms per purchase",
    )
    post(workspace, MONTH, date(2026, 11, 2))
    return workspace, measured


def usage(workspace: Workspace) -> Iterator[dict[str, str]]:
    """Three vCPU runs and one egress counter per organization, spread over October."""
    for index, customer in enumerate(workspace.customers.customer):
        for resource_index in range(3):
            day = 1 + (index + resource_index) % 28
            yield {
                "id": f"{customer.id}-{resource_index}",
                "org": customer.id,
                "resource": f"{customer.id}/app-{resource_index}",
                "meter": "cpu",
                "start": f"2026-10-{day:02d}T08:00:00Z",
                "end": f"2026-10-{day + 1:02d}T20:00:00Z",
                "quantity": str(1 + resource_index),
            }
        yield {
            "id": f"{customer.id}-egress",
            "org": customer.id,
            "resource": f"{customer.id}/lb",
            "meter": "egress",
            "at": "2026-10-15T12:00:00Z",
            "quantity": "345.678",
        }


class TreeCpu:
    """CPU seconds of this process and every descendant, sampled while the work runs.

    Render workers are the fork server's children, not ours: ``RUSAGE_CHILDREN`` never
    sees them, so their CPU is read from /proc (psutil) until they exit.
    """

    def __init__(self, interval_seconds: float = 0.2) -> None:
        self.interval_seconds = interval_seconds
        self.seen: dict[int, float] = {}
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        me = psutil.Process()
        while not self.stopping.wait(self.interval_seconds):
            for process in me.children(recursive=True):
                try:
                    times = process.cpu_times()
                except psutil.Error:
                    continue
                self.seen[process.pid] = times.user + times.system

    def __enter__(self) -> TreeCpu:
        self.own_before = time.process_time()
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.thread.join()
        self.total_seconds = time.process_time() - self.own_before + sum(self.seen.values())


FLOOR_PAGE = "<html><body><p>Invoice</p></body></html>"


def measure(label: str, work: list[object], step: object) -> tuple[str, str]:
    started = time.process_time()
    for item in work:
        step(item)  # type: ignore[operator]
    per_invoice = (time.process_time() - started) / len(work)
    return label, f"{per_invoice * 1000:.1f} ms CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT / "bench" / "data")
    arguments = parser.parse_args()
    workspace, purchases = build(arguments.data / "invoices-1k")
    rows: list[tuple[str, str]] = [purchases]
    started = time.perf_counter()
    drafts = preview(workspace, MONTH, date(2026, 11, 3))
    seconds = time.perf_counter() - started
    rows.append(
        (
            f"derive {len(drafts):,} invoices from the ledger",
            f"{seconds:.1f} s, {seconds / len(drafts) * 1000:.1f} ms each",
        )
    )
    sample = drafts[:SAMPLE]
    legal = seller_legal_line(workspace.settings.seller)
    htmls = {id(d): invoice_html(d, legal) for d in sample}
    rows.append(measure("HTML (Jinja2)", sample, lambda d: invoice_html(d, legal)))
    rows.append(
        measure(
            "PDF/A-3b (WeasyPrint)",
            sample,
            lambda d: weasyprint.HTML(string=htmls[id(d)]).write_pdf(pdf_variant="pdf/a-3b"),
        )
    )
    pdf = weasyprint.HTML(string=htmls[id(sample[0])]).write_pdf(pdf_variant="pdf/a-3b")
    rows.append(
        measure(
            "Factur-X: CII + embed (factur-x)",
            sample,
            lambda d: facturx.generate_from_binary(
                pdf, cii_xml(d), flavor="factur-x", level="en16931", check_xsd=True
            ),
        )
    )
    rows.append(measure("UBL (lxml)", sample, ubl_xml))
    rows.append(
        measure(
            "validation: CII + UBL schematrons (saxonche)",
            sample,
            lambda d: (validate_cii(cii_xml(d), True), validate_ubl(ubl_xml(d), True)),
        )
    )
    floor_pdf = measure(
        "floor: WeasyPrint PDF/A-3b of a one-line page",
        sample,
        lambda d: weasyprint.HTML(string=FLOOR_PAGE).write_pdf(pdf_variant="pdf/a-3b"),
    )
    rows.append(floor_pdf)
    pdf_ms = float(rows[3][1].split()[0])
    rows.append(("PDF / floor", f"{pdf_ms / float(floor_pdf[1].split()[0]):.2f}×"))
    started = time.perf_counter()
    with TreeCpu() as tree:
        summary = issue(workspace, MONTH, date(2026, 11, 3))
    wall, cpu = time.perf_counter() - started, tree.total_seconds
    count = len(summary.issued)
    rows.append(
        (
            f"issue {count:,} invoices, all cores (HTML, PDF/A-3 + Factur-X, UBL, ledger)",
            f"{wall:.1f} s wall, {count / wall:.1f} invoices/s",
        )
    )
    rows.append(("CPU per issued invoice", f"{cpu / count * 1000:.0f} ms"))
    print("| measure | result |\n|---|---|")
    for label, value in rows:
        print(f"| {label} | {value} |", flush=True)


if __name__ == "__main__":
    main()

"""Sync to Tryton: pushing invoices through the real connector, against bare JSON-RPC calls.

    .venv/bin/python bench/bench_tryton.py --invoices 100

A real trytond 8.0 on loopback (tests/peers/tryton.py: installed and set up on first use,
then a fresh copy of its template database) receives ``--invoices`` invoices (5 lines
with 20 % VAT each, one customer per two invoices) through the connector and the sync
engine (``push_all``: look before create, party found or created and checked, invoice
created, totals compared, posted, read back). Reported: invoices/s and JSON-RPC calls per
invoice, pushed one at a time and four at a time. The floor, in the same run and on the
same server: the same invoices made by bare ``account.invoice.create`` + ``post`` calls
(two calls each, parties already there, nothing looked up or checked). Most of a post is
Tryton's own work (it renders the invoice report), so the floor bounds what any client
could do.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import date
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from beanbill.connectors.tryton import TrytonConnector  # noqa: E402
from beanbill.ledger.invoicing.documents import (  # noqa: E402
    DocumentType,
    InvoiceDocument,
    InvoiceLine,
    Party,
)
from beanbill.ledger.invoicing.vat import VatCategory, VatTreatment  # noqa: E402
from beanbill.rating.config import TrytonSettings  # noqa: E402
from beanbill.sync.push import push_all  # noqa: E402
from beanbill.sync.retry import RetryPolicy  # noqa: E402
from beanbill.sync.state import SqliteSyncState  # noqa: E402
from tests.peers.tryton import MAPPING, PASSWORD, running_tryton  # noqa: E402

FAMILIES = {"vCPU": "Compute", "Block storage": "Storage"}


def documents(count: int, run: str) -> list[InvoiceDocument]:
    vat = VatTreatment(VatCategory.STANDARD, Decimal(20), None, None, "FR")
    seller = Party("Seller SAS", ("1 rue de la Paix", "75002 Paris"), "FR")
    names = ["vCPU", "Block storage", "vCPU", "Support", "Block storage"]
    result = []
    for index in range(count):
        buyer = Party(f"Customer {index // 2}", ("1 Main Street", "Lyon"), "FR")
        lines = tuple(
            InvoiceLine(str(n), f"{names[n - 1]} · r-{n}", Decimal(n), "HUR", Decimal("0.5"),
                        Decimal(1), 50 * n + index, vat)
            for n in range(1, 6)
        )  # fmt: skip
        result.append(
            InvoiceDocument(
                f"INV-{run}-{index:06d}", DocumentType.INVOICE, date(2026, 11, 5),
                date(2026, 12, 5), date(2026, 10, 1), date(2026, 10, 31), "EUR", seller, buyer,
                lines, buyer_reference=f"org-{index // 2:05d}",
            )
        )  # fmt: skip
    return result


def push_bench(settings: TrytonSettings, count: int, concurrency: int, run: str) -> list[str]:
    connector = TrytonConnector(settings, PASSWORD, FAMILIES)
    connector.check()  # the check at start, once a run: not part of the per-invoice cost
    before = connector.calls
    with tempfile.TemporaryDirectory() as folder:
        state = SqliteSyncState(Path(folder))
        started = time.perf_counter()
        summary = push_all(documents(count, run), [connector], state, RetryPolicy(), concurrency)
        seconds = time.perf_counter() - started
    if summary.dead or len(summary.synced) != count:
        raise SystemExit(f"push failed: {summary.dead[:3]}")
    calls = connector.calls - before
    label = f"sync engine + connector, {concurrency} at a time"
    return [label, f"{count:,}", f"{seconds:.1f}", f"{count / seconds:.2f}", f"{calls / count:.1f}"]


def floor_bench(settings: TrytonSettings, count: int, run: str) -> list[str]:
    """Bare create + post of the same invoices (their parties exist: made by the push)."""
    connector = TrytonConnector(settings, PASSWORD, FAMILIES)
    mapping = connector.check()
    parties = {
        str(party["code"]): (int(party["id"]), int(party["addresses"][0]))
        for party in connector.rpc.search_read("party.party", [], ["code", "addresses"])
    }
    values = [
        connector.invoice_values(document, *parties[document.buyer_reference or ""], mapping)
        for document in documents(count, run)
    ]
    before = connector.calls
    started = time.perf_counter()
    for invoice in values:
        identifier = connector.rpc.create("account.invoice", invoice)
        connector.rpc.call("model.account.invoice.post", [identifier])
    seconds = time.perf_counter() - started
    calls = connector.calls - before
    label = "floor: bare create + post, 1 at a time"
    return [label, f"{count:,}", f"{seconds:.1f}", f"{count / seconds:.2f}", f"{calls / count:.1f}"]


def table(rows: list[list[str]]) -> str:
    header = ["run", "invoices", "seconds", "invoices/s", "calls/invoice"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--invoices", type=int, default=100)
    count = parser.parse_args().invoices
    if not 1 <= count <= 10_000:
        raise SystemExit("--invoices: 1 to 10,000")
    with tempfile.TemporaryDirectory() as folder, running_tryton(Path(folder)) as peer:
        os.environ["TRYTON_PASSWORD"] = PASSWORD
        settings = TrytonSettings.model_validate(
            {**MAPPING, "url": peer.url, "database": peer.database}
        )
        rows = [
            push_bench(settings, count, 1, "A"),
            push_bench(settings, count, 4, "B"),
            floor_bench(settings, count, "F"),
        ]
    print(table(rows))


if __name__ == "__main__":
    main()

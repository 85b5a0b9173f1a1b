"""Builders shared by the tests and the benchmarks: workspaces on disk, usage, documents.

One place, so that a workspace, a usage file or an invoice means the same thing in every
test and benchmark. Nothing here imports pytest: the benchmarks (bench/*.py) import it
too, with the repository root on ``sys.path``. Fixtures built on it are in conftest.py.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import sys
import time
from collections.abc import Callable, Iterable
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

from beanbill.demo import write_usage
from beanbill.examples import CATALOG, write_configuration, write_toml
from beanbill.ledger.invoicing.documents import DocumentType, InvoiceDocument, InvoiceLine, Party
from beanbill.ledger.invoicing.vat import treatment
from beanbill.ledger.main_file import main_ledger_text
from beanbill.rating.ingest import ingest
from beanbill.rating.periods import Month
from beanbill.rating.rate import rate_months
from beanbill.rating.workspace import CATALOG_FILE, CUSTOMERS_FILE, SETTINGS_FILE, Workspace
from beanbill.sync.push import PushSummary, issued_documents, push_all
from beanbill.sync.state import SqliteSyncState
from beanbill.targets import connectors, retry_policy

# The commands installed next to this interpreter: the CLI exactly as a user runs it.
BEANBILL = str(Path(sys.executable).with_name("beanbill"))
BEAN_CHECK = str(Path(sys.executable).with_name("bean-check"))
PUSH_CONCURRENCY = 2

JANUARY = date(2026, 1, 1)


def example_meter(meter_id: str, prices: list[dict[str, Any]]) -> dict[str, Any]:
    """A meter of the example catalog (``beanbill.examples``) with the prices a test needs."""
    [meter] = [meter for meter in CATALOG["meter"] if meter["id"] == meter_id]
    per = "second" if meter["kind"] == "interval" else "unit"  # the tests' prices are so
    return {**meter, "per": per, "price": prices}


def egress_meter(prices: list[dict[str, Any]]) -> dict[str, Any]:
    """The tests' egress counter (named "Egress": invoice lines in the tests say so)."""
    return {
        "id": "egress",
        "name": "Egress",
        "unit": "GB",
        "kind": "counter",
        "family": "Network",
        "price": prices,
    }


SMALL_CATALOG: dict[str, Any] = {
    "meter": [
        example_meter("cpu", [{"effective": JANUARY, "price": "0.0000069444"}]),
        egress_meter(
            [
                {
                    "effective": JANUARY,
                    "free": "100",
                    "tiers": [{"up_to": "1000", "price": "0.01"}, {"price": "0.008"}],
                }
            ]
        ),
    ],
    "addon": [
        {
            "id": "backup",
            "name": "Backup",
            "price": {"monthly": "9.90", "weekly": "2.50", "daily": "0.40"},
        }
    ],
    "service": [{"id": "migration", "name": "Migration", "price": "49.00"}],
}


# --- workspaces --------------------------------------------------------------------------


def customer(org: str, period: str = "monthly", **extra: Any) -> dict[str, Any]:
    return {
        "id": org,
        "name": f"{org} Ltd",
        "address": ["1 Main Street", "Paris"],
        "country": "FR",
        "email": f"billing@{org}.example",
        "billing_period": period,
        **extra,
    }


def write_configuration_files(
    root: Path, settings: dict[str, Any], catalog: dict[str, Any], customers: list[dict[str, Any]]
) -> None:
    """The three TOML files a workspace is configured by, as a user would write them."""
    write_toml(root / SETTINGS_FILE, settings)
    write_toml(root / CATALOG_FILE, catalog)
    write_toml(root / CUSTOMERS_FILE, {"customer": customers})


def write_workspace(
    root: Path, settings: dict[str, Any], catalog: dict[str, Any], customers: list[dict[str, Any]]
) -> Workspace:
    """A workspace written from dicts and loaded through the real loader, with its ledger."""
    write_configuration_files(root, settings, catalog, customers)
    workspace = Workspace.load(root)
    workspace.ledger_path.write_text(main_ledger_text(workspace.settings, workspace.catalog))
    return workspace


def rated_demo(root: Path, organizations: int, seed: int) -> tuple[Workspace, list[Path]]:
    """The demo's configuration and usage for October 2026, ingested and rated."""
    write_configuration(root, organizations, seed=seed)
    workspace = Workspace.load(root)
    files = write_usage(root / "inbox", [c.id for c in workspace.customers.customer], seed=seed)
    ingest(workspace, files)
    rate_months(workspace, [Month(2026, 10)])
    return workspace, files


# --- usage and rejects ---------------------------------------------------------------------


def write_jsonl(path: Path, records: Iterable[dict[str, Any] | str]) -> Path:
    """One record a line (strings as they are: broken lines on purpose), written as it goes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        for record in records:
            handle.write((record if isinstance(record, str) else json.dumps(record)) + "\n")
    return path


def read_rejects(path: Path | None) -> list[dict[str, Any]]:
    assert path is not None, "expected a rejects file"
    return [json.loads(line) for line in path.read_text().splitlines()]


def october_usage(org: str, hours: int, day: int = 5) -> list[dict[str, object]]:
    """2 vCPU for ``hours`` hours and 250.5 GB of egress on one October 2026 day."""
    return [
        {"id": f"{org}-cpu", "org": org, "resource": f"{org}/app", "meter": "cpu",
         "start": f"2026-10-{day:02d}T00:00:00Z", "end": f"2026-10-{day:02d}T{hours:02d}:00:00Z",
         "quantity": "2"},
        {"id": f"{org}-egress", "org": org, "resource": f"{org}/lb", "meter": "egress",
         "at": f"2026-10-{day:02d}T12:00:00Z", "quantity": "250.5"},
    ]  # fmt: skip


def beancount_snapshot(root: Path) -> dict[str, bytes]:
    """Every .beancount file under ``root`` by relative path: compares a ledger byte for byte."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.beancount"))}


# --- invoice documents -----------------------------------------------------------------------

SELLER = Party(
    "Nimbus Cloud SAS",
    ("12 rue de la Paix", "75002 Paris"),
    "FR",
    "FR44732829320",
    "732829320",
    "billing@nimbus.example",
)
FRENCH_BUYER = Party("Acme SAS", ("1 Main Street", "69001 Lyon"), "FR", None, "552100554")
GERMAN_BUYER = Party(
    "Beispiel GmbH",
    ("Hauptstr. 1", "10115 Berlin"),
    "DE",
    "DE123456788",
    None,
    "rechnung@beispiel.example",
)
US_BUYER = Party(
    "Example Inc", ("1 Market St", "San Francisco"), "US", None, None, "ap@example.com"
)
NOTES = (
    ("PMD", "Late payment penalty: three times the French legal interest rate."),
    ("PMT", "Fixed indemnity for recovery costs: 40 EUR."),
    ("AAB", "No discount for early payment."),
)


def invoice(buyer: Party) -> InvoiceDocument:
    """An October 2026 invoice from the French seller to ``buyer``: two lines, its VAT."""
    vat = treatment("FR", buyer.country, buyer.vat_id)
    lines = (
        # 100.5 vCPU-hours priced per hour (a per-second price would break BR-FR-DEC-03)
        InvoiceLine(
            "1",
            "vCPU org-0001/app-1",
            Decimal("100.5"),
            "HUR",
            Decimal("0.025"),
            Decimal(1),
            251,
            vat,
        ),
        InvoiceLine(
            "2",
            "Backup Plus, October 2026",
            Decimal(1),
            "C62",
            Decimal("9.90"),
            Decimal(1),
            990,
            vat,
        ),
    )
    return InvoiceDocument(
        number="INV-2026-000001",
        type=DocumentType.INVOICE,
        issue_date=date(2026, 11, 1),
        due_date=date(2026, 12, 1),
        period_start=date(2026, 10, 1),
        period_end=date(2026, 10, 31),
        currency="EUR",
        seller=SELLER,
        buyer=buyer,
        lines=lines,
        notes=NOTES,
        buyer_reference="org-0001",
    )


# --- sync --------------------------------------------------------------------------------

Issued = Callable[..., Workspace]  # the ``issued`` fixture: settings for [sync] → a workspace


def push(workspace: Workspace) -> PushSummary:
    """`sync push` of every issued document, the way the command does it."""
    state = SqliteSyncState(workspace.state_dir)
    documents = issued_documents(workspace)
    return push_all(
        documents, connectors(workspace), state, retry_policy(workspace), PUSH_CONCURRENCY
    )


def stripe_signature(body: bytes, secret: str, at: int | None = None) -> dict[str, str]:
    """The ``Stripe-Signature`` header Stripe sends with ``body`` (``at``: another time)."""
    timestamp = int(time.time()) if at is None else at
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return {"Stripe-Signature": f"t={timestamp},v1={digest.hexdigest()}"}

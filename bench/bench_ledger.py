"""Ledger posting throughput against a plain file write, and bean-check time of a year.

    .venv/bin/python bench/bench_ledger.py

1. 10,000 monthly organizations × 1 period: `post` (load ledger, read rated totals, draw
   credits, render, round-trip parse, atomic append, fsync) against the floor of writing
   the same text with one plain write + fsync, in the same run.
2. A generated year for 1,000 organizations (postpaid, prepaid and provisioned; monthly,
   weekly and daily periods; credit purchases and grants): `bean-check` wall time, and
   transactions per organization per period.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from beanbill.examples import CATALOG, SETTINGS  # noqa: E402
from beanbill.ledger.post import post, record_credit  # noqa: E402
from beanbill.rating.ingest import ingest  # noqa: E402
from beanbill.rating.periods import Month, parse_month_range  # noqa: E402
from beanbill.rating.rate import rate_months  # noqa: E402
from beanbill.rating.workspace import Workspace  # noqa: E402
from tests.support import write_jsonl, write_workspace  # noqa: E402

MODES = ("postpaid", "prepaid", "provisioned")


def make_workspace(root: Path, organizations: int, periods: tuple[str, ...]) -> Workspace:
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    customers = [
        {
            "id": f"org-{index:05d}",
            "name": f'Organization "{index}" ; \\ test',
            "address": ["1 Main Street"],
            "country": "FR",
            "email": f"billing@org{index}.example",
            "billing_mode": MODES[index % 3],
            "billing_period": periods[index % len(periods)],
        }
        for index in range(organizations)
    ]
    return write_workspace(root, SETTINGS, CATALOG, customers)


def daily_usage(workspace: Workspace, first: date, days: int) -> Path:
    """One vCPU-hour per organization per day, as JSON Lines."""
    records = (
        {
            "id": f"{customer.id}-{day}",
            "org": customer.id,
            "resource": "app",
            "meter": "cpu",
            "start": f"{day}T10:00:00Z",
            "end": f"{day}T11:00:00Z",
        }
        for customer in workspace.customers.customer
        for day in (date.fromordinal(first.toordinal() + offset) for offset in range(days))
    )
    return write_jsonl(workspace.root / "usage.jsonl", records)


def posting_throughput(data: Path) -> list[tuple[str, str]]:
    workspace = make_workspace(data / "post-10k", 10_000, ("monthly",))
    ingest(workspace, [daily_usage(workspace, date(2026, 10, 1), 1)])
    rate_months(workspace, [Month(2026, 10)])
    started = time.perf_counter()
    summary = post(workspace, Month(2026, 10), date(2026, 11, 22))
    seconds = time.perf_counter() - started
    text = (workspace.root / "books" / "2026-10" / "usage.beancount").read_bytes()
    floor_path = workspace.root / "floor.beancount"
    started = time.perf_counter()
    with floor_path.open("wb") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    floor_seconds = time.perf_counter() - started
    return [
        (
            "post 10k organizations × 1 period",
            f"{seconds:.2f} s, {summary.written / seconds:,.0f} entries/s",
        ),
        (
            "floor: plain write + fsync of the same text",
            f"{floor_seconds:.4f} s ({len(text) / 1e6:.1f} MB)",
        ),
        ("post / floor", f"{seconds / floor_seconds:,.0f}×"),
    ]


def year_check(data: Path) -> list[tuple[str, str]]:
    workspace = make_workspace(data / "year-1k", 1_000, ("monthly",) * 8 + ("weekly", "daily"))
    ingest(workspace, [daily_usage(workspace, date(2026, 1, 1), 365)])
    months = parse_month_range("2026-01..2026-12")
    rate_months(workspace, months)
    for customer in workspace.customers.customer[::2]:
        kind = "grant" if customer.billing_mode.value == "postpaid" else "purchase"
        record_credit(workspace, customer.id, kind, "5.00", date(2026, 1, 1), None, 10, None)
    post(workspace, Month(2026, 12), date(2027, 1, 10))
    bean_check = str(Path(sys.executable).with_name("bean-check"))
    started = time.perf_counter()
    result = subprocess.run(
        [bean_check, str(workspace.ledger_path)], capture_output=True, text=True
    )
    seconds = time.perf_counter() - started
    counted = subprocess.run(
        ["grep", "-rc", 'txn-id: "usage:', str(workspace.root / "books")],
        capture_output=True,
        text=True,
    ).stdout
    usage_transactions = sum(int(line.rsplit(":", 1)[1]) for line in counted.splitlines())
    all_transactions = sum(
        p.read_text().count("\n  txn-id:") for p in (workspace.root / "books").rglob("*.beancount")
    )
    periods = {"monthly": 12, "weekly": 52, "daily": 365}
    expected_periods = sum(periods[c.billing_period.value] for c in workspace.customers.customer)
    return [
        ("year, 1k organizations: entries in the ledger", f"{all_transactions:,}"),
        ("bean-check (plugin included)", f"{seconds:.1f} s, exit {result.returncode}"),
        (
            "usage transactions per organization per period",
            f"{usage_transactions / expected_periods:.2f}",
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT / "bench" / "data")
    arguments = parser.parse_args()
    rows: list[tuple[str, Any]] = []
    rows += posting_throughput(arguments.data)
    rows += year_check(arguments.data)
    print("| measure | result |\n|---|---|")
    for label, value in rows:
        print(f"| {label} | {value} |", flush=True)


if __name__ == "__main__":
    main()

"""The Fava billing pages' figures (``beanbill.ledger.fava_billing.billing``), on real books.

A demo workspace is rated, posted and invoiced by beanbill itself; the test then pays one
invoice in full and one in part, and cancels one with a credit note. The aging totals
are checked against the receivable balance beanquery computes on its own.

``build_books`` also gives the other pages something to show (tests/test_fava_pages.py):
a granted lot that expires unused, one that is partly used and expires later, and a sync
state with a synced invoice, a dead letter, a document to retry, webhook events waiting,
posted and quarantined, and a failed payment.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from beancount import loader
from beanquery.query import run_query
from fava.core import FavaLedger

from beanbill.ledger.accounts import BANK, organization_accounts
from beanbill.ledger.fava_billing.billing import (
    BUCKETS,
    InvoiceRow,
    Status,
    aging,
    aging_totals,
    bucket_of,
    invoices,
    selected,
    to_minor,
)
from beanbill.ledger.fava_billing.periods import page_date
from beanbill.ledger.invoicing.corrections import credit_note
from beanbill.ledger.invoicing.issue import issue
from beanbill.ledger.post import post, record_credit
from beanbill.rating.periods import Month
from beanbill.rating.workspace import SETTINGS_FILE, Workspace
from beanbill.sync.state import SqliteSyncState
from tests.support import rated_demo

EXTENSION_LINE = '2000-01-01 custom "fava-extension" "beanbill.fava_billing"\n'
TARGET = "stripe"
ISSUE_DAY = date(2026, 11, 22)
CREDIT_NOTE_DAY = date(2026, 11, 25)
PAYMENT_DAY = date(2026, 12, 1)


@dataclass(frozen=True)
class Books:
    workspace: Workspace
    credited: str  # invoice numbers
    paid: str
    part_paid: str
    prepayment: str
    credit_note: str
    expired_lot: str  # granted, expires before October's usage: written off whole
    expiring_lot: str  # granted, partly used in October, last valid day 2027-01-31


EXPIRED_GRANT = ("org-0002", "30.00", date(2026, 10, 1), date(2026, 10, 20))
EXPIRING_GRANT = ("org-0005", "1000.00", date(2026, 10, 1), date(2027, 1, 31))
QUARANTINE_REASON = "quarantined: KeyError: 'customer'"
DEAD_REASON = "PermanentError: No such customer: 'cus_gone'"
RETRY_REASON = "TransientError: timed out"


def record_sync_state(workspace: Workspace, synced: str, dead: str, retrying: str) -> None:
    """A Stripe target enabled, and its state as pushes and webhooks would leave it."""
    with (workspace.root / SETTINGS_FILE).open("a") as settings:
        settings.write("\n[sync.stripe]\nenabled = true\n")
    state = SqliteSyncState(workspace.state_dir)
    state.record_attempt(synced, TARGET, None)
    state.mark_synced(synced, TARGET, {"invoice": "in_synced"})
    state.record_attempt(dead, TARGET, DEAD_REASON)
    state.mark_dead(dead, TARGET, DEAD_REASON)
    state.record_attempt(retrying, TARGET, RETRY_REASON)
    for event in ("evt_waiting", "evt_posted", "evt_poisoned"):
        state.store_event(TARGET, event, "invoice.paid", {"id": event})
    state.mark_processed(TARGET, {"evt_posted": "posted", "evt_poisoned": QUARANTINE_REASON})
    state.set_status(TARGET, "in_failed", synced, "payment_failed", "payment failed")


def pay(workspace: Workspace, number: str, org: str, amount: Decimal, index: int) -> str:
    """A payment of ``amount`` against invoice ``number``, linked as beanbill's sync does."""
    receivable = organization_accounts(workspace.customers.customer)[org].receivable
    return (
        f'{PAYMENT_DAY.isoformat()} * "Payment of {number}" ^invoice-{number}\n'
        f'  txn-id: "test-payment:{index}"\n'
        f"  {BANK}  {amount} EUR\n"
        f"  {receivable}  {-amount} EUR\n\n"
    )


def grant(workspace: Workspace, org: str, amount: str, acquired: date, expires: date) -> str:
    """A promotional credit grant; its lot id."""
    lot, _ = record_credit(workspace, org, "grant", amount, acquired, expires, 10, None)
    return lot.lot_id


def build_books(root: Path) -> Books:
    """A demo workspace invoiced for October 2026, then paid and corrected in part."""
    workspace, _ = rated_demo(root, 8, seed=11)
    record_credit(workspace, "org-0003", "purchase", "50.00", date(2026, 10, 1), None, 100, None)
    expired, expiring = (grant(workspace, *lot) for lot in (EXPIRED_GRANT, EXPIRING_GRANT))
    post(workspace, Month(2026, 10), ISSUE_DAY)
    issued = issue(workspace, Month(2026, 10), ISSUE_DAY).issued
    assert len(issued) >= 3, issued
    credited, paid, part_paid = issued[:3]
    note, _ = credit_note(workspace, credited, CREDIT_NOTE_DAY, "Wrong customer address")
    rows = {row.number: row for row in invoices(load(workspace)[0], date(2026, 12, 31))}
    payments = workspace.root / "books" / "test-payments.beancount"
    payments.write_text(
        pay(workspace, paid, rows[paid].org, Decimal(rows[paid].total()), 1)
        + pay(workspace, part_paid, rows[part_paid].org, Decimal("10.00"), 2)
    )
    main = workspace.ledger_path
    assert EXTENSION_LINE in main.read_text()  # a new workspace's main file enables it
    main.write_text(main.read_text() + 'include "books/test-payments.beancount"\n')
    [prepayment] = [row.number for row in rows.values() if row.prepayment]
    record_sync_state(workspace, synced=paid, dead=part_paid, retrying=note)
    return Books(workspace, credited, paid, part_paid, prepayment, note, expired, expiring)


def load(workspace: Workspace) -> tuple[list[Any], dict[str, Any]]:
    entries, errors, options = loader.load_file(str(workspace.ledger_path))
    assert errors == []
    return entries, options


@pytest.fixture(scope="module")
def books(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Books]:
    yield build_books(tmp_path_factory.mktemp("billing") / "demo")


def by_number(rows: list[InvoiceRow]) -> dict[str, InvoiceRow]:
    return {row.number: row for row in rows}


def receivable_balance(entries: list[Any], options: dict[str, Any], as_of: date) -> int:
    """The Assets:Receivable balance at ``as_of`` as beanquery computes it, in cents."""
    _, rows = run_query(
        entries,
        options,
        "SELECT sum(number) AS owed WHERE account ~ '^Assets:Receivable:' "
        f"AND date <= {as_of.isoformat()}",
    )
    [(owed,)] = rows
    return to_minor(owed or Decimal(0), "EUR")


def receivable_per_org(entries: list[Any], options: dict[str, Any], as_of: date) -> dict[str, int]:
    _, rows = run_query(
        entries,
        options,
        "SELECT open_meta(account, 'org-id') AS org, sum(number) AS owed "
        f"WHERE account ~ '^Assets:Receivable:' AND date <= {as_of.isoformat()} GROUP BY org",
    )
    return {str(org): to_minor(owed, "EUR") for org, owed in rows if owed}


def test_statuses_follow_payments_credit_notes_and_the_due_date(books: Books) -> None:
    entries, _ = load(books.workspace)
    before_due = by_number(invoices(entries, date(2026, 12, 10)))
    after_due = by_number(invoices(entries, date(2027, 1, 15)))
    for rows in (before_due, after_due):
        assert rows[books.credited].status is Status.CREDITED
        assert rows[books.credited].credit_note == books.credit_note
        assert rows[books.credited].credit_note_pdf is not None
        assert rows[books.credited].outstanding_minor == 0
        assert rows[books.paid].status is Status.PAID
        assert rows[books.prepayment].status is Status.PAID
        assert rows[books.prepayment].total_minor == 6000  # 50.00 of credit and its VAT
    part = after_due[books.part_paid]
    assert part.due is not None and date(2026, 12, 10) <= part.due < date(2027, 1, 15)
    assert before_due[books.part_paid].status is Status.OPEN
    assert part.status is Status.OVERDUE
    assert part.outstanding_minor == part.total_minor - 1000
    assert all(row.pdf and row.pdf.endswith(f"{row.number}.pdf") for row in after_due.values())
    # Before the credit note, the first invoice was still open.
    assert by_number(invoices(entries, ISSUE_DAY))[books.credited].status is Status.OPEN
    # Nothing is issued yet on a day before the first issue.
    assert [row.number for row in invoices(entries, date(2026, 9, 30))] == []


@pytest.mark.parametrize(
    "as_of",
    [
        ISSUE_DAY,
        PAYMENT_DAY,
        date(2027, 1, 10),
        date(2027, 2, 1),
        date(2027, 3, 5),
        date(2027, 6, 1),
    ],
)
def test_aging_totals_equal_the_receivable_balance_to_the_cent(books: Books, as_of: date) -> None:
    entries, options = load(books.workspace)
    rows = aging(entries, as_of)
    [(currency, totals)] = aging_totals(rows).items() or [("EUR", (0,) * (len(BUCKETS) + 2))]
    assert currency == "EUR"
    assert totals[-1] == receivable_balance(entries, options, as_of) != 0
    assert {row.org: row.total_minor for row in rows} == receivable_per_org(entries, options, as_of)
    assert all(row.unallocated_minor == 0 for row in rows)  # every movement is linked
    # The open invoices' outstanding amounts land in their bucket of days past due.
    expected = [0] * len(BUCKETS)
    for row in invoices(entries, as_of):
        if row.status in (Status.OPEN, Status.OVERDUE):
            assert row.due is not None
            expected[bucket_of((as_of - row.due).days)] += row.outstanding_minor
    assert list(totals[: len(BUCKETS)]) == expected


def test_buckets_start_and_end_where_their_labels_say() -> None:
    assert [bucket_of(days) for days in (-5, 0, 1, 30, 31, 60, 61, 90, 91, 400)] == [
        0, 0, 1, 1, 2, 2, 3, 3, 4, 4,
    ]  # fmt: skip
    assert [label for label, _ in BUCKETS] == ["current", "1–30", "31–60", "61–90", "> 90"]


def test_the_pages_filter_by_customer_and_status(books: Books) -> None:
    entries, _ = load(books.workspace)
    rows = invoices(entries, date(2027, 1, 15))
    paid = by_number(rows)[books.paid]
    assert [row.number for row in selected(rows, status="credited")] == [books.credited]
    assert paid in selected(rows, org=paid.org, status="paid")
    assert all(row.org == paid.org for row in selected(rows, org=paid.org))
    assert selected(rows) == rows


def test_the_page_date_is_the_parameter_else_the_time_filter_else_today() -> None:
    today, end = date(2026, 11, 30), date(2026, 10, 31)
    assert page_date("2027-01-15", end, today) == date(2027, 1, 15)
    assert page_date("not a date", end, today) == end
    assert page_date(None, None, today) == today


def test_amounts_are_never_rounded_into_minor_units() -> None:
    assert to_minor(Decimal("1072.31"), "EUR") == 107231
    assert to_minor(Decimal("-5"), "JPY") == -5
    with pytest.raises(ValueError, match="whole number of minor units"):
        to_minor(Decimal("0.005"), "EUR")


def test_fava_loads_the_extension_from_the_custom_line(books: Books) -> None:
    ledger = FavaLedger(str(books.workspace.ledger_path))
    assert ledger.errors == []
    extension = ledger.extensions.get_extension("BillingReport")
    assert extension is not None and extension.report_title == "Billing"


UNLINKED = """
2000-01-01 open Assets:Receivable:Acme EUR
  org-id: "acme"
  org-name: "Acme Ltd"
2000-01-01 open Income:Services EUR
2000-01-01 open Assets:Bank:Operating EUR

2026-11-01 * "Invoice INV-1" ^invoice-INV-1
  invoice-number: "INV-1"
  due-date: 2026-11-15
  Assets:Receivable:Acme  100.00 EUR
  Income:Services  -100.00 EUR

2026-11-20 * "A payment nobody linked"
  Assets:Bank:Operating  30.00 EUR
  Assets:Receivable:Acme  -30.00 EUR
"""


def test_a_receivable_movement_without_an_invoice_link_is_unallocated_not_lost() -> None:
    entries, errors, _ = loader.load_string(UNLINKED)
    assert errors == []
    [row] = aging(entries, date(2026, 12, 1))
    assert (row.org, row.org_name, row.currency) == ("acme", "Acme Ltd", "EUR")
    assert row.buckets_minor == (0, 10000, 0, 0, 0)  # 16 days past due
    assert (row.unallocated_minor, row.total_minor) == (-3000, 7000)
    [invoice] = invoices(entries, date(2026, 12, 1))
    assert (invoice.status, invoice.outstanding_minor) == (Status.OVERDUE, 10000)

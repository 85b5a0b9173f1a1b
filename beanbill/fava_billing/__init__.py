"""beanbill's billing pages in Fava: invoices, receivables, credits, revenue and sync.

Enabled by the main ledger file (``ledger.main_file`` writes it)::

    2000-01-01 custom "fava-extension" "beanbill.fava_billing"

Read-only. Built like the well-kept Fava extensions (fava-investor, fava-dashboards): a
thin ``FavaExtensionBase`` subclass that reads the request (tab, filters, the page's
date) and hands typed rows from pure, separately tested functions to one report
template (``templates/BillingReport.html``, one partial per tab). The ledger's figures
come from ``beanbill.ledger.fava_billing``; the sync state (which the ledger layer may
not read) from ``beanbill.sync.attention``, through ``sync_view``.
"""

from __future__ import annotations

from datetime import date
from functools import cached_property
from pathlib import Path

from fava.ext import FavaExtensionBase
from flask import g, request

from beanbill.fava_billing.chart import Chart, layout
from beanbill.fava_billing.sync_view import FoundWorkspace, SyncView, find_workspace, read_sync
from beanbill.ledger.entries import format_minor
from beanbill.ledger.fava_billing.billing import (
    BUCKETS,
    AgingRow,
    InvoiceRow,
    Status,
    aging,
    aging_totals,
    customers,
    documents_to_push,
    invoices,
    selected,
)
from beanbill.ledger.fava_billing.credits import (
    EXPIRING_WITHIN_DAYS,
    CustomerCredits,
    LotRow,
    credit_totals,
    customer_credits,
    expiring,
    lots,
    unbilled,
)
from beanbill.ledger.fava_billing.periods import (
    MONTHS_SHOWN_BY_DEFAULT,
    month_of,
    months_before,
    months_between,
    page_date,
    parse_month,
)
from beanbill.ledger.fava_billing.revenue import RevenueTable, income_months, revenue

TABS = ("invoices", "receivables", "credits", "revenue", "sync")


class BillingReport(FavaExtensionBase):
    """The billing pages, one tab each (``?tab=``), as at the page's date (``?as-of=``)."""

    report_title = "Billing"

    # -- the request: tab, date, filters --------------------------------------------------

    def tab(self) -> str:
        tab = request.args.get("tab", TABS[0])
        return tab if tab in TABS else TABS[0]

    def tabs(self) -> tuple[str, ...]:
        return TABS

    def as_of(self) -> date:
        date_range = getattr(g.filtered, "date_range", None)
        end = date_range.end_inclusive if date_range else None
        return page_date(request.args.get("as-of"), end, date.today())

    def customer(self) -> str:
        return request.args.get("customer", "")

    def customers(self) -> list[tuple[str, str]]:
        """(org id, name) of every customer, for the filter."""
        found = customers(self.ledger.all_entries).values()
        return sorted({(customer.org, customer.name) for customer in found})

    def names(self) -> dict[str, str]:
        return dict(self.customers())

    def money(self, amount_minor: int, currency: str) -> str:
        return format_minor(amount_minor, currency)

    def _mine(self, org: str) -> bool:
        customer = self.customer()
        return not customer or org == customer

    # -- invoices and receivables -------------------------------------------------------

    def statuses(self) -> list[str]:
        return [status.value for status in Status]

    def issue_months(self) -> tuple[str | None, str | None]:
        """The months invoices were issued in that the page shows (``?from=``/``?to=``,
        else from the start of Fava's time filter); None leaves that end open."""
        first = parse_month(request.args.get("from"))
        date_range = getattr(g.filtered, "date_range", None)
        if first is None and date_range is not None:
            first = month_of(date_range.begin)
        return first, parse_month(request.args.get("to"))

    def invoice_rows(self) -> list[InvoiceRow]:
        rows = invoices(self.ledger.all_entries, self.as_of())
        first, last = self.issue_months()
        rows = [
            row
            for row in rows
            if (first is None or month_of(row.issued) >= first)
            and (last is None or month_of(row.issued) <= last)
        ]
        return selected(rows, self.customer(), request.args.get("status"))

    def aging_rows(self) -> list[AgingRow]:
        return [row for row in aging(self.ledger.all_entries, self.as_of()) if self._mine(row.org)]

    def aging_totals(self, rows: list[AgingRow]) -> dict[str, tuple[int, ...]]:
        return aging_totals(rows)

    def buckets(self) -> list[str]:
        return [label for label, _ in BUCKETS]

    # -- credits -----------------------------------------------------------------------

    def credit_rows(self) -> list[CustomerCredits]:
        rows = customer_credits(self.ledger.all_entries, self.as_of())
        return [row for row in rows if self._mine(row.org)]

    def credit_totals(self, rows: list[CustomerCredits]) -> dict[str, tuple[int, int, int, int]]:
        return credit_totals(rows)

    def lot_rows(self) -> list[LotRow]:
        return [row for row in lots(self.ledger.all_entries, self.as_of()) if self._mine(row.org)]

    def expiring_rows(self, rows: list[LotRow]) -> list[LotRow]:
        return expiring(rows)

    def expiring_days(self) -> int:
        return EXPIRING_WITHIN_DAYS

    # -- revenue -----------------------------------------------------------------------

    def months(self) -> list[str]:
        """The months shown: ``?from=``/``?to=`` (YYYY-MM), else Fava's time filter, else
        the twelve months up to the page's date that have income."""
        as_of = self.as_of()
        last = parse_month(request.args.get("to")) or month_of(as_of)
        first = parse_month(request.args.get("from"))
        date_range = getattr(g.filtered, "date_range", None)
        if first is None and date_range is not None:
            first = month_of(date_range.begin)
        if first is None:
            booked = income_months(self.ledger.all_entries, as_of)
            first = max([months_before(last, MONTHS_SHOWN_BY_DEFAULT), *booked[:1]])
        return months_between(first, last)

    def revenue_tables(self, months: list[str]) -> list[RevenueTable]:
        return revenue(self.ledger.all_entries, self.as_of(), months, self.customer() or None)

    def chart(self, table: RevenueTable) -> Chart:
        return layout(table)

    def unbilled_rows(self) -> list[tuple[str, str, int]]:
        """(org, currency, unbilled minor units) at the page's date, by organization."""
        found = unbilled(self.ledger.all_entries, self.as_of())
        return [(org, cur, amount) for (org, cur), amount in found.items() if self._mine(org)]

    def unbilled_totals(self, rows: list[tuple[str, str, int]]) -> dict[str, int]:
        totals: dict[str, int] = {}
        for _, currency, amount in rows:
            totals[currency] = totals.get(currency, 0) + amount
        return dict(sorted(totals.items()))

    # -- sync --------------------------------------------------------------------------

    @cached_property
    def workspace(self) -> FoundWorkspace:
        """Found once: the ledger's path does not change while Fava serves it."""
        return find_workspace(Path(self.ledger.beancount_file_path))

    def sync(self) -> SyncView:
        return read_sync(self.workspace, documents_to_push(self.ledger.all_entries, self.as_of()))

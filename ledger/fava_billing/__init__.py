"""A read-only Fava extension: the invoices issued and the receivables' aging.

Enable it in the main ledger file with::

    2000-01-01 custom "fava-extension" "beanbill.ledger.fava_billing"

The figures come from ``billing`` (pure, tested without Fava); this class only picks the
page's date and filters from the request and hands rows to the template.
"""

from __future__ import annotations

from datetime import date

from fava.ext import FavaExtensionBase
from flask import g, request

from beanbill.ledger.entries import format_minor
from beanbill.ledger.fava_billing.billing import (
    BUCKETS,
    AgingRow,
    InvoiceRow,
    Status,
    aging,
    aging_totals,
    customers,
    invoices,
    selected,
)

TABS = ("invoices", "receivables")


def page_date(argument: str | None, filter_end: date | None, today: date) -> date:
    """The date the page is as at: ``?as-of=``, else the last day of Fava's time filter,
    else today. An invoice is overdue, and aged, relative to it."""
    if argument:
        try:
            return date.fromisoformat(argument)
        except ValueError:
            pass
    return filter_end or today


class BillingReport(FavaExtensionBase):
    """Invoices (with status, due date, PDF) and receivables aging, as Fava pages."""

    report_title = "Billing"

    def as_of(self) -> date:
        date_range = getattr(g.filtered, "date_range", None)
        end = date_range.end_inclusive if date_range else None
        return page_date(request.args.get("as-of"), end, date.today())

    def tab(self) -> str:
        tab = request.args.get("tab", TABS[0])
        return tab if tab in TABS else TABS[0]

    def invoice_rows(self) -> list[InvoiceRow]:
        rows = invoices(self.ledger.all_entries, self.as_of())
        return selected(rows, request.args.get("customer"), request.args.get("status"))

    def aging_rows(self) -> list[AgingRow]:
        rows = aging(self.ledger.all_entries, self.as_of())
        customer = request.args.get("customer")
        return [row for row in rows if not customer or row.org == customer]

    def aging_totals(self, rows: list[AgingRow]) -> dict[str, tuple[int, ...]]:
        return aging_totals(rows)

    def customers(self) -> list[tuple[str, str]]:
        """(org id, name) of every customer, for the filter."""
        found = customers(self.ledger.all_entries).values()
        return sorted({(customer.org, customer.name) for customer in found})

    def statuses(self) -> list[str]:
        return [status.value for status in Status]

    def buckets(self) -> list[str]:
        return [label for label, _ in BUCKETS]

    def money(self, amount_minor: int, currency: str) -> str:
        return format_minor(amount_minor, currency)

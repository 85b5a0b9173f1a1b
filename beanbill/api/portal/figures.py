"""The figures of the portal's pages, read through the API's own functions.

Nothing here computes billing: usage comes from ``beanbill.api.usage.report`` (closed
periods, as rated), invoices, payment histories and all payments from
``beanbill.api.invoices`` (the Fava billing page's status and outstanding amounts),
credits from the same pure ledger functions as ``/v1/organizations/{org}/credits``. So a
page and the API agree, figure for figure. Every function takes the API's ``Caller`` and
an organization it has already ``require``d.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from beanbill.api import invoices as invoice_api
from beanbill.api import usage as usage_api
from beanbill.api.auth import Caller
from beanbill.api.invoices import InvoiceSummary, Movement, Payment
from beanbill.api.problems import NotFound, Unavailable
from beanbill.ledger.fava_billing.billing import Status
from beanbill.ledger.fava_billing.credits import CustomerCredits, LotRow, customer_credits, lots
from beanbill.rating.config import Customer
from beanbill.rating.periods import Month

OUTSTANDING = (Status.OPEN, Status.OVERDUE)


@dataclass(frozen=True)
class MonthCost:
    """What a month's posted (closed) periods cost, and whether open usage is included."""

    month: Month
    amount: Decimal
    currency: str
    periods: int
    provisional: bool  # True: the open period's provisional usage is included


@dataclass(frozen=True)
class Team:
    customer: Customer
    this_month: MonthCost
    last_month: MonthCost


@dataclass(frozen=True)
class CreditsView:
    account: CustomerCredits | None
    lots: list[LotRow]


@dataclass(frozen=True)
class InvoiceView:
    summary: InvoiceSummary
    movements: list[Movement]


def customer_of(caller: Caller, org: str) -> Customer:
    [customer] = [c for c in caller.context.workspace.customers.customer if c.id == org]
    return customer


def teams_of(caller: Caller, org: str) -> list[Customer]:
    """The teams ``org`` invoices centrally that this key sees (a parent's key: all)."""
    return [
        customer
        for customer in caller.context.workspace.customers.customer
        if customer.parent == org and customer.id in caller.organizations
    ]


def usage_report(caller: Caller, org: str, month: Month) -> usage_api.UsageReport:
    return usage_api.report(caller, org, month)


def provisional_shown() -> bool:
    """Whether the usage report includes open periods' provisional figures (each period
    flagged ``provisional``); if not, the portal shows what is posted, and says so."""
    return "provisional" in usage_api.PeriodUsage.model_fields


def _forecast_function() -> Callable[[Caller, str], Any] | None:
    """``beanbill.api.forecast.forecast_of`` when the API offers forecasts."""
    try:
        module = importlib.import_module("beanbill.api.forecast")
    except ImportError:
        return None
    found = getattr(module, "forecast_of", None)
    return found if callable(found) else None


def forecast_of(caller: Caller, org: str) -> Any | None:
    """The API's forecast of ``org``'s current period (its ``Forecast`` answer), or None
    when the API has none or it cannot be computed now (the page shows the rest)."""
    function = _forecast_function()
    if function is None:
        return None
    try:
        return function(caller, org)
    except Unavailable:
        return None


def month_cost(caller: Caller, org: str, month: Month) -> MonthCost:
    report = usage_report(caller, org, month)
    amount = sum((Decimal(period.amount) for period in report.periods), Decimal(0))
    return MonthCost(month, amount, report.currency, len(report.periods), report.provisional)


def credits_of(caller: Caller, org: str) -> CreditsView:
    entries = caller.context.ledger.entries()
    today = caller.context.today()
    account = next((row for row in customer_credits(entries, today) if row.org == org), None)
    return CreditsView(account, [row for row in lots(entries, today) if row.org == org])


def invoices_of(caller: Caller, org: str) -> list[InvoiceSummary]:
    """``org``'s invoices (a parent's central invoices are its own), newest first."""
    visible, _ = invoice_api.visible_invoices(caller)
    rows = [row for row in visible.rows if row.org == org]
    return [invoice_api.summary_of(caller, row) for row in reversed(rows)]


def outstanding_of(summaries: list[InvoiceSummary]) -> dict[str, int]:
    """Currency → what ``summaries`` still owe (open and overdue invoices)."""
    owed: dict[str, int] = {}
    for summary in summaries:
        if summary.status in OUTSTANDING:
            owed[summary.currency] = owed.get(summary.currency, 0) + summary.outstanding_minor
    return owed


def invoice_of(caller: Caller, org: str, number: str) -> InvoiceView:
    """One of ``org``'s invoices and its payment history; any other is "not found"."""
    visible, entries = invoice_api.visible_invoices(caller)
    row = visible.by_number.get(number)
    if row is None or row.org != org:
        raise NotFound(f"no invoice {number!r}")
    movements = invoice_api.invoice_movements(entries, row, caller.context.today())
    return InvoiceView(invoice_api.summary_of(caller, row), movements)


def payments_of(caller: Caller, org: str) -> list[Payment]:
    """``org``'s payments, refunds and credit notes (a parent's teams' too), newest first:
    the list of ``/v1/organizations/{org}/payments``, read by the same function."""
    return list(reversed(invoice_api.organization_payments(caller, org)))


def document_path(caller: Caller, org: str, number: str, kind: str) -> tuple[Path, str]:
    """The file of an invoice or credit note of ``org`` (the API's lookup and names):
    its path and media type; anything else is "not found"."""
    if kind not in invoice_api.FILE_KINDS:
        raise NotFound(f"no file kind {kind!r}")
    _, _, owner = invoice_api.find_invoice(caller, number)
    if owner != org:
        raise NotFound(f"no invoice or credit note {number!r}")
    suffix, media_type, _ = invoice_api.FILE_KINDS[kind]
    path = caller.context.workspace.invoices_dir / f"{number}.{suffix}"
    if not path.is_file():
        raise NotFound(f"the file {path.name} is missing")
    return path, media_type

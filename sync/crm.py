"""The billing picture of each organization, kept current in a CRM after every push and
reconciliation, so that sales and support see what a customer owes.

A CRM is not a document target: it receives no invoice, it mirrors a few figures per
organization (``CompanyBilling``), derived here from the ledger, the numbering state and
the rated usage. A CRM connector (``connectors/hubspot.py``) implements ``Crm``: it makes
sure its custom properties exist (``check``) and upserts companies by beanbill's
organization id, so a retry can never create a second company.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from enum import StrEnum
from typing import Any, NamedTuple, Protocol, runtime_checkable

from beanbill.ledger.books import load_books
from beanbill.ledger.fava_billing.billing import Status, days_past_due, invoices
from beanbill.ledger.fava_billing.credits import LotState, customer_credits, lots
from beanbill.rating.config import Customer
from beanbill.rating.consumption import atto_to_minor, consumption_atto
from beanbill.rating.money import currency_digits
from beanbill.rating.rated_store import RatedStore
from beanbill.rating.workspace import Workspace
from beanbill.sync.retry import PermanentError, TransientError
from beanbill.sync.state import SyncState

CONSUMPTION_DAYS = 30
MAX_ORGANIZATIONS = 1_000_000


class InvoiceStatus(StrEnum):
    """The last invoice's status as the CRM shows it."""

    OPEN = "open"  # issued, not yet due, something left to pay
    OVERDUE = "overdue"  # past its due date, something left to pay
    PAID = "paid"  # nothing left to pay
    CREDITED = "credited"  # cancelled by a credit note


@dataclass(frozen=True)
class CompanyBilling:
    """One organization's billing figures on ``as_of``; amounts in minor units of
    ``currency`` (a CRM shows them in major units, exactly)."""

    org: str
    name: str
    country: str
    currency: str
    as_of: date
    balance_due_minor: int  # everything issued and not yet paid
    overdue_minor: int  # of it, past its due date
    overdue_days: int  # days past due of the oldest overdue invoice; 0: none overdue
    last_invoice_number: str | None
    last_invoice_date: date | None
    last_invoice_amount_minor: int | None  # its total, VAT included
    last_invoice_status: InvoiceStatus | None
    credit_balance_minor: int  # prepaid and granted credit left
    credit_soonest_expiry: date | None  # the last valid day of the lot that expires first
    consumption_30_days_minor: int  # rated usage of the 30 days up to ``as_of``, VAT excluded


class CompanyResult(NamedTuple):
    """What became of one organization's upsert: its company id, or why not."""

    org: str
    remote_id: str | None
    error: str | None  # None: upserted


@runtime_checkable
class Crm(Protocol):
    """What a CRM connector implements."""

    name: str

    def check(self) -> None:
        """Make sure the custom properties exist (creating the missing ones once); raises
        ``TransientError`` or ``PermanentError`` (``sync.retry``) when it cannot."""
        ...

    def upsert_companies(self, companies: Sequence[CompanyBilling]) -> list[CompanyResult]:
        """Create or update each organization's company, in batches; one result per
        organization, in the order given. A batch the CRM refuses makes each of its
        organizations an error with the CRM's message; nothing raises for one batch."""
        ...


@dataclass
class CrmReport:
    """One CRM's update: how many companies were upserted, left as they were (nothing
    changed since the last upsert), and refused (org, the CRM's message)."""

    target: str
    upserted: int = 0
    unchanged: int = 0
    refused: list[tuple[str, str]] = field(default_factory=list)
    unstarted: str | None = None  # why nothing was tried (properties, token, network)

    @property
    def needs_attention(self) -> bool:
        return bool(self.refused or self.unstarted)


def company_billing(
    entries: Sequence[Any],
    customers: Sequence[Customer],
    consumption_minor: Mapping[str, int],
    as_of: date,
) -> list[CompanyBilling]:
    """Each organization's figures on ``as_of``, from the books (a pure function).

    The last invoice is the last consumption invoice (prepayment invoices, paid when
    bought, say nothing of what is owed); a team's usage is invoiced to its parent, so a
    team's invoice figures are its parent's invoices' only when it pays them itself.
    """
    rows = [row for row in invoices(entries, as_of) if not row.prepayment]
    by_org: dict[str, list[Any]] = {}
    for row in rows:
        by_org.setdefault(row.org, []).append(row)
    credits = {credit.org: credit for credit in customer_credits(entries, as_of)}
    expiries: dict[str, date] = {}
    for lot in lots(entries, as_of):
        if lot.expires is None or lot.remaining_minor <= 0 or lot.state is LotState.EXPIRED:
            continue
        expiries[lot.org] = min(lot.expires, expiries.get(lot.org, lot.expires))
    companies = []
    for customer in customers:
        mine = by_org.get(customer.id, [])
        unpaid = [r for r in mine if r.status in (Status.OPEN, Status.OVERDUE)]
        overdue = [r for r in unpaid if r.status is Status.OVERDUE]
        last = mine[-1] if mine else None
        credit = credits.get(customer.id)
        companies.append(
            CompanyBilling(
                org=customer.id,
                name=customer.name,
                country=customer.country,
                currency=customer.currency,
                as_of=as_of,
                balance_due_minor=sum(r.outstanding_minor for r in unpaid),
                overdue_minor=sum(r.outstanding_minor for r in overdue),
                overdue_days=max(
                    (days_past_due(r.due, r.issued, as_of) for r in overdue), default=0
                ),
                last_invoice_number=last.number if last else None,
                last_invoice_date=last.issued if last else None,
                last_invoice_amount_minor=last.total_minor if last else None,
                last_invoice_status=InvoiceStatus(last.status.value) if last else None,
                credit_balance_minor=credit.balance_minor if credit else 0,
                credit_soonest_expiry=expiries.get(customer.id),
                consumption_30_days_minor=consumption_minor.get(customer.id, 0),
            )
        )
    return companies


def digest(company: CompanyBilling) -> str:
    """What was sent, as a digest: an organization whose figures have not changed since
    its last upsert is not sent again (re-running changes nothing)."""
    values = {key: value for key, value in asdict(company).items() if key != "as_of"}
    text = json.dumps(values, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def workspace_companies(workspace: Workspace, as_of: date) -> list[CompanyBilling]:
    """Every organization's figures from the workspace's books and rated usage."""
    customers = workspace.customers.customer
    if len(customers) > MAX_ORGANIZATIONS:
        raise PermanentError(f"{len(customers):,} organizations: at most {MAX_ORGANIZATIONS:,}")
    books = load_books(workspace.ledger_path, workspace.settings.billing.currency)
    first_day = as_of - timedelta(days=CONSUMPTION_DAYS - 1)
    with RatedStore(workspace) as store:
        atto = consumption_atto(store, first_day, as_of)
    consumption = {
        customer.id: atto_to_minor(atto.get(customer.id, 0), currency_digits(customer.currency))
        for customer in customers
    }
    return company_billing(books.entries, customers, consumption, as_of)


def update_crm(crm: Crm, state: SyncState, companies: Sequence[CompanyBilling]) -> CrmReport:
    """Upsert the organizations whose figures changed (or were refused last time); each
    outcome is recorded in the sync state, so a crash mid-way re-sends at most what was in
    flight, and an upsert by unique property makes that harmless."""
    report = CrmReport(crm.name)
    try:
        crm.check()
    except (TransientError, PermanentError) as error:
        report.unstarted = str(error)
        return report
    known = state.crm_companies(crm.name)
    changed = []
    for company in companies:
        record = known.get(company.org)
        sent = digest(company)
        if record is not None and record.digest == sent and record.last_error is None:
            report.unchanged += 1
        else:
            changed.append((company, sent))
    results = crm.upsert_companies([company for company, _ in changed])
    if [result.org for result in results] != [company.org for company, _ in changed]:
        raise PermanentError(f"{crm.name}: the upsert answered for other organizations")
    for (company, sent), result in zip(changed, results, strict=True):
        if result.error is None:
            state.record_crm(crm.name, company.org, sent, result.remote_id, None)
            report.upserted += 1
        else:
            state.record_crm(crm.name, company.org, None, None, result.error)
            report.refused.append((company.org, result.error))
    return report

"""`beanbill post` and `beanbill credits`: from rated output and commands to the ledger."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal, InvalidOperation

from beanbill.ledger import keys
from beanbill.ledger.accounts import (
    ACCOUNTS_FILE,
    BOOKS_OPEN_DATE,
    OrganizationAccounts,
    house_opens,
    organization_accounts,
    organization_opens,
)
from beanbill.ledger.books import LOT_KEY, Books, CreditLot, UsageVersion, load_books
from beanbill.ledger.entries import Entry, Transaction, minor_digits
from beanbill.ledger.posting import (
    PeriodUsage,
    consumption_entry,
    correction_txn_id,
    credit_entry,
    expiry_entry,
    reversal_entry,
)
from beanbill.ledger.writer import LedgerWriter
from beanbill.rating.closures import ClosedPeriods
from beanbill.rating.config import IDENTIFIER_PATTERN, PostingGranularity
from beanbill.rating.errors import BeanbillError
from beanbill.rating.periods import Month
from beanbill.rating.progress import Progress, no_progress
from beanbill.rating.rated_store import RatedStore
from beanbill.rating.workspace import Workspace

MAX_CREDIT_MINOR = 10**15


class PostingError(BeanbillError):
    """A posting or credit command cannot be carried out as asked."""


@dataclass(frozen=True)
class PostSummary:
    periods: int
    written: int
    unchanged: int
    expiries: int


def read_period_usage(workspace: Workspace, up_to: Month, as_of: date) -> list[PeriodUsage]:
    """Closed periods (ended on or before ``as_of``) of every rated month up to ``up_to``.

    With ``ledger.granularity = "daily"`` each day of a closed period is its own posting.
    """
    customers = workspace.customers.by_id()
    modes = {customer.id: customer.billing_mode for customer in customers.values()}
    daily = workspace.settings.ledger.granularity is PostingGranularity.DAILY
    with RatedStore(workspace) as store:
        totals = store.closed_totals(up_to, as_of, daily)
    usages: list[PeriodUsage] = []
    for total in totals:
        if total.org not in modes:
            raise PostingError(
                f"{total.rated_file}: organization {total.org!r} is no longer a customer"
            )
        usages.append(
            PeriodUsage(
                org=total.org,
                billing_mode=modes[total.org],
                period=total.period,
                period_start=total.period_start,
                period_end=total.period_end,
                family_atto=total.family_atto,
                rated_checksum=total.checksum,
                rated_file=total.rated_file,
                day=total.day,
                through=total.through,
                name=customers[total.org].name,
                payer=customers[total.org].parent or total.org,
            )
        )
    return usages


def _file_for(entry: Entry, kind: str) -> str:
    return f"books/{entry.date:%Y-%m}/{kind}.beancount"


def open_accounts(workspace: Workspace, books: Books, writer: LedgerWriter) -> None:
    """Every account a posting may need, opened before it is needed (never twice)."""
    currency = workspace.settings.billing.currency
    already = books.open_accounts()
    opens = house_opens(workspace.settings, workspace.catalog, currency, already)
    opens += organization_opens(workspace.customers.customer, currency, already)
    if opens:
        writer.append(ACCOUNTS_FILE, opens)


@dataclass(frozen=True)
class Plan:
    """How one closed period is posted: first time, as it already is, or corrected."""

    usage: PeriodUsage
    version: UsageVersion | None  # None: the period's first posting
    reverses: str | None  # the txn-id a correction cancels first


def plan_periods(books: Books, usages: list[PeriodUsage], as_of: date, correct: bool) -> list[Plan]:
    """Compare rated totals with what is posted; changed periods need ``correct``."""
    active = books.usage_versions()
    known = books.txn_ids()
    plans: list[Plan] = []
    changed: list[str] = []
    for usage in usages:
        current = active.get(usage.key)
        corrected = UsageVersion(correction_txn_id(usage), as_of, usage.rated_checksum)
        if current is None:
            plans.append(Plan(usage, corrected if usage.txn_id in known else None, None))
        elif current.checksum == usage.rated_checksum:
            plans.append(Plan(usage, current, None))
        else:
            changed.append(current.txn_id)
            plans.append(Plan(usage, corrected, current.txn_id))
    if changed and not correct:
        listing = ", ".join(changed[:10]) + (" …" if len(changed) > 10 else "")
        raise PostingError(
            f"{len(changed)} posted period(s) were re-rated with other amounts: {listing}. "
            "Closed periods never change: run `beanbill post --correct` to post a reversal "
            "and the corrected consumption, dated today."
        )
    return plans


def post(
    workspace: Workspace,
    up_to: Month,
    as_of: date,
    correct: bool = False,
    progress: Progress = no_progress,
) -> PostSummary:
    """Post every closed billing period of rated months up to ``up_to``, and due expiries."""
    currency = workspace.settings.billing.currency
    digits = minor_digits(currency)
    with workspace.writing():
        writer = LedgerWriter(workspace.ledger_path)
        books = load_books(workspace.ledger_path, currency)
        open_accounts(workspace, books, writer)  # opens change no balance: no reload
        accounts = organization_accounts(workspace.customers.customer)
        names = {customer.id: customer.name for customer in workspace.customers.customer}
        usages = read_period_usage(workspace, up_to, as_of)
        plans = plan_periods(books, usages, as_of, correct)
        lots = books.lots()
        horizon = min(as_of, up_to.next().first_day)
        expiring = [
            lot for lot in lots.values()
            if lot.expires is not None and lot.expires + timedelta(days=1) <= horizon
        ]  # fmt: skip
        regenerated = {plan.version.txn_id if plan.version else plan.usage.txn_id for plan in plans}
        regenerated |= {keys.expiry_txn_id(lot.lot_id) for lot in expiring}
        remaining = books.lot_remaining(regenerated)
        lots_by_org: dict[str, list[CreditLot]] = defaultdict(list)
        for lot in lots.values():
            lots_by_org[lot.org].append(lot)
        timeline: list[tuple[date, int, str, Plan | CreditLot]] = [
            (plan.usage.last_day, 0, plan.usage.org, plan) for plan in plans
        ]
        timeline += [
            (lot.expires + timedelta(days=1), 1, lot.org, lot) for lot in expiring if lot.expires
        ]
        timeline.sort(key=lambda item: (item[0], item[1], item[2]))
        files: dict[str, list[Entry]] = defaultdict(list)
        expiries = 0
        for index, (_, _, org, item) in enumerate(timeline, start=1):
            progress(index, len(timeline))
            if isinstance(item, Plan):
                entries = _period_entries(item, books, accounts[org], lots_by_org[org],
                                          remaining, currency, digits)  # fmt: skip
            else:
                expiry = expiry_entry(item, remaining.get(item.lot_id, 0), accounts[org],
                                      currency, names[org])  # fmt: skip
                entries = [(expiry, "credits")] if expiry else []
                if expiry is not None:
                    remaining[item.lot_id] = 0
                    expiries += 1
            for entry, kind in entries:
                files[_file_for(entry, kind)].append(entry)
        written = unchanged = 0
        for path in sorted(files):
            result = writer.append(path, files[path])
            written += result.written
            unchanged += result.unchanged
        closed = {(usage.org, usage.period) for usage in usages}
        ClosedPeriods(workspace.state_dir).close(sorted(closed))
    return PostSummary(periods=len(usages), written=written, unchanged=unchanged, expiries=expiries)


def _period_entries(
    plan: Plan,
    books: Books,
    accounts: OrganizationAccounts,
    lots: list[CreditLot],
    remaining: dict[str, int],
    currency: str,
    digits: int,
) -> list[tuple[Transaction, str]]:
    """A period's consumption, preceded by the reversal of what it corrects."""
    entries: list[tuple[Transaction, str]] = []
    if plan.reverses is not None and plan.version is not None:
        reversal = reversal_entry(books.transaction(plan.reverses), plan.version.date)
        for posting in reversal.postings:
            lot_id = dict(posting.meta).get(LOT_KEY)
            if isinstance(lot_id, str) and lot_id in remaining:
                remaining[lot_id] -= posting.amount_minor  # a negative draw gives back
        entries.append((reversal, "corrections"))
    entry = consumption_entry(plan.usage, accounts, lots, remaining, currency, digits, plan.version)
    if entry is not None:
        late = plan.version is not None and plan.version.date != plan.usage.last_day
        entries.append((entry, "corrections" if late else "usage"))
    return entries


def parse_amount_minor(text: str, currency: str) -> int:
    try:
        amount = Decimal(text)
    except InvalidOperation as error:
        raise PostingError(f"amount {text!r} is not a number") from error
    scaled = amount.scaleb(minor_digits(currency))
    if not amount.is_finite() or scaled != scaled.to_integral_value():
        raise PostingError(f"amount {text} has more decimals than {currency} allows")
    if not 0 < scaled <= MAX_CREDIT_MINOR:
        raise PostingError(
            f"amount {text} must be positive and at most {MAX_CREDIT_MINOR} minor units"
        )
    return int(scaled)


def record_credit(
    workspace: Workspace,
    org: str,
    kind: str,
    amount_text: str,
    acquired: date,
    expires: date | None,
    priority: int,
    lot_id: str | None,
) -> tuple[CreditLot, bool]:
    """Record a credit purchase or grant; the same command twice records it once."""
    customers = workspace.customers.by_id()
    if org not in customers:
        raise PostingError(f"unknown organization {org!r}")
    if expires is not None and expires < acquired:
        raise PostingError("the credit expires before it is acquired")
    if acquired < BOOKS_OPEN_DATE:
        raise PostingError(f"{acquired} is before the books open ({BOOKS_OPEN_DATE})")
    currency = workspace.settings.billing.currency
    amount_minor = parse_amount_minor(amount_text, currency)
    lot_id = lot_id or f"{kind}-{org}-{acquired:%Y%m%d}-{amount_minor}"
    if not IDENTIFIER_PATTERN.fullmatch(lot_id):
        raise PostingError(
            f"credit id {lot_id!r}: use 1-64 letters, digits, '.', '_' or '-' (it becomes a link)"
        )
    lot = CreditLot(lot_id, org, kind, amount_minor, acquired, expires, priority)
    with workspace.writing():
        writer = LedgerWriter(workspace.ledger_path)
        books = load_books(workspace.ledger_path, currency)
        open_accounts(workspace, books, writer)
        if kind == "purchase" and workspace.settings.invoicing.credits_vat == "at_purchase":
            # the invoicing stack (WeasyPrint) loads only when a prepayment invoice is issued
            from beanbill.ledger.invoicing.prepayment import issue_prepayment

            written, _ = issue_prepayment(workspace, books, lot, writer)
            return lot, written
        accounts = organization_accounts([customers[org]])[org]
        purchase_account = workspace.settings.ledger.credit_purchase_account
        entry = credit_entry(lot, accounts, currency, purchase_account, customers[org].name)
        result = writer.append(_file_for(entry, "credits"), [entry])
    return lot, result.written == 1


@dataclass(frozen=True)
class Balance:
    org: str
    credits_minor: int
    unbilled_minor: int
    receivable_minor: int
    lots: tuple[tuple[CreditLot, int], ...]
    currency: str


def balance(workspace: Workspace, org: str) -> Balance:
    customers = workspace.customers.by_id()
    if org not in customers:
        raise PostingError(f"unknown organization {org!r}")
    currency = workspace.settings.billing.currency
    books = load_books(workspace.ledger_path, currency)
    accounts = organization_accounts([customers[org]])[org]
    totals = books.balances(accounts.all())
    remaining = books.lot_remaining(set())
    lots = tuple((lot, remaining[lot.lot_id]) for lot in books.lots().values() if lot.org == org)
    return Balance(
        org=org,
        credits_minor=-totals[accounts.credits],
        unbilled_minor=totals[accounts.unbilled],
        receivable_minor=totals[accounts.receivable],
        lots=lots,
        currency=currency,
    )

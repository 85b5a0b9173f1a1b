"""What is due and what is in force, read from the books alone.

An invoice covers one billing organization (with the organizations it invoices centrally)
and one billing period. It is computed from the consumption transactions posted for that
period, never from the rating store. An invoice is in force until a credit note reverses
its issuance; the period is then due again, under the next revision of its key.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import NamedTuple

from beanbill.ledger import keys
from beanbill.ledger.accounts import CREDITS_ROOT, UNBILLED_ROOT, family_of, is_income, under
from beanbill.ledger.books import Books
from beanbill.ledger.entries import Transaction
from beanbill.ledger.invoicing import InvoicingError
from beanbill.rating.config import BillingMode, Customer
from beanbill.rating.money import AMOUNT_SCALE
from beanbill.rating.periods import Month


@dataclass(frozen=True)
class Consumption:
    """One posted consumption transaction, read back from the ledger."""

    transaction: Transaction
    org: str
    period: str
    period_start: date
    period_end: date
    rated_file: str
    day: date | None
    through: date | None = None  # the last day of a part of the period

    @property
    def days(self) -> tuple[date | None, date | None]:
        """(first, last) day of the period this posting covers (None: the period's bound)."""
        return self.day, self.through or self.day

    @property
    def txn_id(self) -> str:
        return self.transaction.txn_id

    def income_by_family(self) -> dict[str, int]:
        result: dict[str, int] = {}
        for posting in self.transaction.postings:
            if is_income(posting.account):
                family = family_of(posting.account)
                result[family] = result.get(family, 0) - posting.amount_minor
        return result

    def rated_atto_by_family(self) -> dict[str, int]:
        result: dict[str, int] = {}
        for posting in self.transaction.postings:
            rated = dict(posting.meta).get(keys.RATED_AMOUNT)
            if is_income(posting.account) and isinstance(rated, Decimal):
                result[family_of(posting.account)] = int(rated.scaleb(AMOUNT_SCALE))
        return result

    def credits_drawn(self) -> int:
        return sum(
            p.amount_minor for p in self.transaction.postings if keys.CREDIT_LOT in dict(p.meta)
        )

    def over_consumption(self) -> int:
        return sum(
            p.amount_minor
            for p in self.transaction.postings
            if dict(p.meta).get(keys.OVER_CONSUMPTION)
        )

    def unbilled(self) -> int:
        return sum(
            p.amount_minor for p in self.transaction.postings if under(p.account, UNBILLED_ROOT)
        )


@dataclass(frozen=True)
class DueInvoice:
    key: str  # an ``InvoiceKey`` as text: what the number is bound to
    customer: Customer
    period: str
    period_start: date
    period_end: date  # exclusive
    consumptions: tuple[Consumption, ...]

    @property
    def central(self) -> bool:
        """A parent invoicing its teams: lines name the organization they are for."""
        orgs = {consumption.org for consumption in self.consumptions}
        return len(orgs) > 1 or self.consumptions[0].org != self.customer.id


def consumptions(books: Books) -> list[Consumption]:
    """The consumption transactions in force (not reversed), in txn-id order."""
    active = {version.txn_id for version in books.usage_versions().values()}
    result = []
    for txn_id in sorted(active):
        transaction = books.transaction(txn_id)
        meta = dict(transaction.meta)
        result.append(
            Consumption(
                transaction=transaction,
                org=str(meta[keys.ORG]),
                period=str(meta[keys.PERIOD]),
                period_start=meta[keys.PERIOD_START],  # type: ignore[arg-type]
                period_end=meta[keys.PERIOD_END],  # type: ignore[arg-type]
                rated_file=str(meta[keys.RATED_LINES]),
                day=meta.get(keys.DAY),  # type: ignore[arg-type]
                through=meta.get(keys.POSTED_THROUGH),  # type: ignore[arg-type]
            )
        )
    return result


def invoicing_transactions(books: Books) -> list[Transaction]:
    """Issuances, credit notes and reversals, in ledger order."""
    ids = [
        str(entry.meta[keys.TXN_ID])
        for entry in books.entries
        if keys.TXN_ID in entry.meta and keys.is_invoicing(str(entry.meta[keys.TXN_ID]))
    ]
    return [books.transaction(txn_id) for txn_id in ids]


def issued_keys(books: Books) -> dict[str, str]:
    """invoice key → number, for invoices not cancelled by a credit note."""
    transactions = invoicing_transactions(books)
    reversed_ids = {
        str(dict(t.meta)[keys.REVERSES]) for t in transactions if keys.REVERSES in dict(t.meta)
    }
    issued: dict[str, str] = {}
    for transaction in transactions:
        meta = dict(transaction.meta)
        if keys.INVOICE_KEY in meta and transaction.txn_id not in reversed_ids:
            issued[str(meta[keys.INVOICE_KEY])] = str(meta[keys.INVOICE_NUMBER])
    return issued


def issued_numbers_of(books: Books, org: str) -> list[str]:
    """Numbers of the invoices in force that ``org`` pays, in number order."""
    return sorted(
        number
        for key, number in issued_keys(books).items()
        if keys.InvoiceKey.parse(key).payer == org
    )


def _ordered(items: list[Consumption]) -> tuple[Consumption, ...]:
    return tuple(sorted(items, key=lambda c: (c.org, c.day or date.min)))


def due_invoices(
    customers: Mapping[str, Customer],
    books: Books,
    active: Sequence[Consumption],
    up_to: Month,
) -> list[DueInvoice]:
    """Posted periods ending by the end of ``up_to`` that no invoice in force covers yet.

    ``active`` is ``consumptions(books)``, read once by the caller for every question.
    """
    issued = issued_keys(books)
    every_key = {
        keys.InvoiceKey.parse(str(dict(t.meta)[keys.INVOICE_KEY]))
        for t in invoicing_transactions(books)
        if keys.INVOICE_KEY in dict(t.meta)
    }
    groups: dict[tuple[str, str], list[Consumption]] = defaultdict(list)
    for consumption in active:
        if consumption.period_end > up_to.next().first_day:
            continue
        payer = customers[consumption.org].parent or consumption.org
        groups[(payer, consumption.period)].append(consumption)
    due = []
    for (payer, period), items in sorted(groups.items()):
        first_issue = keys.InvoiceKey(payer, period)
        revisions = [key for key in every_key if key.same_period(first_issue)]
        if any(key.text in issued for key in revisions):
            continue  # invoiced, and not cancelled by a credit note
        key = first_issue._replace(revision=len(revisions) + 1)
        first = items[0]
        due.append(
            DueInvoice(
                key.text,
                customers[payer],
                period,
                first.period_start,
                first.period_end,
                _ordered(items),
            )
        )
    return due


class StaleInvoice(NamedTuple):
    number: str
    key: str
    moved_minor: int  # what the issuance took out of unbilled and credits, per its postings
    now_minor: int  # what the period's consumption in force leaves there


def stale_invoices(
    customers: Mapping[str, Customer], books: Books, active: Sequence[Consumption]
) -> list[StaleInvoice]:
    """Invoices in force whose period was re-rated after they were issued (``post --correct``).

    The correction's difference sits in unbilled (or credits) with no invoice to take it:
    the invoice must be cancelled by a credit note so that the period is invoiced again,
    late usage included. Only periods with a corrected consumption are compared.
    """
    corrected = {
        (customers[c.org].parent or c.org, c.period)
        for c in active
        if c.txn_id != keys.usage_txn_id(c.org, c.period, c.day)
    }
    stale = []
    for key, number in sorted(issued_keys(books).items()):
        parsed = keys.InvoiceKey.parse(key)
        if (parsed.payer, parsed.period) not in corrected:
            continue
        due = due_for_issued(customers, active, key, customers[parsed.payer])
        now = sum(c.unbilled() + c.over_consumption() for c in due.consumptions)
        if customers[parsed.payer].billing_mode is BillingMode.PROVISIONED:
            now = sum(sum(c.income_by_family().values()) + c.over_consumption()
                      for c in due.consumptions)  # fmt: skip
        issuance = books.transaction(keys.invoice_txn_id(number))
        moved = -sum(
            p.amount_minor
            for p in issuance.postings
            if under(p.account, UNBILLED_ROOT) or under(p.account, CREDITS_ROOT)
        )
        if moved != now:
            stale.append(StaleInvoice(number, key, moved, now))
    return stale


def due_for_issued(
    customers: Mapping[str, Customer],
    active: Sequence[Consumption],
    key: str,
    customer: Customer,
) -> DueInvoice:
    """What an issued invoice was derived from, to derive it again (for its credit note)."""
    period = keys.InvoiceKey.parse(key).period
    items = [
        c
        for c in active
        if c.period == period and (customers[c.org].parent or c.org) == customer.id
    ]
    if not items:
        raise InvoicingError(f"{key}: its consumption is no longer in the ledger")
    first = items[0]
    return DueInvoice(key, customer, period, first.period_start, first.period_end, _ordered(items))

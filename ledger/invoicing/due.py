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

from beancount.core import data

from beanbill.ledger import keys
from beanbill.ledger.accounts import CREDITS_ROOT, UNBILLED_ROOT, family_of, is_income, under
from beanbill.ledger.books import Books, CreditLot
from beanbill.ledger.entries import Posting, Transaction
from beanbill.ledger.invoicing import InvoicingError
from beanbill.rating.config import BillingMode, Customer
from beanbill.rating.money import AMOUNT_SCALE, to_scaled_integer
from beanbill.rating.periods import Month


class Draw(NamedTuple):
    """What one consumption took from one credit lot.

    Granted credit is a price reduction (art. 79 of the VAT Directive: it lowers the
    taxable amount); purchased credit is a payment on account. Purchased with its VAT
    invoiced (a prepayment invoice), a draw carries its share of that VAT, so that the
    consumption invoice deducts it instead of charging it twice.
    """

    lot_id: str
    kind: str  # "purchase" or "grant"
    amount_minor: int
    vat_minor: int = 0
    prepayment_number: str | None = None


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
    draws: tuple[Draw, ...] = ()  # what it took from credit lots, in posting order

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
                result[family_of(posting.account)] = to_scaled_integer(rated, AMOUNT_SCALE)
        return result

    def over_consumption(self) -> int:
        return sum(p.amount_minor for p in self._over_consumption_postings())

    def over_consumption_unbilled(self) -> int:
        """The over-consumption held in unbilled (an asset: owed by the customer). Books
        written by earlier versions held it as a debit in the credits account."""
        return sum(
            p.amount_minor
            for p in self._over_consumption_postings()
            if under(p.account, UNBILLED_ROOT)
        )

    def _over_consumption_postings(self) -> list[Posting]:
        return [p for p in self.transaction.postings if dict(p.meta).get(keys.OVER_CONSUMPTION)]

    def unbilled(self) -> int:
        """Consumption left to invoice (postpaid, prepaid): over-consumption excluded."""
        return sum(
            p.amount_minor
            for p in self.transaction.postings
            if under(p.account, UNBILLED_ROOT) and not dict(p.meta).get(keys.OVER_CONSUMPTION)
        )


@dataclass(frozen=True)
class DueInvoice:
    key: str  # an ``InvoiceKey`` as text: what the number is bound to
    customer: Customer
    period: str
    period_start: date
    period_end: date  # exclusive
    consumptions: tuple[Consumption, ...]
    names: tuple[tuple[str, str], ...] = ()  # org id → name, of the organizations billed
    carried: tuple[str, ...] = ()  # keys of earlier periods below the minimum, billed here

    def name_of(self, org: str) -> str:
        return dict(self.names).get(org, org)

    @property
    def central(self) -> bool:
        """A parent invoicing its teams: lines name the organization they are for."""
        orgs = {consumption.org for consumption in self.consumptions}
        return len(orgs) > 1 or self.consumptions[0].org != self.customer.id


def _half_up_share(total_minor: int, part: int, whole: int) -> int:
    """total × part / whole, rounded half up (all non-negative integers)."""
    return (2 * total_minor * part + whole) // (2 * whole)


def drawn_before(books: Books) -> dict[tuple[str, str], int]:
    """(txn-id, lot) → what the lot had given before that transaction, in (date, txn-id)
    order: draws, returns by reversals and expiries alike."""
    movements: dict[str, list[tuple[date, str, int]]] = defaultdict(list)
    for entry in books.entries:
        if not isinstance(entry, data.Transaction):
            continue
        txn_id = entry.meta.get(keys.TXN_ID)
        if txn_id is None or entry.meta.get(keys.CREDIT_KIND):
            continue  # not a transaction of ours, or the lot's purchase or grant itself
        for posting in entry.postings:
            lot_id = (posting.meta or {}).get(keys.CREDIT_LOT)
            if lot_id is not None and posting.units is not None and posting.units.number:
                movements[lot_id].append((entry.date, txn_id, books.minor(posting.units.number)))
    before: dict[tuple[str, str], int] = {}
    for lot_id, items in movements.items():
        running = 0
        for _, txn_id, amount in sorted(items):
            before.setdefault((txn_id, lot_id), running)
            running += amount
    return before


def lot_draws(
    transaction: Transaction, lots: Mapping[str, CreditLot], before: Mapping[tuple[str, str], int]
) -> tuple[Draw, ...]:
    """Each lot posting of a consumption as a ``Draw``; the VAT share of a draw from a lot
    invoiced with VAT is cumulative (``share(after) - share(before)``), so a lot's draws
    carry exactly the VAT its prepayment invoice charged once it is used up."""
    result = []
    for posting in transaction.postings:
        lot_id = dict(posting.meta).get(keys.CREDIT_LOT)
        if not isinstance(lot_id, str) or lot_id not in lots:
            continue
        lot = lots[lot_id]
        vat = 0
        if lot.vat_minor and lot.amount_minor > 0:
            start = before.get((transaction.txn_id, lot_id), 0)
            end = start + posting.amount_minor
            vat = _half_up_share(lot.vat_minor, end, lot.amount_minor) - _half_up_share(
                lot.vat_minor, start, lot.amount_minor
            )
        result.append(Draw(lot_id, lot.kind, posting.amount_minor, vat, lot.invoice_number))
    return tuple(result)


def consumptions(books: Books) -> list[Consumption]:
    """The consumption transactions in force (not reversed), in txn-id order."""
    active = {version.txn_id for version in books.usage_versions().values()}
    lots = books.lots()
    before = drawn_before(books)
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
                draws=lot_draws(transaction, lots, before),
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
            for key in covered_keys(transaction):
                issued[key] = str(meta[keys.INVOICE_NUMBER])
    return issued


def issued_numbers_of(books: Books, org: str) -> list[str]:
    """Numbers of the invoices in force that ``org`` pays, in number order."""
    return sorted(
        number
        for key, number in issued_keys(books).items()
        if keys.InvoiceKey.parse(key).payer == org
    )


def _ordered(items: list[Consumption]) -> tuple[Consumption, ...]:
    return tuple(sorted(items, key=lambda c: (c.period_start, c.org, c.day or date.min)))


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
        keys.InvoiceKey.parse(key)
        for t in invoicing_transactions(books)
        if keys.INVOICE_KEY in dict(t.meta)
        for key in covered_keys(t)
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
                _names(customers, items),
            )
        )
    return due


def _names(
    customers: Mapping[str, Customer], items: Sequence[Consumption]
) -> tuple[tuple[str, str], ...]:
    return tuple(sorted({(c.org, customers[c.org].name) for c in items}))


def covered_keys(transaction: Transaction) -> list[str]:
    """The invoice keys an issuance bills: its own, and those of periods carried into it."""
    meta = dict(transaction.meta)
    carried = str(meta.get(keys.CARRIED_KEYS, ""))
    return [str(meta[keys.INVOICE_KEY]), *(key for key in carried.split(",") if key)]


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
    by_number: dict[str, list[str]] = defaultdict(list)
    for key, number in sorted(issued_keys(books).items()):
        by_number[number].append(key)
    stale = []
    for number, covered in sorted(by_number.items()):
        parsed = [keys.InvoiceKey.parse(key) for key in covered]
        if not any((key.payer, key.period) in corrected for key in parsed):
            continue
        payer = customers[parsed[0].payer]
        issuance = books.transaction(keys.invoice_txn_id(number))
        main_key = str(dict(issuance.meta)[keys.INVOICE_KEY])
        due = due_for_issued(customers, active, main_key, payer, covered)
        now = sum(c.unbilled() + c.over_consumption() for c in due.consumptions)
        if payer.billing_mode is BillingMode.PROVISIONED:
            now = sum(sum(c.income_by_family().values()) + c.over_consumption()
                      for c in due.consumptions)  # fmt: skip
        moved = -sum(
            p.amount_minor
            for p in issuance.postings
            if under(p.account, UNBILLED_ROOT) or under(p.account, CREDITS_ROOT)
        )
        if moved != now:
            stale.append(StaleInvoice(number, main_key, moved, now))
    return stale


def due_for_issued(
    customers: Mapping[str, Customer],
    active: Sequence[Consumption],
    key: str,
    customer: Customer,
    covered: Sequence[str] = (),
) -> DueInvoice:
    """What an issued invoice was derived from, to derive it again (for its credit note);
    ``covered``: every key it bills, periods carried into it included."""
    periods = {keys.InvoiceKey.parse(item).period for item in (key, *covered)}
    period = keys.InvoiceKey.parse(key).period
    items = [
        c
        for c in active
        if c.period in periods and (customers[c.org].parent or c.org) == customer.id
    ]
    if not items:
        raise InvoicingError(f"{key}: its consumption is no longer in the ledger")
    own = [c for c in items if c.period == period] or items
    carried = tuple(sorted(set(covered) - {key}))
    return DueInvoice(
        key,
        customer,
        period,
        min(c.period_start for c in items),
        own[0].period_end,
        _ordered(items),
        _names(customers, items),
        carried,
    )

"""Invoices and receivables as typed rows: the figures behind the Fava billing pages.

Pure functions of a parsed ledger (Beancount's entries) and a date, so that every status
and every aging figure is tested without a web server. Nothing here is stored: the
ledger stays the only record, and these rows are what it says at ``as_of``.

What the ledger says, and how it is read:

- an issued document is a transaction with ``invoice-number`` metadata: an issuance
  (``txn-id: "invoice:<number>"``, its receivable posting is the total) or a prepayment
  invoice (a credit purchase, paid when bought: no receivable posting);
- every movement of an invoice's receivable (the issuance, payments, refunds, a credit
  note) carries its link ``^invoice-<number>``: it is open while they do not sum to 0;
- a credit note reverses an issuance (``reverses: "invoice:<number>"``): the invoice is
  credited, whatever else happened;
- receivable postings without an invoice's link (none are written today) are kept as
  *unallocated*, so that the aging totals always equal the receivable balance.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from enum import StrEnum
from typing import Any

from beancount.core.data import Document, Open, Posting, Transaction

from beanbill.ledger import keys
from beanbill.ledger.accounts import RECEIVABLE_ROOT, under
from beanbill.ledger.entries import format_minor, minor_digits

DUE_DATE = "due-date"
ORG_ID = "org-id"  # metadata of an organization's Open entries
ORG_NAME = "org-name"
PDF_SUFFIX = ".pdf"
INVOICE_LINK_PREFIX = keys.link_of_invoice("")
# Aging buckets: (label, last day past due it holds); the last one has no end.
BUCKETS: tuple[tuple[str, int | None], ...] = (
    ("current", 0),
    ("1–30", 30),
    ("31–60", 60),
    ("61–90", 90),
    ("> 90", None),
)


class Status(StrEnum):
    OPEN = "open"
    PAID = "paid"
    OVERDUE = "overdue"
    CREDITED = "credited"


@dataclass(frozen=True)
class Customer:
    org: str
    name: str
    receivable: str


@dataclass(frozen=True)
class InvoiceRow:
    """One issued invoice as at a date. Amounts are minor units of ``currency``."""

    number: str
    org: str
    org_name: str
    issued: date
    due: date | None
    currency: str
    total_minor: int
    outstanding_minor: int
    status: Status
    prepayment: bool
    credit_note: str | None  # the number of the credit note that cancelled it
    link: str  # ^invoice-<number>: the issuance, its payments and its credit note
    pdf: str | None  # the PDF's path, as its ``document`` entry names it
    credit_note_pdf: str | None

    def total(self) -> str:
        return format_minor(self.total_minor, self.currency)

    def outstanding(self) -> str:
        return format_minor(self.outstanding_minor, self.currency)


@dataclass(frozen=True)
class AgingRow:
    """One customer's receivable split by how late it is; ``unallocated_minor`` is what
    moved on its receivable without an invoice's link."""

    org: str
    org_name: str
    currency: str
    buckets_minor: tuple[int, ...]  # in the order of BUCKETS
    unallocated_minor: int

    @property
    def total_minor(self) -> int:
        return sum(self.buckets_minor) + self.unallocated_minor

    def formatted(self, amount_minor: int) -> str:
        return format_minor(amount_minor, self.currency)


def to_minor(number: Decimal, currency: str) -> int:
    """A ledger amount as an int of minor units; refuses sub-unit amounts, never rounds."""
    scaled = number.scaleb(minor_digits(currency))
    if scaled != scaled.to_integral_value():
        raise ValueError(f"{number} {currency} is not a whole number of minor units")
    return int(scaled)


def posting_minor(posting: Posting) -> tuple[str, int]:
    """(currency, minor units) of a booked posting: beanbill writes every amount in full."""
    units = posting.units
    if units is None or not isinstance(units.number, Decimal):
        raise ValueError(f"a posting to {posting.account} has no amount")
    return units.currency, to_minor(units.number, units.currency)


def customers(entries: Iterable[Any]) -> dict[str, Customer]:
    """Each organization, by its receivable account, from the accounts' Open entries."""
    found = {}
    for entry in entries:
        if isinstance(entry, Open) and under(entry.account, RECEIVABLE_ROOT):
            meta = entry.meta or {}
            org = str(meta.get(ORG_ID, entry.account.rsplit(":", 1)[-1]))
            name = str(meta.get(ORG_NAME, org))
            found[entry.account] = Customer(org, name, entry.account)
    return found


def account_owners(entries: Iterable[Any], root: str) -> dict[str, Customer]:
    """Each organization's account under ``root`` (credits, unbilled, ...), by account.

    The id and name come from the Open entry's metadata, as for the receivables; an
    account opened without them is named after its last component.
    """
    found = {}
    for entry in entries:
        if isinstance(entry, Open) and under(entry.account, root) and entry.account != root:
            meta = entry.meta or {}
            org = str(meta.get(ORG_ID, entry.account.rsplit(":", 1)[-1]))
            found[entry.account] = Customer(org, str(meta.get(ORG_NAME, org)), entry.account)
    return found


def owner_of(account: str, owners: Mapping[str, Customer]) -> Customer:
    """The organization an account belongs to, even one no Open entry describes."""
    return owners.get(account) or Customer(account.rsplit(":", 1)[-1], "", account)


def documents_to_push(entries: Iterable[Any], as_of: date) -> list[str]:
    """The numbers of the documents a sync target should have by ``as_of``: invoices
    with something to collect, and credit notes. Prepayment invoices (credit bought and
    paid at once) are never pushed, as ``sync push`` decides."""
    numbers = []
    for entry in entries:
        if not isinstance(entry, Transaction) or entry.date > as_of:
            continue
        meta = entry.meta or {}
        note = keys.credit_note_number_of(str(meta.get(keys.TXN_ID, "")))
        if note is not None:
            numbers.append(note)
        elif keys.INVOICE_NUMBER in meta and any(
            under(posting.account, RECEIVABLE_ROOT) for posting in entry.postings
        ):
            numbers.append(str(meta[keys.INVOICE_NUMBER]))
    return numbers


def days_past_due(due: date | None, issued: date, as_of: date) -> int:
    """Days since the due date (the issue date when there is none): 0 or less is current."""
    return (as_of - (due or issued)).days


def bucket_of(days: int) -> int:
    """The index in BUCKETS of an amount ``days`` past due."""
    for index, (_, last) in enumerate(BUCKETS):
        if last is None or days <= last:
            return index
    raise AssertionError("the last bucket has no end")  # pragma: no cover


def status_of(outstanding_minor: int, credited: bool, late_days: int) -> Status:
    if credited:
        return Status.CREDITED
    if outstanding_minor == 0:
        return Status.PAID
    return Status.OVERDUE if late_days > 0 else Status.OPEN


def _credit_note_number(txn: Transaction) -> str:
    """A credit note's number, from its txn-id (``keys`` builds and reads it)."""
    return keys.credit_note_number_of(str(txn.meta[keys.TXN_ID])) or ""


def _pdf(documents: Sequence[Document]) -> str | None:
    return next((d.filename for d in documents if d.filename.endswith(PDF_SUFFIX)), None)


@dataclass(frozen=True)
class _Read:
    """The ledger up to ``as_of``, indexed once for all invoices."""

    issued: list[Transaction]
    receivable_by_link: Mapping[str, list[tuple[str, str, int]]]  # link → (account, cur, minor)
    unlinked: list[tuple[str, str, int]]
    credit_notes: Mapping[str, Transaction]  # by the invoice's txn-id it reverses
    documents: Mapping[str, list[Document]]  # by link


def _read(entries: Iterable[Any], as_of: date) -> _Read:
    issued: list[Transaction] = []
    by_link: dict[str, list[tuple[str, str, int]]] = defaultdict(list)
    unlinked: list[tuple[str, str, int]] = []
    notes: dict[str, Transaction] = {}
    documents: dict[str, list[Document]] = defaultdict(list)
    for entry in entries:
        if entry.date > as_of:
            continue
        if isinstance(entry, Document):
            for link in entry.links or ():
                documents[link].append(entry)
        if not isinstance(entry, Transaction):
            continue
        meta = entry.meta or {}
        if keys.INVOICE_NUMBER in meta:
            issued.append(entry)
        if keys.credit_note_number_of(str(meta.get(keys.TXN_ID, ""))) is not None:
            notes[str(meta.get(keys.REVERSES, ""))] = entry
        invoice_links = [link for link in entry.links or () if link.startswith(INVOICE_LINK_PREFIX)]
        for posting in entry.postings:
            if under(posting.account, RECEIVABLE_ROOT):
                moved = (posting.account, *posting_minor(posting))
                if invoice_links:
                    by_link[invoice_links[0]].append(moved)
                else:
                    unlinked.append(moved)
    return _Read(issued, by_link, unlinked, notes, documents)


def _invoice_row(
    txn: Transaction, read: _Read, accounts: Mapping[str, Customer], as_of: date
) -> InvoiceRow:
    meta = txn.meta
    number = str(meta[keys.INVOICE_NUMBER])
    link = keys.link_of_invoice(number)
    receivable = [p for p in txn.postings if under(p.account, RECEIVABLE_ROOT)]
    prepayment = not receivable
    if receivable:
        account = receivable[0].account
        currency = posting_minor(receivable[0])[0]
        total = sum(posting_minor(p)[1] for p in receivable)
    else:  # a prepayment invoice: what was paid in
        org = str(meta.get(keys.ORG, ""))
        account = next((a for a, c in accounts.items() if c.org == org), "")
        moves = [posting_minor(p) for p in txn.postings]
        currency = moves[0][0]
        total = sum(minor for _, minor in moves if minor > 0)
    customer = accounts.get(account) or Customer(str(meta.get(keys.ORG, "")), "", account)
    outstanding = sum(minor for _, _, minor in read.receivable_by_link.get(link, ()))
    note = read.credit_notes.get(keys.invoice_txn_id(number))
    due = meta.get(DUE_DATE)
    due = due if isinstance(due, date) else None
    note_number = _credit_note_number(note) if note else None
    note_documents = read.documents.get(keys.link_of_credit_note(note_number or ""), [])
    return InvoiceRow(
        number=number,
        org=customer.org,
        org_name=customer.name,
        issued=txn.date,
        due=due,
        currency=currency,
        total_minor=total,
        outstanding_minor=outstanding,
        status=status_of(outstanding, note is not None, days_past_due(due, txn.date, as_of)),
        prepayment=prepayment,
        credit_note=note_number,
        link=link,
        pdf=_pdf(read.documents.get(link, [])),
        credit_note_pdf=_pdf(note_documents) if note_number else None,
    )


def invoices(entries: Sequence[Any], as_of: date) -> list[InvoiceRow]:
    """Every document issued by ``as_of``, in issue order, with its status that day."""
    read = _read(entries, as_of)
    accounts = customers(entries)
    return [_invoice_row(txn, read, accounts, as_of) for txn in read.issued]


def selected(
    rows: Iterable[InvoiceRow], org: str | None = None, status: str | None = None
) -> list[InvoiceRow]:
    """The rows of one customer and/or one status (a page's query parameters)."""
    return [
        row
        for row in rows
        if (not org or row.org == org) and (not status or row.status.value == status)
    ]


def aging(entries: Sequence[Any], as_of: date) -> list[AgingRow]:
    """Each customer's receivable at ``as_of`` by days past due, one row per currency.

    Every receivable posting is counted once: in the bucket of its invoice's due date
    (what is outstanding of it), or as unallocated. The totals are therefore the
    ``Assets:Receivable`` balance, to the cent.
    """
    read = _read(entries, as_of)
    accounts = customers(entries)
    due_of = {}
    for txn in read.issued:
        due = txn.meta.get(DUE_DATE)
        due_of[keys.link_of_invoice(str(txn.meta[keys.INVOICE_NUMBER]))] = days_past_due(
            due if isinstance(due, date) else None, txn.date, as_of
        )
    sums: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0] * (len(BUCKETS) + 1))
    for link, moves in read.receivable_by_link.items():
        late = due_of.get(link)
        for account, currency, minor in moves:
            index = len(BUCKETS) if late is None else bucket_of(late)
            sums[account, currency][index] += minor
    for account, currency, minor in read.unlinked:
        sums[account, currency][len(BUCKETS)] += minor
    rows = []
    for (account, currency), amounts in sorted(sums.items()):
        if not any(amounts):
            continue
        customer = accounts.get(account) or Customer(account.rsplit(":", 1)[-1], "", account)
        rows.append(
            AgingRow(customer.org, customer.name, currency, tuple(amounts[:-1]), amounts[-1])
        )
    return rows


def aging_totals(rows: Iterable[AgingRow]) -> dict[str, tuple[int, ...]]:
    """Per currency: each bucket's total, then unallocated, then the grand total."""
    totals: dict[str, list[int]] = defaultdict(lambda: [0] * (len(BUCKETS) + 2))
    for row in rows:
        for index, amount in enumerate((*row.buckets_minor, row.unallocated_minor)):
            totals[row.currency][index] += amount
        totals[row.currency][-1] += row.total_minor
    return {currency: tuple(amounts) for currency, amounts in sorted(totals.items())}

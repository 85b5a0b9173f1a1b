"""Prepaid and granted credit as typed rows: the figures behind the Credits page.

Read from the ledger alone, as ``beanbill balance`` reads it (``ledger.books``):

- a *lot* is a transaction with ``credit-kind`` purchase or grant and ``credit-lot``
  metadata; its posting to ``Liabilities:Credits:<org>`` is the credit it gives;
- a posting to that account with ``credit-lot`` posting metadata draws on the lot it
  names: consumption, or what is left when the lot expires (``txn-id: expiry:<lot>``);
- any other posting to it is *outside lots*: today, in provisioned mode, the
  over-consumption (what the credits did not cover, ``over-consumption: TRUE``, a debit)
  and the unified invoice that provisions the account again (a credit). Whether
  over-consumption stays here or moves to the organization's unbilled account, it is
  counted where it is, so the page's balance is always the account's, to the cent.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum
from typing import Any

from beancount.core.data import Transaction

from beanbill.ledger import keys
from beanbill.ledger.accounts import CREDITS_ROOT, UNBILLED_ROOT, under
from beanbill.ledger.books import LOT_KINDS
from beanbill.ledger.entries import format_minor
from beanbill.ledger.fava_billing.billing import account_owners, owner_of, posting_minor
from beanbill.ledger.fava_billing.periods import within_days

EXPIRES_KEY = "expires"
EXPIRING_WITHIN_DAYS = 30


class LotState(StrEnum):
    ACTIVE = "active"
    EXPIRING = "expiring"  # its last valid day is within EXPIRING_WITHIN_DAYS
    EXPIRED = "expired"  # past its last valid day (what was left is, or will be, written off)
    USED = "used up"


@dataclass(frozen=True)
class LotRow:
    """One credit lot as at a date; amounts are positive minor units of ``currency``."""

    lot_id: str
    org: str
    org_name: str
    kind: str  # purchase or grant
    acquired: date
    expires: date | None  # its last valid day
    currency: str
    amount_minor: int
    used_minor: int
    expired_minor: int
    state: LotState

    @property
    def remaining_minor(self) -> int:
        return self.amount_minor - self.used_minor - self.expired_minor

    def formatted(self, amount_minor: int) -> str:
        return format_minor(amount_minor, self.currency)


@dataclass(frozen=True)
class CustomerCredits:
    """One organization's credit account as at a date, positive when credit is held.

    ``balance_minor`` is the account's balance (shown positive, as a liability): what
    its lots hold plus ``outside_lots_minor``, the movements no lot explains (negative
    when over-consumption exceeds what provisioning invoices credited).
    """

    org: str
    org_name: str
    currency: str
    held_minor: int
    outside_lots_minor: int
    expiring_minor: int
    unbilled_minor: int

    @property
    def balance_minor(self) -> int:
        return self.held_minor + self.outside_lots_minor

    def formatted(self, amount_minor: int) -> str:
        return format_minor(amount_minor, self.currency)


@dataclass
class _Lot:
    lot_id: str
    account: str
    kind: str
    acquired: date
    expires: date | None
    currency: str
    amount_minor: int = 0
    used_minor: int = 0
    expired_minor: int = 0


@dataclass
class _Read:
    """The credit accounts up to a date, read in one pass."""

    lots: dict[str, _Lot] = field(default_factory=dict)
    draws: list[tuple[str, str, str, int, bool]] = field(default_factory=list)
    # (lot, account, currency, minor, is an expiry) in ledger order
    outside_lots: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))


def _expires(meta: Mapping[str, Any]) -> date | None:
    value = meta.get(EXPIRES_KEY)
    return value if isinstance(value, date) else None


def _read(entries: Iterable[Any], as_of: date) -> _Read:
    read = _Read()
    for entry in entries:
        if not isinstance(entry, Transaction) or entry.date > as_of:
            continue
        meta = entry.meta or {}
        is_lot = meta.get(keys.CREDIT_KIND) in LOT_KINDS and keys.CREDIT_LOT in meta
        is_expiry = str(meta.get(keys.TXN_ID, "")).startswith(keys.expiry_txn_id(""))
        for posting in entry.postings:
            if not under(posting.account, CREDITS_ROOT):
                continue
            currency, minor = posting_minor(posting)
            lot_id = (posting.meta or {}).get(keys.CREDIT_LOT)
            if is_lot:
                lot = read.lots.setdefault(
                    str(meta[keys.CREDIT_LOT]),
                    _Lot(
                        str(meta[keys.CREDIT_LOT]),
                        posting.account,
                        str(meta[keys.CREDIT_KIND]),
                        entry.date,
                        _expires(meta),
                        currency,
                    ),
                )
                lot.amount_minor -= minor
            elif lot_id is not None:
                read.draws.append((str(lot_id), posting.account, currency, minor, is_expiry))
            else:
                read.outside_lots[posting.account, currency] -= minor
    for lot_id, account, currency, minor, expiry in read.draws:
        drawn = read.lots.get(lot_id)
        if drawn is None or (drawn.account, drawn.currency) != (account, currency):
            read.outside_lots[account, currency] -= minor  # no such lot here: kept, not lost
        elif expiry:
            drawn.expired_minor += minor
        else:
            drawn.used_minor += minor
    return read


def _state(lot: _Lot, as_of: date) -> LotState:
    """Written off beats used up, which beats past its last day (the write-off is posted
    with the next month's consumption): what the lot still holds says which."""
    remaining = lot.amount_minor - lot.used_minor - lot.expired_minor
    if lot.expired_minor:
        return LotState.EXPIRED
    if remaining <= 0:
        return LotState.USED
    if lot.expires is not None and lot.expires < as_of:
        return LotState.EXPIRED
    if lot.expires is not None and within_days(lot.expires, as_of, EXPIRING_WITHIN_DAYS):
        return LotState.EXPIRING
    return LotState.ACTIVE


def lots(entries: Sequence[Any], as_of: date) -> list[LotRow]:
    """Every credit lot acquired by ``as_of``, with what was used, expired and is left,
    soonest expiry first (lots that never expire last)."""
    owners = account_owners(entries, CREDITS_ROOT)
    rows = []
    for lot in _read(entries, as_of).lots.values():
        owner = owner_of(lot.account, owners)
        rows.append(
            LotRow(
                lot.lot_id,
                owner.org,
                owner.name,
                lot.kind,
                lot.acquired,
                lot.expires,
                lot.currency,
                lot.amount_minor,
                lot.used_minor,
                lot.expired_minor,
                _state(lot, as_of),
            )
        )
    return sorted(rows, key=lambda row: (row.expires or date.max, row.acquired, row.lot_id))


def expiring(rows: Iterable[LotRow]) -> list[LotRow]:
    """The lots with credit left whose last valid day is within the next 30 days."""
    return [row for row in rows if row.state is LotState.EXPIRING]


def unbilled(entries: Sequence[Any], as_of: date) -> dict[tuple[str, str], int]:
    """(org, currency) → the ``Assets:Unbilled`` balance at ``as_of``: consumed, posted,
    not yet invoiced. Organizations with nothing unbilled are left out."""
    owners = account_owners(entries, UNBILLED_ROOT)
    totals: dict[tuple[str, str], int] = defaultdict(int)
    for entry in entries:
        if not isinstance(entry, Transaction) or entry.date > as_of:
            continue
        for posting in entry.postings:
            if under(posting.account, UNBILLED_ROOT):
                currency, minor = posting_minor(posting)
                totals[owner_of(posting.account, owners).org, currency] += minor
    return {key: amount for key, amount in sorted(totals.items()) if amount}


def customer_credits(entries: Sequence[Any], as_of: date) -> list[CustomerCredits]:
    """Each organization with a credit account that moved, by id: what its lots hold,
    what is outside lots, what expires within 30 days, and (beside it) its unbilled."""
    owners = account_owners(entries, CREDITS_ROOT)
    read = _read(entries, as_of)
    held: dict[tuple[str, str], int] = defaultdict(int)
    soon: dict[tuple[str, str], int] = defaultdict(int)
    for lot in read.lots.values():
        key = (lot.account, lot.currency)
        remaining = lot.amount_minor - lot.used_minor - lot.expired_minor
        held[key] += remaining
        if _state(lot, as_of) is LotState.EXPIRING:
            soon[key] += remaining
    owed = unbilled(entries, as_of)
    rows = []
    for account, currency in sorted(set(held) | set(read.outside_lots)):
        owner = owner_of(account, owners)
        rows.append(
            CustomerCredits(
                owner.org,
                owner.name,
                currency,
                held[account, currency],
                read.outside_lots.get((account, currency), 0),
                soon[account, currency],
                owed.get((owner.org, currency), 0),
            )
        )
    return rows


def credit_totals(rows: Iterable[CustomerCredits]) -> dict[str, tuple[int, int, int, int]]:
    """Per currency: (held in lots, outside lots, balance, expiring) over the rows."""
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for row in rows:
        amounts = (row.held_minor, row.outside_lots_minor, row.balance_minor, row.expiring_minor)
        for index, amount in enumerate(amounts):
            totals[row.currency][index] += amount
    return {currency: (t[0], t[1], t[2], t[3]) for currency, t in sorted(totals.items())}

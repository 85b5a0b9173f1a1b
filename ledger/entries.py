"""Typed ledger entries and their one text form.

beanbill builds entries as these small immutable records and renders them with a
careful template (about ten times faster than Beancount's printer). Amounts are integer
minor units: every posting is written in full, so Beancount never interpolates.
Every entry carries a ``txn-id`` derived from what caused it.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any, NamedTuple

from beanbill.ledger import keys
from beanbill.ledger.text import LedgerTextError, check_metadata_key, quoted
from beanbill.rating.money import currency_digits

TXN_ID_KEY = keys.TXN_ID

MetaValue = str | Decimal | date | bool
Meta = tuple[tuple[str, MetaValue], ...]


def user_meta(meta: dict[str, Any] | None) -> dict[str, Any]:
    """A parsed entry's metadata without the parser's own keys (filename, lineno)."""
    return {k: v for k, v in (meta or {}).items() if k not in ("filename", "lineno")}


def minor_digits(currency: str) -> int:
    """The currency's minor units (ISO 4217, from Babel's CLDR data: JPY 0, EUR 2, KWD 3);
    ``rating.config`` refuses codes that are not a currency one can invoice in."""
    return currency_digits(currency)


def format_minor(amount_minor: int, currency: str) -> str:
    return f"{Decimal(amount_minor).scaleb(-minor_digits(currency)):.{minor_digits(currency)}f}"


class Posting(NamedTuple):
    account: str
    amount_minor: int
    currency: str
    meta: Meta = ()


class Transaction(NamedTuple):
    """A balanced transaction. ``payee`` names the customer (or the counterparty) so
    Fava's journal reads like books; ``narration`` says what happened to whom."""

    date: date
    txn_id: str
    narration: str
    postings: tuple[Posting, ...]
    links: tuple[str, ...] = ()
    meta: Meta = ()
    payee: str = ""


class Open(NamedTuple):
    date: date
    account: str
    currency: str
    meta: Meta = ()

    @property
    def txn_id(self) -> str:
        return keys.open_txn_id(self.account)


class Document(NamedTuple):
    """A file (an invoice's PDF) attached to an account, so Fava shows it; ``meta``
    names the files beside it (the XML e-invoices), which need no entry of their own."""

    date: date
    account: str
    path: str  # relative to the main ledger file
    txn_id: str
    links: tuple[str, ...] = ()
    meta: Meta = ()


Entry = Transaction | Open | Document


def _meta_value(value: MetaValue) -> str:
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, str):
        return quoted(value)
    if isinstance(value, Decimal):
        return format(value, "f")
    return value.isoformat()


def _meta_lines(meta: Meta, indent: str) -> list[str]:
    return [f"{indent}{check_metadata_key(key)}: {_meta_value(value)}" for key, value in meta]


def render(entry: Entry) -> str:
    """The entry's text, ending with a newline; entries are separated by a blank line."""
    if isinstance(entry, Document):
        links = "".join(f" ^{link}" for link in entry.links)
        lines = [f"{entry.date.isoformat()} document {entry.account} {quoted(entry.path)}{links}"]
        lines += _meta_lines(((TXN_ID_KEY, entry.txn_id), *entry.meta), "  ")
        return "\n".join(lines) + "\n"
    if isinstance(entry, Open):
        lines = [f"{entry.date.isoformat()} open {entry.account} {entry.currency}"]
        lines += _meta_lines(((TXN_ID_KEY, entry.txn_id), *entry.meta), "  ")
        return "\n".join(lines) + "\n"
    total = sum(posting.amount_minor for posting in entry.postings)
    if total != 0:
        raise LedgerTextError(f"{entry.txn_id}: postings sum to {total} minor units, not zero")
    links = "".join(f" ^{link}" for link in entry.links)
    payee = f"{quoted(entry.payee)} " if entry.payee else ""
    lines = [f"{entry.date.isoformat()} * {payee}{quoted(entry.narration)}{links}"]
    lines += _meta_lines(((TXN_ID_KEY, entry.txn_id), *entry.meta), "  ")
    for posting in entry.postings:
        amount = format_minor(posting.amount_minor, posting.currency)
        lines.append(f"  {posting.account}  {amount} {posting.currency}")
        lines += _meta_lines(posting.meta, "    ")
    return "\n".join(lines) + "\n"

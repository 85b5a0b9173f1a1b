"""Reading the books back: per-organization accounts, credit lots and balances.

The ledger is the source of truth. Credit lots are the transactions that carry
``credit-lot`` metadata; every draw or expiry names the lot it takes from, so what is
left of each lot is derived from the ledger alone, never kept elsewhere.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from functools import cached_property
from pathlib import Path
from typing import Any, NamedTuple

from beancount import loader
from beancount.core import data

from beanbill.ledger import keys
from beanbill.ledger.accounts import CREDITS_ROOT, VAT_ROOT, under
from beanbill.ledger.entries import TXN_ID_KEY, Posting, Transaction, minor_digits, user_meta
from beanbill.ledger.main_file import PLUGIN_LINE
from beanbill.rating.errors import BeanbillError

LOT_KEY = keys.CREDIT_LOT
LOT_KINDS = ("purchase", "grant")


class LedgerLoadError(BeanbillError):
    """The ledger does not load cleanly; beanbill will not add to a broken ledger."""


class UsageVersion(NamedTuple):
    """A consumption transaction already in the ledger for one organization's period."""

    txn_id: str
    date: date
    checksum: str


class CreditLot(NamedTuple):
    lot_id: str
    org: str
    kind: str
    amount_minor: int  # the credit, excluding VAT
    acquired: date
    expires: date | None
    priority: int
    vat_minor: int = 0  # VAT invoiced on the purchase (``credits_vat = "at_purchase"``)
    invoice_number: str | None = None  # its prepayment invoice


@dataclass
class Books:
    """What beanbill needs to know of a loaded ledger."""

    entries: list[data.Directive]
    currency: str
    missing_documents: tuple[str, ...] = ()  # files of document entries that are gone

    @property
    def digits(self) -> int:
        return minor_digits(self.currency)

    def minor(self, number: Decimal) -> int:
        return int(number.scaleb(self.digits))

    def txn_ids(self) -> set[str]:
        return {entry.meta[TXN_ID_KEY] for entry in self.entries if TXN_ID_KEY in entry.meta}

    def open_accounts(self) -> set[str]:
        return {entry.account for entry in self.entries if isinstance(entry, data.Open)}

    def lots(self) -> dict[str, CreditLot]:
        lots: dict[str, CreditLot] = {}
        for entry in self.entries:
            meta = entry.meta
            if not isinstance(entry, data.Transaction):
                continue
            if meta.get(keys.CREDIT_KIND) not in LOT_KINDS:
                continue
            amount = sum(
                (self.minor(p.units.number) for p in entry.postings
                 if p.units is not None and p.units.number is not None
                 and under(p.account, CREDITS_ROOT)),
                0,
            )  # fmt: skip
            vat = sum(
                (self.minor(p.units.number) for p in entry.postings
                 if p.units is not None and p.units.number is not None
                 and under(p.account, VAT_ROOT)),
                0,
            )  # fmt: skip
            lots[meta[LOT_KEY]] = CreditLot(
                lot_id=meta[LOT_KEY],
                org=meta[keys.ORG],
                kind=meta[keys.CREDIT_KIND],
                amount_minor=-amount,
                acquired=entry.date,
                expires=meta.get("expires"),
                priority=int(meta.get("priority", 0)),
                vat_minor=-vat,
                invoice_number=meta.get(keys.INVOICE_NUMBER),
            )
        return lots

    def lot_remaining(self, excluded_txn_ids: set[str]) -> dict[str, int]:
        """Minor units left in each lot, ignoring the transactions about to be regenerated."""
        remaining = {lot_id: lot.amount_minor for lot_id, lot in self.lots().items()}
        for entry in self.entries:
            if not isinstance(entry, data.Transaction):
                continue
            if entry.meta.get(TXN_ID_KEY) in excluded_txn_ids:
                continue
            for posting in entry.postings:
                lot_id = (posting.meta or {}).get(LOT_KEY)
                if lot_id is not None and lot_id in remaining and posting.units is not None:
                    number = posting.units.number
                    if number is not None:
                        remaining[lot_id] -= self.minor(number)
        return remaining

    @cached_property
    def _transactions_by_id(self) -> dict[str, data.Transaction]:
        return {
            str(entry.meta[TXN_ID_KEY]): entry
            for entry in self.entries
            if isinstance(entry, data.Transaction) and TXN_ID_KEY in entry.meta
        }

    def transaction(self, txn_id: str) -> Transaction:
        """A posted transaction as beanbill's typed record (to reverse it, for instance)."""
        entry = self._transactions_by_id.get(txn_id)
        if entry is None:
            raise LedgerLoadError(f"no transaction with txn-id {txn_id!r} in the ledger")
        postings = tuple(
            Posting(
                p.account,
                self.minor(p.units.number),
                p.units.currency,
                tuple(user_meta(p.meta).items()),
            )
            for p in entry.postings
            if p.units is not None and p.units.number is not None
        )
        meta = tuple((k, v) for k, v in user_meta(entry.meta).items() if k != TXN_ID_KEY)
        narration = entry.narration or ""
        return Transaction(
            entry.date,
            txn_id,
            narration,
            postings,
            tuple(sorted(entry.links)),
            meta,
            entry.payee or "",
        )

    def usage_versions(self) -> dict[tuple[str, str, str], UsageVersion]:
        """(org, period, day or "") → the consumption transaction in force (not reversed)."""
        reversed_ids = {
            entry.meta[keys.REVERSES] for entry in self.entries
            if isinstance(entry, data.Transaction) and keys.REVERSES in entry.meta
        }  # fmt: skip
        active: dict[tuple[str, str, str], UsageVersion] = {}
        for entry in self.entries:
            txn_id = entry.meta.get(TXN_ID_KEY, "")
            if not isinstance(entry, data.Transaction) or not keys.is_usage(txn_id):
                continue
            if txn_id in reversed_ids:
                continue
            day = entry.meta.get(keys.DAY)
            key = (entry.meta[keys.ORG], entry.meta[keys.PERIOD], day.isoformat() if day else "")
            if key in active:
                raise LedgerLoadError(f"two consumption transactions in force for {key}")
            active[key] = UsageVersion(txn_id, entry.date, entry.meta[keys.RATED_CHECKSUM])
        return active

    def balances(self, accounts: Iterable[str]) -> dict[str, int]:
        wanted = set(accounts)
        totals: dict[str, int] = defaultdict(int)
        for entry in self.entries:
            if isinstance(entry, data.Transaction):
                for posting in entry.postings:
                    if posting.account in wanted and posting.units is not None:
                        number = posting.units.number
                        if number is not None:
                            totals[posting.account] += self.minor(number)
        return {account: totals.get(account, 0) for account in accounts}


def _names_the_old_plugin(main_path: Path) -> bool:
    try:
        lines = main_path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return False
    return OLD_PLUGIN_LINE in (line.strip() for line in lines)


def ledger_errors(main_path: Path) -> list[str]:
    """Beancount's own verdict on the ledger (what bean-check prints), as messages."""
    _, errors, _ = loader.load_file(str(main_path))
    return [str(error.message) for error in errors]


OLD_PLUGIN_LINE = 'plugin "ledger.plugin"'


def load_books(main_path: Path, currency: str) -> Books:
    entries, errors, _ = loader.load_file(str(main_path))
    if errors and _names_the_old_plugin(main_path):
        raise LedgerLoadError(
            f"{main_path} loads the invariant plugin under its old name: replace the line "
            f"{OLD_PLUGIN_LINE} with {PLUGIN_LINE} (beanbill's modules install as beanbill.*)"
        )
    missing_files = [error for error in errors if _missing_document(error)]
    errors = [error for error in errors if not _missing_document(error)]
    if errors:
        first = errors[0]
        source: Any = first.source or {}
        raise LedgerLoadError(
            f"{main_path} has {len(errors)} error(s); first: "
            f"{source.get('filename')}:{source.get('lineno')}: {first.message}"
        )
    return Books(
        entries=list(entries),
        currency=currency,
        missing_documents=tuple(str(error.message) for error in missing_files),
    )


def _missing_document(error: Any) -> bool:
    """A ``document`` entry whose file is gone: that document's problem, not the ledger's.

    Every command goes on (``bean-check`` still reports it); ``beanbill invoice render``
    writes the file again from the issued snapshot.
    """
    return type(error).__name__ == "DocumentError" and str(error.message).startswith(
        "File does not exist"
    )

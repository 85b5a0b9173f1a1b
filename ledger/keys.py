"""The ledger's vocabulary: txn-ids, invoice keys and metadata keys, built and read here.

Every generated entry carries a ``txn-id`` derived from its cause, so that writing it
again is a no-op; an issued invoice also carries the key of what it invoices. Ids are
colon-separated. Organization ids and period keys never contain a colon (ids match
``config.IDENTIFIER_PATTERN``, periods are ``2026-10``, ``2026-W44``, ``2026-10-05``), so
every id splits back unambiguously — but only here: other modules build and read ids
through these functions, never by formatting or splitting strings themselves.
"""

from __future__ import annotations

import re
from datetime import date
from typing import NamedTuple

from beanbill.rating.errors import BeanbillError

TXN_ID = "txn-id"
# Metadata keys of generated transactions.
ORG = "org"
PERIOD = "period"
PERIOD_START = "period-start"
PERIOD_END = "period-end"
DAY = "day"
POSTED_THROUGH = "posted-through"  # last day of a period's part (a week split at a month end)
RATED_LINES = "rated-lines"
RATED_CHECKSUM = "rated-checksum"
RATED_AMOUNT = "rated-amount"
RATED_TOTAL = "rated-total"
CREDIT_LOT = "credit-lot"
CREDIT_KIND = "credit-kind"
OVER_CONSUMPTION = "over-consumption"
REVERSES = "reverses"
INVOICE_KEY = "invoice-key"
INVOICE_NUMBER = "invoice-number"
CARRIED_KEYS = "carried-keys"  # invoice keys of earlier periods below the minimum, billed here
CREDIT_NOTE_REASON = "reason"

USAGE_PREFIX = "usage:"
INVOICE_PREFIX = "invoice:"
REVERSAL_PREFIX = "reversal:"
CREDIT_NOTE_PREFIX = "credit-note:"
PREPAYMENT_PREFIX = "prepayment:"  # numbering keys of prepayment invoices (credit purchases)
INVOICE_KEY_PATTERN = re.compile(r"^invoice:([^:]+):([^:]+)(?::r([2-9]|[1-9][0-9]+))?$")


class LedgerKeyError(BeanbillError):
    """A txn-id or invoice key in the ledger does not follow beanbill's grammar."""


def usage_txn_id(org: str, period: str, day: date | None) -> str:
    suffix = f":{day.isoformat()}" if day else ""
    return f"{USAGE_PREFIX}{org}:{period}{suffix}"


def is_usage(txn_id: str) -> bool:
    return txn_id.startswith(USAGE_PREFIX)


def open_txn_id(account: str) -> str:
    return f"open:{account}"


def credit_txn_id(lot_id: str) -> str:
    """The purchase or grant of credit lot ``lot_id``."""
    return f"credit:{lot_id}"


def expiry_txn_id(lot_id: str) -> str:
    """What is left of credit lot ``lot_id`` when it expires."""
    return f"expiry:{lot_id}"


def reversal_txn_id(txn_id: str) -> str:
    return f"{REVERSAL_PREFIX}{txn_id}"


def invoice_txn_id(number: str) -> str:
    """The issuance transaction of invoice ``number``."""
    return f"{INVOICE_PREFIX}{number}"


def invoice_number_of(txn_id: str) -> str | None:
    """The invoice number of an issuance txn-id; None for any other transaction."""
    if txn_id.startswith(INVOICE_PREFIX):
        return txn_id.removeprefix(INVOICE_PREFIX)
    return None


def credit_note_txn_id(number: str) -> str:
    """The reversal transaction of credit note ``number`` (also its numbering key prefix)."""
    return f"{CREDIT_NOTE_PREFIX}{number}"


def credit_note_number_of(txn_id: str) -> str | None:
    """The credit note number of a credit note's transaction, None for any other."""
    if not txn_id.startswith(CREDIT_NOTE_PREFIX):
        return None
    return txn_id.removeprefix(CREDIT_NOTE_PREFIX)


def is_invoicing(txn_id: str) -> bool:
    """Issuances, credit notes and reversals: what decides which invoices are in force."""
    return txn_id.startswith((INVOICE_PREFIX, REVERSAL_PREFIX, CREDIT_NOTE_PREFIX))


def document_txn_id(number: str, kind: str) -> str:
    return f"document:{number}:{kind}"


def link_of_invoice(number: str) -> str:
    return f"invoice-{number}"


def link_of_credit_note(number: str) -> str:
    return f"credit-note-{number}"


class InvoiceKey(NamedTuple):
    """What an invoice invoices: a payer's billing period, and which issue of it.

    The first issue is revision 1 (``invoice:org-0001:2026-10``); after a credit note
    cancels it, the period is invoiced again as revision 2 (``…:r2``), and so on.
    """

    payer: str
    period: str
    revision: int = 1

    @property
    def text(self) -> str:
        base = f"{INVOICE_PREFIX}{self.payer}:{self.period}"
        return base if self.revision == 1 else f"{base}:r{self.revision}"

    def same_period(self, other: InvoiceKey) -> bool:
        return (self.payer, self.period) == (other.payer, other.period)

    @classmethod
    def parse(cls, text: str) -> InvoiceKey:
        match = INVOICE_KEY_PATTERN.fullmatch(text)
        if match is None:
            raise LedgerKeyError(f"{text!r} is not an invoice key (invoice:<org>:<period>[:rN])")
        return cls(match.group(1), match.group(2), int(match.group(3) or 1))


def is_credit_note_key(document_key: str) -> bool:
    """Numbering keys of credit notes are their reversal txn-id's prefix + the invoice."""
    return document_key.startswith(CREDIT_NOTE_PREFIX)


def credit_note_key(invoice_number: str) -> str:
    """The numbering key of the credit note that cancels ``invoice_number``."""
    return f"{CREDIT_NOTE_PREFIX}{invoice_number}"


def prepayment_key(lot_id: str) -> str:
    """The numbering key of the prepayment invoice of credit lot ``lot_id``."""
    return f"{PREPAYMENT_PREFIX}{lot_id}"


def prepayment_lot_of(document_key: str) -> str | None:
    """The credit lot a prepayment invoice's numbering key names, None for other keys."""
    if not document_key.startswith(PREPAYMENT_PREFIX):
        return None
    return document_key.removeprefix(PREPAYMENT_PREFIX)

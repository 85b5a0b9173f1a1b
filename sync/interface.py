"""The one small interface every external system's adapter implements, and what it returns.

A connector pushes beanbill's issued documents (``ledger.invoicing.documents``), looking
for each by beanbill's number before creating it (a timed-out create must not
duplicate), verifies and parses the webhooks its system sends, and turns what happened
remotely (payments, refunds, fees, payouts, disputes) into ``Movement`` records. The sync
engine turns movements into ledger entries, so a connector never writes the ledger; a new
system is one module under ``connectors/`` implementing ``Connector``, and its tests.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from enum import StrEnum
from typing import Any, NamedTuple, Protocol

from beanbill.ledger.accounts import ProcessorAccounts
from beanbill.ledger.invoicing.documents import InvoiceDocument
from beanbill.rating.errors import BeanbillError

MAX_IDEMPOTENCY_KEY_LENGTH = 255


class WebhookRejected(BeanbillError):
    """A webhook whose signature is missing, wrong or stale, or whose body is not an event."""


class MalformedEvent(BeanbillError):
    """An event or remote object that does not hold what its type promises (a float or NaN
    amount, a missing id, a date out of range): kept and reported, never posted."""


class Malformed(NamedTuple):
    """A remote object reconciliation could not read, and why: reported, others go on."""

    remote_id: str
    reason: str


class RemoteDocument(NamedTuple):
    """Where a document lives in the external system, and its state there."""

    remote_ids: dict[str, str]
    status: str
    total_minor: int


class WebhookEvent(NamedTuple):
    event_id: str
    event_type: str
    payload: dict[str, Any]


class MovementKind(StrEnum):
    PAYMENT = "payment"  # clearing ← receivable
    REFUND = "refund"  # receivable ← clearing
    FEE = "fee"  # fees expense ← clearing
    PAYOUT = "payout"  # bank ← clearing
    DISPUTE_HOLD = "dispute-hold"  # disputed ← clearing
    DISPUTE_WON = "dispute-won"  # clearing ← disputed
    DISPUTE_LOST = "dispute-lost"  # receivable ← disputed: the customer owes it again
    REFUND_FAILED = "refund-failed"  # clearing ← receivable: the refund came back
    FEE_RETURNED = "fee-returned"  # clearing ← fees: a fee given back (a dispute won)
    # The remote system keeps a balance per customer (Stripe's customer balance), mirrored
    # per organization by its unapplied account (negative: credit held for the customer).
    BALANCE_SETTLED = "balance-settled"  # unapplied ← receivable: invoice settled from it
    BALANCE_CHARGED = "balance-charged"  # receivable ← unapplied: carried into an invoice


class Movement(NamedTuple):
    """Money that moved in the external system; ``txn_id`` is the same from every path."""

    txn_id: str
    kind: MovementKind
    day: date
    amount_minor: int
    currency: str
    remote_id: str
    document: str | None = None  # our invoice number, when the remote object carries it
    org: str | None = None  # our organization, when the remote object carries it
    remote_customer: str | None = None  # resolved to an organization by the sync state
    # A payment only: how much of its invoice the remote customer balance settled (> 0) or
    # added to it (< 0), so the amount expected is the amount due minus this.
    balance_applied_minor: int = 0


class StatusChange(NamedTuple):
    """A payment state worth showing (failed, disputed) that moves no money by itself."""

    remote_id: str
    status: str
    document: str | None
    detail: str


class Interpretation(NamedTuple):
    movements: tuple[Movement, ...]
    statuses: tuple[StatusChange, ...]


class RemoteInvoice(NamedTuple):
    """An invoice as the remote system has it, for reconciliation."""

    remote_id: str
    number: str | None  # None: not made by beanbill
    org: str | None
    status: str
    total_minor: int
    paid_minor: int
    payment: Movement | None
    balance_applied_minor: int = 0  # settled from (> 0) or added by (< 0) the customer balance


class DocumentTarget(Protocol):
    """What the push needs of a target: a name and ``push``. A delivery target (e-mail)
    is only this; a ``Connector`` also takes money movements back.

    Optional, looked up by the engine: ``intent(document) -> dict[str, str]`` (remote ids
    known before pushing, recorded first: an e-mail's Message-ID), ``check()`` (run once at
    start: a target that fails it is skipped), ``close()`` (after the run),
    ``delivers_prepayments`` (prepayment invoices are pushed to it too).
    """

    name: str

    def push(self, document: InvoiceDocument, known: dict[str, str]) -> RemoteDocument:
        """Create the document remotely, or finish a half-done push; safe to repeat.

        ``known`` holds the remote ids of what this document refers to (its customer, the
        invoice a credit note corrects) as the sync state remembers them.
        """
        ...


class Connector(DocumentTarget, Protocol):
    accounts: ProcessorAccounts  # what its money movements post to (opened on first use)

    def parse_webhook(self, body: bytes, headers: Mapping[str, str]) -> WebhookEvent:
        """Verify the signature over the raw body, then parse; raise WebhookRejected."""
        ...

    def interpret(self, event: WebhookEvent) -> Interpretation:
        """What an event means for the books; unknown events mean nothing (not an error).

        Raises ``MalformedEvent`` for an event that does not hold what its type promises.
        """
        ...

    def remote_invoices(self, since: date) -> list[RemoteInvoice | Malformed]: ...

    def movements_since(self, since: date) -> list[Movement | Malformed]:
        """What moved since ``since``, with the txn-ids the webhook path gives the same facts.

        An object that cannot be read is a ``Malformed`` in its place: it blocks nothing.
        """
        ...

    def customer_balances_minor(self, currency: str) -> dict[str, int]:
        """Each organization's balance held by the remote system (negative: credit for the
        customer), which its unapplied account mirrors; empty if the system keeps none."""
        ...

    def clearing_balance_minor(self, currency: str) -> int:
        """What the remote system holds for us now (its balance), to check the clearing
        account against: any difference is drift a human must look at."""
        ...


def idempotency_key(workspace_id: str, target: str, document_number: str, operation: str) -> str:
    """Stable across retries and runs: the same operation always carries the same key.

    The workspace id keeps two workspaces that share one remote account apart: the same
    invoice number in both never replays the other's answer.
    """
    key = f"beanbill:{workspace_id}:{target}:{document_number}:{operation}"
    if len(key) > MAX_IDEMPOTENCY_KEY_LENGTH:
        raise ValueError(f"idempotency key over {MAX_IDEMPOTENCY_KEY_LENGTH} characters: {key}")
    return key

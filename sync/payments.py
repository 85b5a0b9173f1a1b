"""Money that moved remotely, posted to the ledger by the single writer.

Webhook events wait in the durable inbox; ``apply_events`` takes a bounded batch, asks the
connector what each means (``Movement`` records, status changes), turns movements into
balanced transactions and appends them under the workspace lock, then closes the events.
A crash between the append and the close is harmless: the same event gives the same
txn-id, which the writer finds already written. Reconciliation posts through
``post_movements`` too, so the two paths can never book one fact twice.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date

from beanbill.ledger import keys
from beanbill.ledger.accounts import (
    ACCOUNTS_FILE,
    BANK,
    BOOKS_OPEN_DATE,
    ProcessorAccounts,
    organization_accounts,
    processor_opens,
)
from beanbill.ledger.entries import Entry, Open, Posting, Transaction
from beanbill.ledger.invoicing.documents import DocumentError, load_document
from beanbill.ledger.invoicing.numbering import open_numbers
from beanbill.ledger.wording import about, billing_link_of_key
from beanbill.ledger.writer import LedgerConflictError, LedgerWriter
from beanbill.rating.errors import BeanbillError
from beanbill.rating.workspace import Workspace
from beanbill.sync.interface import (
    Connector,
    MalformedEvent,
    Movement,
    MovementKind,
    WebhookEvent,
)
from beanbill.sync.retry import PermanentError, TransientError
from beanbill.sync.state import SyncState

MAX_EVENTS_PER_BATCH = 500
MAX_MOVEMENT_MINOR = 10**13
LAST_DAY = date(2099, 12, 31)
QUARANTINED = "quarantined"
NARRATIONS = {
    MovementKind.PAYMENT: "payment",
    MovementKind.REFUND: "refund",
    MovementKind.FEE: "processing fee",
    MovementKind.PAYOUT: "payout to the bank",
    MovementKind.DISPUTE_HOLD: "dispute opened, funds held",
    MovementKind.DISPUTE_WON: "dispute won, funds released",
    MovementKind.DISPUTE_LOST: "dispute lost, amount due again",
    MovementKind.REFUND_FAILED: "refund failed, amount returned",
    MovementKind.FEE_RETURNED: "fee returned",
    MovementKind.BALANCE_SETTLED: "customer balance settled",
    MovementKind.BALANCE_CHARGED: "customer balance credited or carried",
}
PAYEE_ONLY_KINDS = frozenset(
    {
        MovementKind.FEE,
        MovementKind.FEE_RETURNED,
        MovementKind.DISPUTE_HOLD,
        MovementKind.DISPUTE_WON,
    }
)
# Movements between an organization's receivable and its unapplied account (the mirror of
# the remote customer balance): both must be known.
BALANCE_KINDS = frozenset({MovementKind.BALANCE_SETTLED, MovementKind.BALANCE_CHARGED})


class Unmatched(BeanbillError):
    """A movement the books cannot take as it is (unknown organization, other currency).

    Caught per movement and reported, never fatal: the other movements are posted.
    """


@dataclass
class MovementsPosted:
    posted: int = 0
    unchanged: int = 0
    problems: dict[str, str] = field(default_factory=dict)  # txn-id → why it was not posted
    notices: dict[str, str] = field(default_factory=dict)  # txn-id → posted, but look at it


def _accounts(
    kind: MovementKind,
    processor: ProcessorAccounts,
    receivable: str | None,
    unapplied: str | None = None,
) -> tuple[str, str]:
    """(debited, credited) accounts of a movement."""
    clearing, disputed, fees = processor.all()
    needs_receivable = kind in (
        MovementKind.PAYMENT,
        MovementKind.REFUND,
        MovementKind.DISPUTE_LOST,
        MovementKind.REFUND_FAILED,
        *BALANCE_KINDS,
    )
    if needs_receivable and receivable is None:
        raise Unmatched("no organization known for it")
    if kind in BALANCE_KINDS and unapplied is None:
        raise Unmatched("no unapplied account known for it")
    pairs = {
        MovementKind.PAYMENT: (clearing, receivable),
        MovementKind.REFUND: (receivable, clearing),
        MovementKind.FEE: (fees, clearing),
        MovementKind.PAYOUT: (BANK, clearing),
        MovementKind.DISPUTE_HOLD: (disputed, clearing),
        MovementKind.DISPUTE_WON: (clearing, disputed),
        MovementKind.DISPUTE_LOST: (receivable, disputed),
        MovementKind.REFUND_FAILED: (clearing, receivable),
        MovementKind.FEE_RETURNED: (clearing, fees),
        MovementKind.BALANCE_SETTLED: (unapplied, receivable),
        MovementKind.BALANCE_CHARGED: (receivable, unapplied),
    }
    debit, credit = pairs[kind]
    return str(debit), str(credit)


def movement_entry(
    movement: Movement,
    target: str,
    processor: ProcessorAccounts,
    org: str | None,
    receivable: str | None,
    currency: str,
    overpaid: tuple[str, int] | None = None,
    unapplied: str | None = None,
    name: str = "",
    story: tuple[str, ...] = (),
) -> Transaction:
    """The transaction for one movement; raises Unmatched when the books cannot take it.

    ``processor`` holds the accounts the connector named ``target`` declared;
    ``overpaid`` (account, minor units) is the part of a payment beyond what its invoice
    was due, held for the customer instead of being taken off the receivable. ``name``
    (the customer's) is the payee; ``story`` the links of the invoice's billing periods.
    """
    if movement.currency != currency:
        raise Unmatched(f"{movement.currency} is not the books' currency {currency}")
    if not 0 < movement.amount_minor <= MAX_MOVEMENT_MINOR:
        raise Unmatched(f"amount {movement.amount_minor} is not in (0, {MAX_MOVEMENT_MINOR}]")
    if not BOOKS_OPEN_DATE <= movement.day <= LAST_DAY:
        raise Unmatched(f"day {movement.day} is outside the books ({BOOKS_OPEN_DATE}..{LAST_DAY})")
    debit, credit = _accounts(movement.kind, processor, receivable, unapplied)
    invoice = f" of invoice {movement.document}" if movement.document else ""
    meta: list[tuple[str, str | date]] = [("remote-id", movement.remote_id)]
    if org and movement.kind not in PAYEE_ONLY_KINDS:
        # Fees and dispute holds name their customer as payee only: they were booked
        # without an org before their invoice could be found, and the metadata of a
        # written entry is its fact (rewording is allowed, not new facts).
        meta.append(("org", org))
    postings = [
        Posting(debit, movement.amount_minor, currency),
        Posting(credit, -movement.amount_minor, currency),
    ]
    if overpaid is not None and overpaid[1] > 0:
        account, excess = overpaid
        postings[1] = Posting(credit, -(movement.amount_minor - excess), currency)
        postings.append(Posting(account, -excess, currency))
    return Transaction(
        date=movement.day,
        txn_id=movement.txn_id,
        narration=about(f"{target.capitalize()} {NARRATIONS[movement.kind]}{invoice}", name),
        postings=tuple(p for p in postings if p.amount_minor),
        links=(keys.link_of_invoice(movement.document), *story) if movement.document else (),
        meta=tuple(meta),
        payee=name,
    )


class IssuedInvoices:
    """What the payment of an invoice is checked against: beanbill's issued invoices."""

    def __init__(self, workspace: Workspace) -> None:
        self.folder = workspace.invoices_dir
        self.issued = {
            a.number: a.document_key
            for a in open_numbers(workspace).all()
            if a.issued and not keys.is_credit_note_key(a.document_key)
        }

    def story(self, number: str | None) -> tuple[str, ...]:
        """The billing period's story link of an issued invoice (none for a prepayment
        invoice, whose story is its credit lot's)."""
        key = self.issued.get(number or "")
        if key is None or keys.prepayment_lot_of(key) is not None:
            return ()
        try:
            return (billing_link_of_key(key),)
        except keys.LedgerKeyError:
            return ()

    def payer_and_due(self, movement: Movement, org: str | None) -> tuple[str, int]:
        """(paying organization, amount due) of the invoice a payment names."""
        number = movement.document
        if number is None or number not in self.issued:
            raise Unmatched(f"invoice {number} was not issued by beanbill: not posted")
        try:
            document = load_document(self.folder / f"{number}.json")
        except DocumentError as error:
            raise Unmatched(f"invoice {number}: {error}") from error
        payer = document.buyer_reference or ""
        if org is not None and org != payer:
            raise Unmatched(f"invoice {number} is {payer}'s, the payment names {org}")
        return payer, document.due_minor


def post_movements(
    workspace: Workspace, connector: Connector, state: SyncState, movements: list[Movement]
) -> MovementsPosted:
    """Append the movements' transactions (idempotent by txn-id) under the workspace lock.

    The connector's declared accounts are opened first if the ledger lacks them.
    """
    summary = MovementsPosted()
    target = connector.name
    currency = workspace.settings.billing.currency
    accounts = organization_accounts(workspace.customers.customer)
    invoices = IssuedInvoices(workspace)
    names = {customer.id: customer.name for customer in workspace.customers.customer}
    by_file: dict[str, dict[str, Entry]] = defaultdict(dict)
    opens: dict[str, Open] = {}
    for movement in movements:
        org = movement.org
        if org is None and movement.remote_customer:
            org = state.local_id(target, "customer", movement.remote_customer)
        overpaid: tuple[str, int] | None = None
        try:
            if movement.kind is MovementKind.PAYMENT:
                org, due = invoices.payer_and_due(movement, org)
                # The remote customer balance settled part of it, or added to it.
                due -= movement.balance_applied_minor
                if org in accounts and movement.amount_minor > due:
                    overpaid = (accounts[org].unapplied, movement.amount_minor - due)
                    opens[overpaid[0]] = Open(BOOKS_OPEN_DATE, overpaid[0], currency)
                    summary.notices[movement.txn_id] = (
                        f"paid {movement.amount_minor} on {due} due (minor units): "
                        f"{overpaid[1]} held in {overpaid[0]}"
                    )
            receivable = accounts[org].receivable if org in accounts else None
            unapplied = accounts[org].unapplied if org in accounts else None
            if movement.kind in BALANCE_KINDS and unapplied is not None:
                opens[unapplied] = Open(BOOKS_OPEN_DATE, unapplied, currency)
            entry = movement_entry(
                movement, target, connector.accounts, org, receivable, currency, overpaid,
                unapplied, names.get(org or "", ""), invoices.story(movement.document),
            )  # fmt: skip
        except Unmatched as error:
            summary.problems[movement.txn_id] = str(error)
            continue
        by_file[f"books/{movement.day:%Y-%m}/payments.beancount"][entry.txn_id] = entry
    writer = LedgerWriter(workspace.ledger_path)
    with workspace.writing():
        if by_file:
            _open_processor_accounts(workspace, writer, connector)
        if opens:
            writer.open_missing(ACCOUNTS_FILE, list(opens.values()))
        for target_file, entries in sorted(by_file.items()):
            try:
                result = writer.append(target_file, list(entries.values()))
                summary.posted += result.written
                summary.unchanged += result.unchanged
            except LedgerConflictError:
                _one_by_one(writer, target_file, list(entries.values()), summary)
    return summary


def _open_processor_accounts(
    workspace: Workspace, writer: LedgerWriter, connector: Connector
) -> None:
    currency = workspace.settings.billing.currency
    opens = processor_opens(connector.accounts, connector.name, currency, set())
    writer.open_missing(ACCOUNTS_FILE, opens)


def _one_by_one(
    writer: LedgerWriter, target_file: str, entries: list[Entry], summary: MovementsPosted
) -> None:
    """A conflicting entry must not hold back the others: append them singly."""
    for entry in entries:
        try:
            result = writer.append(target_file, [entry])
            summary.posted += result.written
            summary.unchanged += result.unchanged
        except LedgerConflictError as error:
            summary.problems[entry.txn_id] = f"conflict: {error}"


def apply_events(
    workspace: Workspace,
    connector: Connector,
    state: SyncState,
    limit: int = MAX_EVENTS_PER_BATCH,
) -> int:
    """Post one batch of waiting events; how many events were closed (an event whose
    meaning needs the remote system while it cannot be reached waits for the next batch)."""
    events = state.unprocessed_events(connector.name, limit)
    if not events:
        return 0
    movements: list[Movement] = []
    owners: dict[str, list[str]] = defaultdict(list)  # txn-id → event ids
    outcomes: dict[str, str] = {}
    for event in events:
        try:
            meaning = connector.interpret(
                WebhookEvent(event.event_id, event.event_type, event.payload)
            )
        except MalformedEvent as error:  # kept in the inbox with why; the rest go on
            outcomes[event.event_id] = f"{QUARANTINED}: {error}"
            continue
        except TransientError:
            continue  # the remote system could not be asked now: the event waits, unclosed
        except PermanentError as error:
            outcomes[event.event_id] = f"{QUARANTINED}: {error}"
            continue
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as error:
            outcomes[event.event_id] = f"{QUARANTINED}: {type(error).__name__}: {error}"
            continue
        for change in meaning.statuses:
            state.set_status(
                connector.name, change.remote_id, change.document, change.status, change.detail
            )
        for movement in meaning.movements:
            movements.append(movement)
            owners[movement.txn_id].append(event.event_id)
        outcomes[event.event_id] = (
            "posted" if meaning.movements else "status" if meaning.statuses else "ignored"
        )
    summary = post_movements(workspace, connector, state, movements)
    for txn_id, problem in summary.problems.items():
        for event_id in owners[txn_id]:
            outcomes[event_id] = f"unmatched: {txn_id}: {problem}"
    for txn_id, notice in summary.notices.items():
        for event_id in owners[txn_id]:
            outcomes[event_id] = f"posted: {txn_id}: {notice}"
    state.mark_processed(connector.name, outcomes)
    return len(outcomes)  # events left waiting (remote unreachable) are not counted

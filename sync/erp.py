"""Payments kept equal between the ledger and an ERP, both ways, each booked once.

An ERP (Tryton, ...) is not a payment processor: it holds no money of ours, it keeps its
own books of the same invoices. Reconciling with it means:

- a payment the ledger has (a Stripe webhook, a reconciliation, a bank transfer booked
  here) is recorded on the ERP's invoice, described by its txn-id so that the next run
  finds it instead of recording it again;
- a payment recorded in the ERP (a bank transfer the accountant entered there) comes back
  as a ledger movement (bank ← receivable) under a txn-id derived from the ERP's own id,
  posted through ``post_movements`` like every other movement, so it is booked once;
- an invoice paid in both systems, or paid in the ERP for another amount than it owes, is
  a discrepancy for a human (exit 1): nothing is posted or recorded for it, so no payment
  is ever booked twice.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Sequence
from datetime import date
from typing import NamedTuple, Protocol, runtime_checkable

from beanbill.ledger import keys
from beanbill.ledger.accounts import RECEIVABLE_ROOT, ProcessorAccounts, under
from beanbill.ledger.books import LedgerLoadError, load_books
from beanbill.rating.workspace import Workspace
from beanbill.sync.interface import Connector, Malformed, Movement
from beanbill.sync.payments import post_movements
from beanbill.sync.reconcile import ReconcileReport, ledger_dues
from beanbill.sync.retry import PermanentError, RetryPolicy, TransientError
from beanbill.sync.state import PushStatus, SyncState

MAX_INVOICES = 100_000


class ErpPayment(NamedTuple):
    """A payment line of an ERP invoice."""

    remote_id: str
    day: date
    amount_minor: int
    recorded_txn_id: str | None  # the ledger txn-id it was recorded from; None: the ERP's own


class ErpInvoice(NamedTuple):
    """One of our invoices as the ERP has it."""

    remote_id: str
    number: str
    state: str  # the ERP's words ("posted", "paid", "cancelled")
    total_minor: int
    org: str | None
    currency: str
    payments: tuple[ErpPayment, ...]


class LedgerPayment(NamedTuple):
    """A payment of an invoice in the ledger: what took it off the receivable."""

    txn_id: str
    number: str
    day: date
    amount_minor: int
    currency: str


@runtime_checkable
class Erp(Connector, Protocol):
    """What an ERP connector adds to ``Connector``."""

    name: str
    accounts: ProcessorAccounts

    def erp_invoices(self, numbers: Sequence[str]) -> list[ErpInvoice | Malformed]:
        """Our invoices (by number) as the ERP has them, with their payment lines."""
        ...

    def payment_movement(self, invoice: ErpInvoice, payment: ErpPayment) -> Movement:
        """A payment the ERP recorded, as a movement (bank ← receivable)."""
        ...

    def record_payment(self, payment: LedgerPayment) -> str:
        """Record a ledger payment on the ERP invoice (looking first); its remote id."""
        ...


def ledger_payments(workspace: Workspace) -> dict[str, list[LedgerPayment]]:
    """Invoice number → the ledger's payments of it: transactions linked to the invoice
    that take money off a receivable, other than issuing and crediting it."""
    currency = workspace.settings.billing.currency
    books = load_books(workspace.ledger_path, currency)
    payments: dict[str, list[LedgerPayment]] = defaultdict(list)
    for txn_id in sorted(books.txn_ids()):
        if keys.is_invoicing(txn_id) or keys.is_usage(txn_id):
            continue
        try:
            transaction = books.transaction(txn_id)
        except LedgerLoadError:
            continue  # a document or an open, not a transaction
        paid = -sum(
            posting.amount_minor
            for posting in transaction.postings
            if under(posting.account, RECEIVABLE_ROOT)
        )
        if paid <= 0:
            continue
        for link in transaction.links:
            number = link.removeprefix("invoice-")
            if link != number and link == keys.link_of_invoice(number):
                payments[number].append(
                    LedgerPayment(txn_id, number, transaction.date, paid, currency)
                )
    return payments


def synced_invoices(state: SyncState, target: str, issued: set[str]) -> list[str]:
    numbers = [
        record.document
        for record in state.records(target)
        if record.status is PushStatus.SYNCED and record.document in issued
    ]
    if len(numbers) > MAX_INVOICES:
        raise PermanentError(f"{len(numbers)} invoices to reconcile: at most {MAX_INVOICES}")
    return numbers


def reconcile_erp(
    workspace: Workspace, erp: Erp, state: SyncState, policy: RetryPolicy | None = None
) -> ReconcileReport:
    """Payments both ways between the ledger and ``erp`` for every invoice synced to it;
    recording a payment is retried under ``policy`` (it looks before recording)."""
    retrying = policy or RetryPolicy()
    report = ReconcileReport()
    dues, txn_ids = ledger_dues(workspace)
    listed = erp.erp_invoices(synced_invoices(state, erp.name, set(dues)))
    by_ledger = ledger_payments(workspace)
    to_post: list[Movement] = []
    to_record: list[LedgerPayment] = []
    for item in listed:
        if isinstance(item, Malformed):
            report.discrepancies.append(
                f"{erp.name} invoice {item.remote_id}: malformed, not reconciled: {item.reason}"
            )
            continue
        report.checked_invoices += 1
        posts, records, problems = _compare(erp, item, dues, txn_ids, by_ledger)
        to_post += posts
        to_record += records
        report.discrepancies += problems
    report.movements = len(to_post)
    report.posted = post_movements(workspace, erp, state, to_post)
    for txn_id, problem in sorted(report.posted.problems.items()):
        report.discrepancies.append(f"{txn_id}: not posted: {problem}")
    for payment in to_record:
        try:
            retrying.call(functools.partial(erp.record_payment, payment))
        except (PermanentError, TransientError) as error:
            report.discrepancies.append(
                f"{payment.number}: the ledger's payment {payment.txn_id} is not recorded in "
                f"{erp.name}: {error}"
            )
    return report


def _compare(
    erp: Erp,
    invoice: ErpInvoice,
    dues: dict[str, int],
    txn_ids: set[str],
    by_ledger: dict[str, list[LedgerPayment]],
) -> tuple[list[Movement], list[LedgerPayment], list[str]]:
    """(movements to post, ledger payments to record in the ERP, discrepancies) of one
    invoice."""
    where = f"{erp.name} invoice {invoice.remote_id} ({invoice.number})"
    due = dues.get(invoice.number)
    if due is None:
        return [], [], [f"{where}: not an invoice beanbill issued"]
    problems = []
    if invoice.total_minor != due:
        problems.append(
            f"{where}: amount mismatch: {erp.name} {invoice.total_minor}, ledger {due} "
            "(minor units)"
        )
    foreign = [p for p in invoice.payments if p.recorded_txn_id is None]
    movements = [erp.payment_movement(invoice, payment) for payment in foreign]
    from_erp = {movement.txn_id for movement in movements}
    ledger = [p for p in by_ledger.get(invoice.number, []) if p.txn_id not in from_erp]
    recorded = {p.recorded_txn_id for p in invoice.payments if p.recorded_txn_id}
    missing = [m for m in movements if m.txn_id not in txn_ids]
    if ledger and foreign:
        problems.append(
            f"{where}: paid in both systems: the ledger by "
            f"{', '.join(p.txn_id for p in ledger)}, {erp.name} by payment "
            f"{', '.join(p.remote_id for p in foreign)}: nothing posted or recorded"
        )
        return [], [], problems
    paid_in_erp = sum(payment.amount_minor for payment in foreign)
    if missing and paid_in_erp != due:
        problems.append(
            f"{where}: {erp.name} payments total {paid_in_erp}, due {due} (minor units): not posted"
        )
        return [], [], problems
    to_record = [p for p in ledger if p.txn_id not in recorded]
    if to_record and invoice.state == "cancelled":
        problems.append(f"{where}: cancelled in {erp.name}, the ledger has a payment")
        return missing, [], problems
    return missing, to_record, problems

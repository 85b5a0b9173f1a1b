"""Compare what the remote system says happened with the ledger, post what is missing.

Polling is the safety net under the webhooks: a missed or refused event, an outage of
`beanbill serve`, a payment made while it was down. Missing movements are posted with the
txn-ids the webhook path would have used (so neither path can book a fact twice), and
what cannot be reconciled automatically is reported for a human.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

from beanbill.ledger import keys
from beanbill.ledger.accounts import RECEIVABLE_ROOT, organization_accounts, under
from beanbill.ledger.books import load_books
from beanbill.rating.workspace import Workspace
from beanbill.sync.interface import Connector, Malformed, Movement, RemoteInvoice
from beanbill.sync.payments import MovementsPosted, post_movements
from beanbill.sync.state import SyncState


@dataclass
class ReconcileReport:
    checked_invoices: int = 0
    movements: int = 0
    posted: MovementsPosted = field(default_factory=MovementsPosted)
    discrepancies: list[str] = field(default_factory=list)


def ledger_dues(workspace: Workspace) -> tuple[dict[str, int], set[str]]:
    """Invoice number → amount due as issued (minor units), and every txn-id in the books."""
    books = load_books(workspace.ledger_path, workspace.settings.billing.currency)
    dues: dict[str, int] = {}
    txn_ids = books.txn_ids()
    for txn_id in txn_ids:
        number = keys.invoice_number_of(txn_id)
        if number is not None:
            issuance = books.transaction(txn_id)
            dues[number] = sum(
                p.amount_minor for p in issuance.postings if under(p.account, RECEIVABLE_ROOT)
            )
    return dues, txn_ids


def reconcile(
    workspace: Workspace, connector: Connector, state: SyncState, since: date
) -> ReconcileReport:
    report = ReconcileReport()
    listed = connector.remote_invoices(since)
    remote = [item for item in listed if isinstance(item, RemoteInvoice)]
    movements: list[Movement] = [i.payment for i in remote if i.payment is not None]
    found = connector.movements_since(since)
    movements += [item for item in found if isinstance(item, Movement)]
    for bad in [*listed, *found]:
        if isinstance(bad, Malformed):  # kept out of the books, for a human
            report.discrepancies.append(
                f"{connector.name} object {bad.remote_id}: malformed, not posted: {bad.reason}"
            )
    report.checked_invoices = len(remote)
    report.movements = len(movements)
    dues, txn_ids = ledger_dues(workspace)
    missing = [m for m in movements if m.txn_id not in txn_ids]
    report.posted = post_movements(workspace, connector, state, missing)
    for txn_id, problem in sorted(report.posted.problems.items()):
        report.discrepancies.append(f"{txn_id}: not posted: {problem}")
    for txn_id, notice in sorted(report.posted.notices.items()):
        report.discrepancies.append(f"{txn_id}: posted, overpaid: {notice}")
    for invoice in remote:
        where = f"{connector.name} invoice {invoice.remote_id}"
        if invoice.number is None or invoice.number not in dues:
            report.discrepancies.append(f"{where}: unknown remote invoice ({invoice.number})")
            continue
        due = dues[invoice.number]
        if invoice.total_minor != due:
            report.discrepancies.append(
                f"{where}: amount mismatch for {invoice.number}: remote {invoice.total_minor}, "
                f"ledger {due} (minor units)"
            )
        expected = due - invoice.balance_applied_minor  # less what the customer balance took
        if invoice.payment is not None and invoice.payment.amount_minor != expected:
            report.discrepancies.append(
                f"{where}: {invoice.number} paid {invoice.payment.amount_minor}, due {expected}"
            )
        if invoice.payment is not None and invoice.payment.txn_id in report.posted.problems:
            report.discrepancies.append(
                f"{where}: {invoice.number} paid remotely but open in the ledger"
            )
    drift = clearing_drift(workspace, connector)
    if drift:
        report.discrepancies.append(drift)
    report.discrepancies.extend(customer_balance_drift(workspace, connector))
    return report


def customer_balance_drift(workspace: Workspace, connector: Connector) -> list[str]:
    """Each organization's unapplied account must hold its remote customer balance."""
    currency = workspace.settings.billing.currency
    remote = connector.customer_balances_minor(currency)
    accounts = organization_accounts(workspace.customers.customer)
    unapplied = {org: accounts[org].unapplied for org in remote if org in accounts}
    books = load_books(workspace.ledger_path, currency).balances(unapplied.values())
    return [
        f"{account} is {books[account]} in the ledger, the {connector.name} customer balance "
        f"of {org} is {remote[org]} (minor units)"
        for org, account in sorted(unapplied.items())
        if books[account] != remote[org]
    ]


def clearing_drift(workspace: Workspace, connector: Connector) -> str | None:
    """The clearing account must hold what the remote system holds: fees, refunds,
    disputes and payouts all booked. Any difference is reported, never adjusted."""
    currency = workspace.settings.billing.currency
    remote = connector.clearing_balance_minor(currency)
    books = load_books(workspace.ledger_path, currency)
    clearing = connector.accounts.clearing
    ledger = books.balances([clearing]).get(clearing, 0)
    if remote == ledger:
        return None
    return (
        f"{connector.accounts.clearing} is {ledger} in the ledger, {connector.name} holds "
        f"{remote} (minor units): a movement is missing or was booked elsewhere"
    )

"""The nightly push: every issued invoice and credit note, to every enabled target, once.

What to push comes from the numbering state (issued numbers) and the documents' snapshots
written at issuance, so a push sends exactly what was issued. Each document × target is
tried under the retry policy; the connector looks before it creates on every try, so a
timed-out create is found rather than repeated. A document that keeps failing, or fails in
a way retrying cannot fix, is dead-lettered with the reason; `sync retry` re-queues it.
A credit note goes before the invoices when the invoice it corrects is synced (so its
credit is in the remote customer balance when the replacement is finalized), else after
them; it waits while the invoice it corrects is not synced.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date

from beanbill.ledger import keys
from beanbill.ledger.books import load_books
from beanbill.ledger.invoicing.documents import (
    DocumentError,
    DocumentType,
    InvoiceDocument,
    load_document,
)
from beanbill.ledger.invoicing.numbering import open_numbers
from beanbill.ledger.invoicing.recovery import numbering_state
from beanbill.rating.errors import BeanbillError
from beanbill.rating.storage import exclusive_lock
from beanbill.rating.workspace import Workspace
from beanbill.sync.interface import DocumentTarget, RemoteDocument
from beanbill.sync.retry import PermanentError, RetryPolicy, TransientError
from beanbill.sync.state import PushStatus, SyncState

MAX_DOCUMENTS_PER_RUN = 100_000
PUSH_LOCK_FILE = "sync-push.lock"
PUSH_LOCK_WAIT_SECONDS = 5.0


def one_push_at_a_time(workspace: Workspace) -> contextlib.AbstractContextManager[None]:
    """Two pushes at once would race on the same documents: the second one is refused."""
    return exclusive_lock(
        workspace.state_dir / PUSH_LOCK_FILE,
        PUSH_LOCK_WAIT_SECONDS,
        "another beanbill sync push is running on this workspace; try again when it ends",
    )


CUSTOMER = "customer"
INVOICE = "invoice"


@dataclass
class PushSummary:
    synced: list[str] = field(default_factory=list)
    already: int = 0
    waiting: list[str] = field(default_factory=list)  # credit notes whose invoice is not synced
    dead: list[tuple[str, str, str]] = field(default_factory=list)  # (document, target, reason)
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (document, reason)

    @property
    def needs_attention(self) -> bool:
        return bool(self.dead or self.unreadable)


def issued_snapshots(
    workspace: Workspace, include_prepayments: bool = False
) -> tuple[list[InvoiceDocument], list[tuple[str, str]]]:
    """Issued documents in issue order (invoices of a day before its credit notes), and the
    (number, reason) of each whose snapshot cannot be read: those wait, the others go.

    Prepayment invoices are paid when the credit is bought (by card at checkout, or by
    transfer): there is nothing to collect, so they are not pushed to a payment processor
    or an ERP; a delivery target (e-mail) asks for them with ``include_prepayments``."""
    numbers = open_numbers(workspace)
    if not numbers.exists():  # lost: rebuilt from the ledger, never started empty
        books = load_books(workspace.ledger_path, workspace.settings.billing.currency)
        numbers = numbering_state(workspace, books)
    issued = [
        a
        for a in numbers.all()
        if a.issued and (include_prepayments or keys.prepayment_lot_of(a.document_key) is None)
    ]
    if len(issued) > MAX_DOCUMENTS_PER_RUN:
        raise BeanbillError(f"{len(issued)} issued documents: at most {MAX_DOCUMENTS_PER_RUN}")
    issued.sort(key=lambda a: (a.issue_date, keys.is_credit_note_key(a.document_key), a.number))
    documents: list[InvoiceDocument] = []
    unreadable: list[tuple[str, str]] = []
    for assigned in issued:
        try:
            documents.append(load_document(workspace.invoices_dir / f"{assigned.number}.json"))
        except DocumentError as error:
            unreadable.append((assigned.number, f"{error}; `beanbill invoice render` rewrites it"))
    return documents, unreadable


def issued_documents(workspace: Workspace) -> list[InvoiceDocument]:
    """The issued documents whose snapshots can be read, in issue order."""
    return issued_snapshots(workspace)[0]


def target_documents(
    documents: list[InvoiceDocument], delivers_prepayments: bool, since: date | None
) -> list[InvoiceDocument]:
    """What one target is to have of the issued documents: prepayment invoices only if it
    delivers them, and nothing issued before ``since`` (a target enabled on a workspace
    with a history is not sent years of old invoices)."""
    return [
        document
        for document in documents
        if (delivers_prepayments or document.type is not DocumentType.PREPAYMENT_INVOICE)
        and (since is None or document.issue_date >= since)
    ]


def documents_for(
    connector: DocumentTarget, documents: list[InvoiceDocument]
) -> list[InvoiceDocument]:
    return target_documents(
        documents,
        getattr(connector, "delivers_prepayments", False) is True,
        getattr(connector, "since", None),
    )


def known_ids(state: SyncState, target: str, document: InvoiceDocument) -> dict[str, str]:
    known: dict[str, str] = {}
    customer = state.remote_id(target, CUSTOMER, document.buyer_reference or "")
    if customer:
        known["customer"] = customer
    if document.preceding_number:
        invoice = state.remote_id(target, INVOICE, document.preceding_number)
        if invoice:
            known["invoice"] = invoice
    return known


def push_one(
    connector: DocumentTarget, state: SyncState, policy: RetryPolicy, document: InvoiceDocument
) -> str | None:
    """Push until synced or dead; the dead-letter reason, or None when synced."""
    target = connector.name
    intent = getattr(connector, "intent", None)
    if callable(intent):  # known before pushing: in the state before anything is sent
        state.record_intent(document.number, target, intent(document))

    def attempt() -> RemoteDocument:
        try:
            remote = connector.push(document, known_ids(state, target, document))
        except (TransientError, PermanentError) as error:
            state.record_attempt(document.number, target, str(error))
            raise
        state.record_attempt(document.number, target, None)
        return remote

    try:
        remote = policy.call(attempt)
    except (TransientError, PermanentError) as error:
        reason = f"{type(error).__name__}: {error}"
        state.mark_dead(document.number, target, reason)
        return reason
    ids = remote.remote_ids
    if ids.get("customer"):
        state.remember(target, CUSTOMER, document.buyer_reference or "", ids["customer"])
    if document.type is DocumentType.INVOICE and ids.get("invoice"):
        state.remember(target, INVOICE, document.number, ids["invoice"])
    synced = {**ids, "total_minor": str(remote.total_minor), "status": remote.status}
    state.mark_synced(document.number, target, synced)
    return None


def push_all(
    documents: list[InvoiceDocument],
    connectors: list[DocumentTarget],
    state: SyncState,
    policy: RetryPolicy,
    concurrency: int,
    on_done: Callable[[int], None] = lambda count: None,
) -> PushSummary:
    summary = PushSummary()
    for connector in connectors:
        target = connector.name
        todo = []
        for document in documents_for(connector, documents):
            record = state.get(document.number, target)
            if record is not None and record.status is not PushStatus.PENDING:
                summary.already += record.status is PushStatus.SYNCED
                on_done(1)
            else:
                todo.append(document)
        invoices = [d for d in todo if d.type is not DocumentType.CREDIT_NOTE]
        notes = [d for d in todo if d.type is DocumentType.CREDIT_NOTE]
        # Corrections first: a credit note's credit is then in the customer's remote balance
        # when the corrected invoice is finalized, which consumes it (Stripe does so).
        ready, notes = _corrections_ready(state, target, notes)
        _run(connector, state, policy, concurrency, ready, summary, on_done)
        _run(connector, state, policy, concurrency, invoices, summary, on_done)
        ready, notes = _corrections_ready(state, target, notes)
        _run(connector, state, policy, concurrency, ready, summary, on_done)
        summary.waiting.extend(note.number for note in notes)
        on_done(len(notes))
    return summary


def _corrections_ready(
    state: SyncState, target: str, notes: list[InvoiceDocument]
) -> tuple[list[InvoiceDocument], list[InvoiceDocument]]:
    """(credit notes whose invoice is synced, the others)."""
    ready: list[InvoiceDocument] = []
    waiting: list[InvoiceDocument] = []
    for note in notes:
        invoice = state.get(note.preceding_number or "", target)
        synced = invoice is not None and invoice.status is PushStatus.SYNCED
        (ready if synced else waiting).append(note)
    return ready, waiting


def _run(
    connector: DocumentTarget,
    state: SyncState,
    policy: RetryPolicy,
    concurrency: int,
    documents: list[InvoiceDocument],
    summary: PushSummary,
    on_done: Callable[[int], None],
) -> None:
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        futures = [
            (document, pool.submit(push_one, connector, state, policy, document))
            for document in documents
        ]
        for document, future in futures:
            reason = future.result()
            if reason is None:
                summary.synced.append(document.number)
            else:
                summary.dead.append((document.number, connector.name, reason))
            on_done(1)

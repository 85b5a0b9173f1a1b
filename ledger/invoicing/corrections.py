"""Credit notes: an issued invoice is never changed, only cancelled by a document of its own.

The credit note (type 381) is the invoice as issued (its snapshot; derived again under its
original number and date if the snapshot is lost and nothing was re-rated since), re-typed
and numbered in the credit-note series; its transaction reverses the
issuance, so the period is due again and the next ``invoice`` run issues it anew.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from pathlib import Path

from beanbill.ledger import keys
from beanbill.ledger.accounts import organization_accounts
from beanbill.ledger.books import load_books
from beanbill.ledger.invoicing import InvoicingError
from beanbill.ledger.invoicing.documents import (
    DocumentError,
    DocumentType,
    check_renderable,
    load_document,
)
from beanbill.ledger.invoicing.due import (
    consumptions,
    covered_keys,
    due_for_issued,
    issued_keys,
)
from beanbill.ledger.invoicing.files import relative_to_ledger_file, write_documents
from beanbill.ledger.invoicing.issuance import credit_note_entries, ledger_file
from beanbill.ledger.invoicing.issue import crash_point, derive_due, series_name
from beanbill.ledger.invoicing.recovery import numbering_state
from beanbill.ledger.writer import LedgerWriter
from beanbill.rating.characters import REFUSED_CHARACTERS
from beanbill.rating.rated_store import RatedStore
from beanbill.rating.workspace import Workspace

MAX_REASON_LENGTH = 300


def checked_reason(reason: str) -> str:
    """A credit note says why it exists: required, one line of printable text."""
    text = reason.strip()
    if not text:
        raise InvoicingError("a credit note needs a reason (--reason)")
    if len(text) > MAX_REASON_LENGTH:
        raise InvoicingError(f"the reason is {len(text)} characters; at most {MAX_REASON_LENGTH}")
    if REFUSED_CHARACTERS.search(text) or "\n" in text or "\r" in text:
        raise InvoicingError("the reason must be one line of printable characters")
    return text


def credit_note(
    workspace: Workspace, number: str, issue_date: date, reason: str
) -> tuple[str, Path]:
    """Cancel an issued invoice with a credit note of its own series; the period is due again."""
    reason = checked_reason(reason)
    currency = workspace.settings.billing.currency
    with workspace.writing(), RatedStore(workspace) as store:
        books = load_books(workspace.ledger_path, currency)
        numbers = numbering_state(workspace, books)
        original = numbers.by_number(number)
        if original is None or not original.issued:
            raise InvoicingError(f"no issued invoice {number}")
        if keys.prepayment_lot_of(original.document_key) is not None:
            raise InvoicingError(
                f"{number} is the prepayment invoice of a credit purchase: cancelling it "
                "means refunding the credit, which beanbill does not model yet"
            )
        if keys.is_credit_note_key(original.document_key):
            raise InvoicingError(f"{number} is a credit note: only invoices are cancelled")
        interrupted = numbers.pending_for(keys.credit_note_key(number))
        if interrupted is not None and keys.credit_note_txn_id(interrupted.number) in (
            books.txn_ids()
        ):  # killed after posting it: only the bookkeeping was left
            numbers.mark_issued(interrupted.number)
            return interrupted.number, workspace.invoices_dir / f"{interrupted.number}.pdf"
        issuance = books.transaction(keys.invoice_txn_id(number))
        meta = dict(issuance.meta)
        key = str(meta[keys.INVOICE_KEY])
        if key not in issued_keys(books):
            raise InvoicingError(f"invoice {number} is already cancelled")
        customers = workspace.customers.by_id()
        customer = customers[str(meta[keys.ORG])]
        receivable = organization_accounts([customer])[customer.id].receivable
        issued_minor = sum(p.amount_minor for p in issuance.postings if p.account == receivable)
        try:  # what was issued, exactly: the snapshot written at issuance
            cancelled = load_document(workspace.invoices_dir / f"{number}.json")
        except DocumentError:  # lost: derived again, which holds while nothing was re-rated
            due = due_for_issued(
                customers, consumptions(books), key, customer, covered_keys(issuance)
            )
            cancelled = derive_due(workspace, store, due, number, original.issue_date).document
        if cancelled.due_minor != issued_minor:
            raise InvoicingError(
                f"{number} was issued for {issued_minor} (minor units) but its document now "
                f"says {cancelled.due_minor}: its snapshot {number}.json is lost and the "
                "period was re-rated since; restore the snapshot from a backup"
            )
        draft = replace(
            cancelled,
            type=DocumentType.CREDIT_NOTE,
            preceding_number=number,
            preceding_issue_date=original.issue_date,
            due_date=None,  # nothing to pay: it cancels what was due
            payment=None,
            reason=reason,
        )
        check_renderable(draft)  # before a number is spent on it
        series = series_name(workspace.settings.invoicing.credit_note_series, issue_date)
        assigned = numbers.assign(series, keys.credit_note_key(number), issue_date)
        crash_point("credit-assign")
        note = replace(draft, number=assigned.number, issue_date=assigned.issue_date)
        snapshot = workspace.invoices_dir / f"{assigned.number}.json"
        if interrupted is not None and snapshot.exists():
            note = load_document(snapshot)  # finished as first written, whatever reason now
        target = ledger_file(assigned.issue_date)
        paths = relative_to_ledger_file(workspace, target, write_documents(workspace, note))
        crash_point("credit-render")
        entries = credit_note_entries(
            issuance, number, assigned.number, assigned.issue_date, receivable, paths
        )
        LedgerWriter(workspace.ledger_path).append(target, entries)
        crash_point("credit-ledger")
        numbers.mark_issued(assigned.number)
    return assigned.number, workspace.invoices_dir / f"{assigned.number}.pdf"

"""Issuing: every due invoice numbered, rendered and posted, crash-safe; and drafts.

Issuing one invoice: assign its number (durable), render its files into ``invoices/``,
append the issuance transaction (``^invoice-<number>``) and ``document`` entries to the
ledger, then mark the number issued. A crash at any step is finished by the next run,
under the same number and date: no gap, no reuse. Every due invoice is derived before any
is numbered, so one that cannot be derived holds no number while it waits.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, replace
from datetime import date, timedelta
from pathlib import Path

from beanbill.ledger import keys
from beanbill.ledger.accounts import organization_accounts
from beanbill.ledger.books import load_books
from beanbill.ledger.entries import Entry
from beanbill.ledger.invoicing import InvoicingError
from beanbill.ledger.invoicing.derive import Derived, InvoiceTerms, derive
from beanbill.ledger.invoicing.documents import DocumentError, InvoiceDocument, check_renderable
from beanbill.ledger.invoicing.due import (
    DueInvoice,
    StaleInvoice,
    due_invoices,
    issued_keys,
    stale_invoices,
)
from beanbill.ledger.invoicing.files import relative_to_ledger_file, render_all
from beanbill.ledger.invoicing.issuance import issuance_entries, ledger_file
from beanbill.ledger.invoicing.numbering import Assigned
from beanbill.ledger.invoicing.recovery import numbering_state
from beanbill.ledger.writer import LedgerWriter
from beanbill.rating.config import BillingMode
from beanbill.rating.periods import Month
from beanbill.rating.progress import Progress, no_progress
from beanbill.rating.rated_store import RatedGroup, RatedStore
from beanbill.rating.workspace import Workspace

CRASH_ENVIRONMENT = "BEANBILL_CRASH_AFTER"
CRASH_EXIT_CODE = 86
MAX_INVOICES_PER_RUN = 100_000
DRAFT_NUMBER = "PENDING"


def crash_point(step: str) -> None:
    """Test hook: die here, like a kill, when BEANBILL_CRASH_AFTER names this step."""
    if os.environ.get(CRASH_ENVIRONMENT) == step:
        os._exit(CRASH_EXIT_CODE)


def series_name(template: str, issue_date: date) -> str:
    return template.replace("{year}", str(issue_date.year))


def rated_detail(store: RatedStore, due: DueInvoice) -> dict[str, list[RatedGroup]]:
    """Each consumption's rated detail, by txn-id (a provision itemizes families only)."""
    if due.customer.billing_mode is BillingMode.PROVISIONED:
        return {}
    return {
        c.txn_id: store.detail_groups(c.rated_file, c.org, c.period, c.day)
        for c in due.consumptions
    }


def derive_due(
    workspace: Workspace, store: RatedStore, due: DueInvoice, number: str, issue_date: date
) -> Derived:
    """``derive`` fed from the workspace: the rated store, catalog, seller and settings."""
    settings = workspace.settings
    terms = InvoiceTerms(number, issue_date, settings.billing.currency, settings.invoicing)
    return derive(due, rated_detail(store, due), workspace.catalog, settings.seller, terms)


@dataclass(frozen=True)
class IssueSummary:
    issued: tuple[str, ...]
    files: tuple[Path, ...]
    refused: tuple[tuple[str, str], ...] = ()  # (invoice key, why): not numbered, reported
    stale: tuple[StaleInvoice, ...] = ()  # re-rated after issue: to cancel and issue again


def issue(
    workspace: Workspace, up_to: Month, issue_date: date, progress: Progress = no_progress
) -> IssueSummary:
    """Issue every invoice due by the end of ``up_to``; finish any interrupted one first.

    ``progress`` hears of each document rendered.
    """
    currency = workspace.settings.billing.currency
    issued: list[str] = []
    files: list[Path] = []
    refused: list[tuple[str, str]] = []
    with workspace.writing(), RatedStore(workspace) as store:
        writer = LedgerWriter(workspace.ledger_path)
        books = load_books(workspace.ledger_path, currency)
        numbers = numbering_state(workspace, books)
        accounts = organization_accounts(workspace.customers.customer)
        due = due_invoices(workspace.customers.by_id(), books, up_to)
        stale = stale_invoices(workspace.customers.by_id(), books)
        by_key = {item.key: item for item in due}
        pending = {assigned.document_key: assigned for assigned in numbers.pending()}
        in_ledger = issued_keys(books)
        posted = books.txn_ids()
        for key, assigned in pending.items():
            credit_note_posted = keys.credit_note_txn_id(assigned.number) in posted
            if key in in_ledger or credit_note_posted:
                # Posted before the crash: only the bookkeeping is left.
                numbers.mark_issued(assigned.number)
                issued.append(assigned.number)
            elif key not in by_key and not keys.is_credit_note_key(key):
                raise InvoicingError(
                    f"number {assigned.number} was assigned to {key}, which is no longer due"
                )
        if len(due) > MAX_INVOICES_PER_RUN:
            raise InvoicingError(f"{len(due)} invoices due: at most {MAX_INVOICES_PER_RUN} per run")
        for item in due:
            if item.key not in pending and issue_date < item.period_end - timedelta(days=1):
                raise InvoicingError(
                    f"{item.key}: an invoice dated {issue_date} would precede the end of the "
                    f"period it bills ({item.period_end - timedelta(days=1)})"
                )
        ordered = sorted(due, key=lambda item: (item.key not in pending, item.key))
        series = series_name(workspace.settings.invoicing.invoice_series, issue_date)
        # Derive everything before numbering anything: an invoice that cannot be derived
        # (its rated detail drifted, say) must not hold a number while it waits.
        # One that cannot (or that its renderers could not write) is refused alone and
        # reported; the others are issued.
        drafts: dict[str, Derived] = {}
        for item in ordered:
            try:
                draft = derive_due(workspace, store, item, DRAFT_NUMBER, issue_date)
                check_renderable(draft.document)
            except (InvoicingError, DocumentError) as error:
                if item.key in pending:
                    raise  # a number waits on it: never skipped, the run stops to be fixed
                refused.append((item.key, str(error)))
                continue
            drafts[item.key] = draft
        ordered = [item for item in ordered if item.key in drafts]
        numbered = [(item, numbers.assign(series, item.key, issue_date)) for item in ordered]
        crash_point("assign")
        derived_all = [
            _numbered(drafts[item.key], assigned)
            if assigned.issue_date == issue_date
            else derive_due(workspace, store, item, assigned.number, assigned.issue_date)
            for item, assigned in numbered
        ]
        rendered_count = [0]

        def one_rendered() -> None:
            rendered_count[0] += 1
            progress(rendered_count[0], len(derived_all))

        rendered = render_all(workspace, derived_all, one_rendered)
        crash_point("render")
        by_file: dict[str, list[Entry]] = defaultdict(list)
        for (item, assigned), (derived, paths) in zip(numbered, rendered, strict=True):
            target = ledger_file(assigned.issue_date)
            relative = relative_to_ledger_file(workspace, target, paths)
            by_file[target] += issuance_entries(
                derived, accounts, item.customer.id, item.key, relative
            )
        for target, entries in sorted(by_file.items()):
            writer.append(target, entries)
        crash_point("ledger")
        for _, assigned in numbered:
            numbers.mark_issued(assigned.number)
            issued.append(assigned.number)
            files.append(workspace.invoices_dir / f"{assigned.number}.pdf")
    return IssueSummary(tuple(issued), tuple(files), tuple(refused), tuple(stale))


def _numbered(draft: Derived, assigned: Assigned) -> Derived:
    document = replace(draft.document, number=assigned.number)
    return replace(draft, document=document)


def preview(workspace: Workspace, up_to: Month, issue_date: date) -> list[InvoiceDocument]:
    """Draft invoices without numbers: nothing is assigned, rendered or posted."""
    books = load_books(workspace.ledger_path, workspace.settings.billing.currency)
    with RatedStore(workspace) as store:
        return [
            derive_due(
                workspace, store, item, f"DRAFT-{item.customer.id}-{item.period}", issue_date
            ).document
            for item in due_invoices(workspace.customers.by_id(), books, up_to)
        ]

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import date, timedelta
from pathlib import Path

from beanbill.ledger import keys
from beanbill.ledger.accounts import organization_accounts
from beanbill.ledger.books import Books, load_books
from beanbill.ledger.entries import Entry, minor_digits
from beanbill.ledger.invoicing import InvoicingError
from beanbill.ledger.invoicing.derive import Derived, InvoiceTerms, derive
from beanbill.ledger.invoicing.documents import (
    DocumentError,
    InvoiceDocument,
    check_renderable,
    with_number,
)
from beanbill.ledger.invoicing.due import (
    Consumption,
    DueInvoice,
    StaleInvoice,
    consumptions,
    due_invoices,
    issued_keys,
    stale_invoices,
)
from beanbill.ledger.invoicing.files import relative_to_ledger_file, render_all
from beanbill.ledger.invoicing.issuance import issuance_entries, ledger_file
from beanbill.ledger.invoicing.numbering import Assigned, NumberStore
from beanbill.ledger.invoicing.recovery import numbering_state
from beanbill.ledger.post import open_accounts
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
        c.txn_id: store.detail_groups(c.rated_file, c.org, c.period, *c.days)
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
    held: tuple[tuple[str, int], ...] = ()  # (invoice key, amount due): below the minimum


def merged(items: Sequence[DueInvoice]) -> DueInvoice:
    """Periods carried forward billed with the last one, under its key."""
    last = items[-1]
    if len(items) == 1:
        return last
    return replace(
        last,
        period_start=min(item.period_start for item in items),
        consumptions=tuple(c for item in items for c in item.consumptions),
        names=tuple(sorted({name for item in items for name in item.names})),
        carried=tuple(key for item in items[:-1] for key in (*item.carried, item.key)),
    )


def carry_forward(
    due: Sequence[DueInvoice],
    derive_one: Callable[[DueInvoice], Derived],
    minimum_minor: int,
) -> tuple[list[tuple[DueInvoice, Derived]], list[tuple[DueInvoice, int]]]:
    """(to issue, held): per payer in period order, an invoice whose amount to pay is
    above 0 and below ``minimum_minor`` is not issued; its periods are billed with the
    payer's next due period, and held when none is due yet. An amount of 0 (credits
    paid it all) is issued: it documents the supply and its VAT."""
    by_payer: dict[str, list[DueInvoice]] = defaultdict(list)
    for item in due:
        by_payer[item.customer.id].append(item)
    issue: list[tuple[DueInvoice, Derived]] = []
    held: list[tuple[DueInvoice, int]] = []
    for items in by_payer.values():
        waiting: list[DueInvoice] = []
        for item in sorted(items, key=lambda item: (item.period_start, item.key)):
            candidate = merged([*waiting, item])
            derived = derive_one(candidate)
            amount = derived.document.due_minor
            if 0 < amount < minimum_minor:
                waiting = [candidate]
                continue
            issue.append((candidate, derived))
            waiting = []
        if waiting:
            held.append((waiting[0], derive_one(waiting[0]).document.due_minor))
    return issue, held


def issue(
    workspace: Workspace, up_to: Month, issue_date: date, progress: Progress = no_progress
) -> IssueSummary:
    """Issue every invoice due by the end of ``up_to``; finish any interrupted one first.

    ``progress`` hears of each document rendered.
    """
    currency = workspace.settings.billing.currency
    with workspace.writing(), RatedStore(workspace) as store:
        books = load_books(workspace.ledger_path, currency)
        numbers = numbering_state(workspace, books)
        customers = workspace.customers.by_id()
        active = consumptions(books)
        due = [item for item in due_invoices(customers, books, active, up_to)
               if posted_to_its_end(item, store)]  # fmt: skip
        stale = stale_invoices(customers, books, active)
        pending = {assigned.document_key: assigned for assigned in numbers.pending()}
        issued = _finish_interrupted(numbers, pending, books, {item.key for item in due})
        _check_dates(due, pending, issue_date)
        ordered = sorted(due, key=lambda item: (item.key not in pending, item.key))
        drafts, refused = _drafts(workspace, store, ordered, pending, issue_date)
        ordered, drafts, held = _apply_minimum(workspace, store, ordered, drafts, issue_date)
        series = series_name(workspace.settings.invoicing.invoice_series, issue_date)
        numbered = [(item, numbers.assign(series, item.key, issue_date)) for item in ordered]
        crash_point("assign")
        derived_all = [
            _numbered(drafts[item.key], assigned)
            if assigned.issue_date == issue_date
            else derive_due(workspace, store, item, assigned.number, assigned.issue_date)
            for item, assigned in numbered
        ]
        done = [0]

        def one_rendered() -> None:
            done[0] += 1
            progress(done[0], len(derived_all))

        rendered = render_all(workspace, derived_all, one_rendered)
        crash_point("render")
        # accounts this run may post to first (an OSS return enabled since the last post)
        open_accounts(workspace, books, LedgerWriter(workspace.ledger_path))
        _post_issuances(workspace, numbered, rendered)
        crash_point("ledger")
        for _, assigned in numbered:
            numbers.mark_issued(assigned.number)
            issued.append(assigned.number)
    files = tuple(workspace.invoices_dir / f"{assigned.number}.pdf" for _, assigned in numbered)
    return IssueSummary(tuple(issued), files, tuple(refused), tuple(stale), tuple(held))


def minimum_minor(workspace: Workspace) -> int:
    settings = workspace.settings
    return int(settings.invoicing.minimum_amount.scaleb(minor_digits(settings.billing.currency)))


def _apply_minimum(
    workspace: Workspace,
    store: RatedStore,
    ordered: list[DueInvoice],
    drafts: dict[str, Derived],
    issue_date: date,
) -> tuple[list[DueInvoice], dict[str, Derived], list[tuple[str, int]]]:
    """The invoices to number in ``ordered``'s order (periods below the minimum merged
    into the next one, under its key), their drafts by key, and the keys held."""

    def derive_one(item: DueInvoice) -> Derived:
        if not item.carried:
            return drafts[item.key]
        return derive_due(workspace, store, item, DRAFT_NUMBER, issue_date)

    derivable = [item for item in ordered if item.key in drafts]
    issue, held = carry_forward(derivable, derive_one, minimum_minor(workspace))
    merged_by_key = {item.key: (item, derived) for item, derived in issue}
    result = [merged_by_key[item.key][0] for item in ordered if item.key in merged_by_key]
    merged_drafts = {key: derived for key, (_, derived) in merged_by_key.items()}
    return result, merged_drafts, [(item.key, amount) for item, amount in held]


def _finish_interrupted(
    numbers: NumberStore, pending: dict[str, Assigned], books: Books, due_keys: set[str]
) -> list[str]:
    """Numbers a crash left between the ledger and the numbering state: mark them issued."""
    in_ledger = issued_keys(books)
    posted = books.txn_ids()
    finished = []
    for key, assigned in pending.items():
        if key in in_ledger or keys.credit_note_txn_id(assigned.number) in posted:
            numbers.mark_issued(assigned.number)  # posted before the crash: bookkeeping left
            finished.append(assigned.number)
        elif (lot_id := keys.prepayment_lot_of(key)) is not None:
            if keys.credit_txn_id(lot_id) not in posted:
                raise InvoicingError(
                    f"number {assigned.number} waits on the prepayment invoice of credit "
                    f"{lot_id}, interrupted: run the same `beanbill credits buy ... --id "
                    f"{lot_id}` again to finish it"
                )
            numbers.mark_issued(assigned.number)
        elif key not in due_keys and not keys.is_credit_note_key(key):
            raise InvoicingError(
                f"number {assigned.number} was assigned to {key}, which is no longer due"
            )
    return finished


def posted_to_its_end(item: DueInvoice, store: RatedStore) -> bool:
    """A period split at a month end is invoiced once its last part is posted: each
    organization's latest part reaches the period's end, or no rated usage lies after it
    (a week with no usage in its second month has no second part)."""
    last_day = item.period_end - timedelta(days=1)
    latest: dict[str, Consumption] = {}
    for consumption in item.consumptions:
        if consumption.through is None:
            return True  # not split (or posted daily): whole as posted
        known = latest.get(consumption.org)
        if known is None or (known.through or last_day) < consumption.through:
            latest[consumption.org] = consumption
    return all(
        part.through is not None
        and (
            part.through >= last_day
            or not store.detail_groups(
                part.rated_file, part.org, part.period, part.through + timedelta(days=1), None
            )
        )
        for part in latest.values()
    )


def _check_dates(due: list[DueInvoice], pending: dict[str, Assigned], issue_date: date) -> None:
    if len(due) > MAX_INVOICES_PER_RUN:
        raise InvoicingError(f"{len(due)} invoices due: at most {MAX_INVOICES_PER_RUN} per run")
    for item in due:
        last_day = item.period_end - timedelta(days=1)
        if item.key not in pending and issue_date < last_day:
            raise InvoicingError(
                f"{item.key}: an invoice dated {issue_date} would precede the end of the "
                f"period it bills ({last_day})"
            )


def _drafts(
    workspace: Workspace,
    store: RatedStore,
    ordered: list[DueInvoice],
    pending: dict[str, Assigned],
    issue_date: date,
) -> tuple[dict[str, Derived], list[tuple[str, str]]]:
    """Every due invoice derived before any is numbered, and those refused, with why.

    An invoice that cannot be derived (its rated detail drifted, say), or that its
    renderers could not write, is refused alone and holds no number; the others go on.
    """
    drafts: dict[str, Derived] = {}
    refused: list[tuple[str, str]] = []
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
    return drafts, refused


def _post_issuances(
    workspace: Workspace,
    numbered: list[tuple[DueInvoice, Assigned]],
    rendered: list[tuple[Derived, dict[str, str]]],
) -> None:
    """The issuance transactions and document entries, one batch per month file."""
    accounts = organization_accounts(workspace.customers.customer)
    by_file: dict[str, list[Entry]] = defaultdict(list)
    for (item, assigned), (derived, paths) in zip(numbered, rendered, strict=True):
        target = ledger_file(assigned.issue_date)
        relative = relative_to_ledger_file(workspace, target, paths)
        by_file[target] += issuance_entries(
            derived,
            accounts,
            item.customer.id,
            item.key,
            relative,
            workspace.settings.seller.country,
            item.carried,
        )
    writer = LedgerWriter(workspace.ledger_path)
    for target, entries in sorted(by_file.items()):
        writer.append(target, entries)


def _numbered(draft: Derived, assigned: Assigned) -> Derived:
    document = with_number(draft.document, assigned.number)
    return replace(draft, document=document)


def preview(workspace: Workspace, up_to: Month, issue_date: date) -> list[InvoiceDocument]:
    """Draft invoices without numbers: nothing is assigned, rendered or posted. Periods
    below the minimum amount are shown where they would be billed (or not, if held)."""
    books = load_books(workspace.ledger_path, workspace.settings.billing.currency)
    with RatedStore(workspace) as store:

        def draft(item: DueInvoice) -> Derived:
            number = f"DRAFT-{item.customer.id}-{item.period}"
            return derive_due(workspace, store, item, number, issue_date)

        due = [
            item
            for item in due_invoices(workspace.customers.by_id(), books, consumptions(books), up_to)
            if posted_to_its_end(item, store)
        ]
        drafts, _ = carry_forward(due, draft, minimum_minor(workspace))
        return [derived.document for _, derived in drafts]

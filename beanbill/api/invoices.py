"""Invoices and payments: the list, one invoice as issued, its files, its payment history.

Status and outstanding amounts are the ledger's, computed by the same pure functions as
the Fava billing page (``beanbill.ledger.fava_billing.billing``) as at today; the
document is the snapshot written at issuance (``invoices/<number>.json``), so the API
shows exactly what was issued. A credit note is reached under its own number, beside
the invoice it cancels. An invoice belongs to the organization it bills (a parent's
central invoice is the parent's): another organization's number is "not found".

Payments are read once, here: ``invoice_movements`` (one invoice's history) and
``organization_payments`` (every payment, refund and credit note of an organization and
its teams) are views of ``receivable_movements``, one pass over the ledger for any number
of invoices; the portal shows the same lists.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

from beancount.core.data import Open
from fastapi import APIRouter, Query
from fastapi import Path as PathParameter
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from beanbill.api.auth import Caller, CallerDependency
from beanbill.api.context import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE
from beanbill.api.money import DECIMAL_PATTERN, minor_text
from beanbill.api.organizations import OrganizationParameter
from beanbill.api.problems import NotFound, RateLimited, Unauthorized, Unavailable, responses
from beanbill.ledger import keys
from beanbill.ledger.accounts import BANK, RECEIVABLE_ROOT, UNAPPLIED_ROOT, under
from beanbill.ledger.fava_billing.billing import InvoiceRow, Status, invoices, posting_minor
from beanbill.ledger.invoicing.documents import DocumentError, InvoiceDocument, load_document

NUMBER_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
MONTH_QUERY_PATTERN = r"^\d{4}-(0[1-9]|1[0-2])$"
SNAPSHOTS_CACHED = 4_096
MAX_MOVEMENTS = 1_000  # per invoice: more is not a payment history but a fault
MAX_OFFSET = 10_000_000
CONNECTOR = "connector"  # metadata of the accounts a payment connector opened
BANK_TRANSFER = "bank transfer"
CUSTOMER_BALANCE = "customer balance"


class InvoiceKind(StrEnum):
    INVOICE = "invoice"
    PREPAYMENT = "prepayment"  # credit bought: invoiced and paid at once


class InvoiceSummary(BaseModel):
    """One issued invoice as at today. Amounts: integer minor units and exact decimals."""

    model_config = ConfigDict(extra="forbid")

    number: str
    org: str = Field(description="The organization invoiced (a parent for its teams).")
    org_name: str
    kind: InvoiceKind
    issued: date
    due: date | None
    period_start: date | None = Field(description="First day billed (None: no snapshot).")
    period_end: date | None = Field(description="Last day billed, included.")
    currency: str
    total_minor: int
    total: str = Field(pattern=DECIMAL_PATTERN)
    outstanding_minor: int
    outstanding: str = Field(pattern=DECIMAL_PATTERN)
    status: Status = Field(description="open, paid, overdue (past its due date) or credited.")
    credit_note: str | None = Field(description="The credit note that cancelled it.")


class InvoiceList(BaseModel):
    model_config = ConfigDict(extra="forbid")

    invoices: list[InvoiceSummary]
    next_after: str | None = Field(
        description="Pass as `after` for the next page; None on the last page."
    )


class InvoiceDetail(BaseModel):
    """A document as issued (its snapshot) with, for an invoice, its status today."""

    model_config = ConfigDict(extra="forbid")

    number: str
    org: str
    summary: InvoiceSummary | None = Field(description="None for a credit note.")
    credit_note_of: str | None = Field(description="A credit note: the invoice it cancels.")
    document: InvoiceDocument


class MovementKind(StrEnum):
    ISSUED = "issued"
    PAYMENT = "payment"  # the receivable went down: paid (or settled from a balance)
    CHARGE = "charge"  # the receivable went up again: a refund, a lost dispute
    CREDITED = "credited"  # the credit note that cancelled the invoice


METHOD_DESCRIPTION = (
    "How it was settled or where the money went: the payment system (its connector's "
    "name, such as `stripe`), `bank transfer`, `customer balance` (credit held from an "
    "earlier payment), or `credit note <number>`; none for the issuance."
)


class Movement(BaseModel):
    model_config = ConfigDict(extra="forbid")

    date: date
    kind: MovementKind
    amount_minor: int = Field(description="On the receivable: positive owed, negative paid.")
    amount: str = Field(pattern=DECIMAL_PATTERN)
    method: str | None = Field(description=METHOD_DESCRIPTION)
    description: str


class PaymentHistory(BaseModel):
    """An invoice's status today and every movement of what it is owed."""

    model_config = ConfigDict(extra="forbid")

    number: str
    status: Status
    currency: str
    outstanding_minor: int
    outstanding: str = Field(pattern=DECIMAL_PATTERN)
    movements: list[Movement]


class Payment(BaseModel):
    """One settlement of an invoice: a payment, a refund or other charge, a credit note."""

    model_config = ConfigDict(extra="forbid")

    date: date
    kind: MovementKind = Field(
        description="payment (what is owed went down), charge (it went up again: a refund, "
        "a lost dispute) or credited (cancelled by a credit note); never issued."
    )
    invoice: str = Field(description="The invoice's number.")
    org: str = Field(description="The organization the invoice bills (a parent or a team).")
    currency: str
    amount_minor: int = Field(
        description="On what the invoice is owed: negative paid or credited, positive charged."
    )
    amount: str = Field(pattern=DECIMAL_PATTERN)
    method: str = Field(description=METHOD_DESCRIPTION)
    invoice_status: Status = Field(description="The invoice's status today.")
    description: str


class PaymentList(BaseModel):
    """An organization's payments, refunds and credit notes, oldest first."""

    model_config = ConfigDict(extra="forbid")

    org: str
    payments: list[Payment]
    next_offset: int | None = Field(
        description="Pass as `offset` for the next page; None on the last page."
    )


@functools.lru_cache(maxsize=SNAPSHOTS_CACHED)
def _snapshot(path: str, modified_ns: int, size: int) -> InvoiceDocument:
    return load_document(Path(path))


def snapshot(folder: Path, number: str) -> InvoiceDocument | None:
    """An issued document's snapshot (write-once, so cached by its file's stamp)."""
    path = folder / f"{number}.json"
    try:
        status = path.stat()
        return _snapshot(str(path), status.st_mtime_ns, status.st_size)
    except (OSError, DocumentError):
        return None


@dataclass(frozen=True)
class VisibleInvoices:
    rows: list[InvoiceRow]  # the invoices this key sees, in issue order
    by_number: dict[str, InvoiceRow]
    credit_notes: dict[str, InvoiceRow]  # credit note number → the invoice it cancels


def visible_invoices(caller: Caller) -> tuple[VisibleInvoices, Sequence[Any]]:
    """The invoices ``caller``'s key sees (as of today), and the ledger entries they were
    read from; the API and the portal both list through it."""
    entries = caller.context.ledger.entries()
    rows = [
        row for row in invoices(entries, caller.context.today()) if row.org in caller.organizations
    ]
    notes = {row.credit_note: row for row in rows if row.credit_note}
    return VisibleInvoices(rows, {row.number: row for row in rows}, notes), entries


def summary_of(caller: Caller, row: InvoiceRow) -> InvoiceSummary:
    document = snapshot(caller.context.workspace.invoices_dir, row.number)
    return InvoiceSummary(
        number=row.number,
        org=row.org,
        org_name=row.org_name,
        kind=InvoiceKind.PREPAYMENT if row.prepayment else InvoiceKind.INVOICE,
        issued=row.issued,
        due=row.due,
        period_start=document.period_start if document else None,
        period_end=document.period_end if document else None,
        currency=row.currency,
        total_minor=row.total_minor,
        total=minor_text(row.total_minor, row.currency),
        outstanding_minor=row.outstanding_minor,
        outstanding=minor_text(row.outstanding_minor, row.currency),
        status=row.status,
        credit_note=row.credit_note,
    )


def _month_of(day: date | None) -> str | None:
    return f"{day.year:04d}-{day.month:02d}" if day else None


@dataclass(frozen=True)
class InvoiceMovement:
    """A movement of what an invoice is owed, with the invoice it moved."""

    invoice: InvoiceRow
    movement: Movement


def connector_accounts(entries: Sequence[Any]) -> dict[str, str]:
    """Account → the payment connector that opened it (``connector`` metadata)."""
    return {
        entry.account: str(entry.meta[CONNECTOR])
        for entry in entries
        if isinstance(entry, Open) and CONNECTOR in (entry.meta or {})
    }


def settlement_method(counter_accounts: Sequence[str], connectors: dict[str, str]) -> str:
    """How a receivable was settled, from the account that took the other side.

    A customer reads the system, not our chart of accounts: the connector that opened the
    account; the bank; the customer's balance held from an earlier payment; otherwise the
    system the account is named after (connectors name theirs ``Assets:<System>:<Purpose>``,
    and a clearing account opened by the main file carries no ``connector`` metadata).
    """
    if not counter_accounts:
        return ""
    account = counter_accounts[0]
    if account in connectors:
        return connectors[account]
    if account == BANK:
        return BANK_TRANSFER
    if under(account, UNAPPLIED_ROOT):
        return CUSTOMER_BALANCE
    parts = account.split(":")
    return parts[1].lower() if len(parts) > 2 else account


def _number(posting: Any) -> Decimal:
    """A posting's amount, exactly (0 when it has none): to tell its side and size only."""
    units = posting.units
    return units.number if units is not None and isinstance(units.number, Decimal) else Decimal(0)


def _movement(entry: Any, row: InvoiceRow, connectors: dict[str, str]) -> Movement | None:
    """The movement ``entry`` made on ``row``'s receivable, or None if it made none."""
    postings = [p for p in getattr(entry, "postings", ()) if under(p.account, RECEIVABLE_ROOT)]
    if not postings:
        return None
    txn_id = str((entry.meta or {}).get(keys.TXN_ID, ""))
    currency = posting_minor(postings[0])[0]
    amount = sum(posting_minor(posting)[1] for posting in postings)
    note = keys.credit_note_number_of(txn_id)
    method: str | None
    if txn_id == keys.invoice_txn_id(row.number):
        kind, method = MovementKind.ISSUED, None
    elif note is not None:
        kind, method = MovementKind.CREDITED, f"credit note {note}"
    else:
        kind = MovementKind.PAYMENT if amount < 0 else MovementKind.CHARGE
        # The other side, largest first among those moving the opposite way (an
        # overpayment's excess, held for the customer, is not how it was paid).
        others = sorted(
            (p for p in entry.postings if not under(p.account, RECEIVABLE_ROOT)),
            key=lambda posting: -abs(_number(posting)),
        )
        opposite = [p.account for p in others if (_number(p) > 0) == (amount < 0)]
        method = settlement_method(opposite or [p.account for p in others], connectors)
    return Movement(
        date=entry.date,
        kind=kind,
        amount_minor=amount,
        amount=minor_text(amount, currency),
        method=method,
        description=str(entry.narration or ""),
    )


def receivable_movements(
    entries: Sequence[Any], rows: Sequence[InvoiceRow], today: date
) -> list[InvoiceMovement]:
    """What moved the receivables of ``rows`` (each invoice's link) up to ``today``, in
    ledger order: one pass over the entries for any number of invoices, so a page of all
    payments costs what one invoice's history does."""
    by_link = {row.link: row for row in rows}
    connectors = connector_accounts(entries)
    counts: dict[str, int] = {}
    found: list[InvoiceMovement] = []
    for entry in entries:
        if entry.date > today:
            continue
        for link in getattr(entry, "links", None) or ():
            row = by_link.get(link)
            if row is None or counts.get(row.number, 0) >= MAX_MOVEMENTS:
                continue
            movement = _movement(entry, row, connectors)
            if movement is not None:
                counts[row.number] = counts.get(row.number, 0) + 1
                found.append(InvoiceMovement(row, movement))
    return found


def invoice_movements(entries: Sequence[Any], row: InvoiceRow, today: date) -> list[Movement]:
    """What moved the invoice's receivable (its link), in ledger order."""
    return [found.movement for found in receivable_movements(entries, [row], today)]


def organization_payments(caller: Caller, org: str) -> list[Payment]:
    """Every payment, refund or charge and credit note of ``org``'s invoices and, for a
    parent, of the invoices of its teams this key sees, oldest first (ledger order)."""
    caller.require(org)
    customers = caller.context.workspace.customers.customer
    teams = {c.id for c in customers if c.parent == org and c.id in caller.organizations}
    visible, entries = visible_invoices(caller)
    rows = [row for row in visible.rows if row.org == org or row.org in teams]
    return [
        Payment(
            date=found.movement.date,
            kind=found.movement.kind,
            invoice=found.invoice.number,
            org=found.invoice.org,
            currency=found.invoice.currency,
            amount_minor=found.movement.amount_minor,
            amount=found.movement.amount,
            method=found.movement.method or "",
            invoice_status=found.invoice.status,
            description=found.movement.description,
        )
        for found in receivable_movements(entries, rows, caller.context.today())
        if found.movement.kind is not MovementKind.ISSUED
    ]


NumberParameter = Annotated[
    str, PathParameter(pattern=NUMBER_PATTERN, description="An invoice or credit note number.")
]
COMMON = (Unauthorized, NotFound, RateLimited, Unavailable)
FILE_KINDS = {
    "pdf": ("pdf", "application/pdf", "The PDF/A-3 with its Factur-X XML embedded."),
    "cii": ("cii.xml", "application/xml", "The Factur-X / ZUGFeRD CII XML (EN16931)."),
    "ubl": ("ubl.xml", "application/xml", "The UBL 2.1 XML (EN16931, Peppol)."),
}


def find_invoice(caller: Caller, number: str) -> tuple[VisibleInvoices, Sequence[Any], str]:
    """The visible invoices, the entries, and the organization ``number`` belongs to."""
    visible, entries = visible_invoices(caller)
    row = visible.by_number.get(number) or visible.credit_notes.get(number)
    if row is None:
        raise NotFound(f"no invoice or credit note {number!r}")
    return visible, entries, row.org


def router() -> APIRouter:
    routes = APIRouter(tags=["invoices"])

    @routes.get(
        "/v1/invoices",
        response_model=InvoiceList,
        summary="List invoices",
        responses=responses(*COMMON),
    )
    def list_invoices(
        caller: CallerDependency,
        org: Annotated[str | None, Query(max_length=128)] = None,
        status: Status | None = None,
        period: Annotated[
            str | None,
            Query(pattern=MONTH_QUERY_PATTERN, description="Billing periods starting in YYYY-MM."),
        ] = None,
        after: Annotated[str | None, Query(pattern=NUMBER_PATTERN)] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = DEFAULT_PAGE_SIZE,
    ) -> InvoiceList:
        """The invoices of the organizations this key sees (prepayment invoices included),
        in issue order, filtered by organization, status and billing period."""
        if org is not None:
            caller.require(org)
        visible, _ = visible_invoices(caller)
        rows = visible.rows
        if after is not None:
            numbers = [row.number for row in rows]
            rows = rows[numbers.index(after) + 1 :] if after in numbers else []
        page: list[InvoiceSummary] = []
        more = False
        for row in rows:
            if (org and row.org != org) or (status and row.status is not status):
                continue
            summary = summary_of(caller, row)
            if period and _month_of(summary.period_start) != period:
                continue
            if len(page) == limit:
                more = True
                break
            page.append(summary)
        return InvoiceList(invoices=page, next_after=page[-1].number if more else None)

    @routes.get(
        "/v1/invoices/{number}",
        response_model=InvoiceDetail,
        summary="One invoice or credit note as issued",
        responses=responses(*COMMON),
    )
    def get_invoice(caller: CallerDependency, number: NumberParameter) -> InvoiceDetail:
        visible, _, org = find_invoice(caller, number)
        document = snapshot(caller.context.workspace.invoices_dir, number)
        if document is None:
            raise NotFound(f"the snapshot of {number} is missing: `beanbill invoice render`")
        row = visible.by_number.get(number)
        cancelled = visible.credit_notes.get(number)
        return InvoiceDetail(
            number=number,
            org=org,
            summary=summary_of(caller, row) if row else None,
            credit_note_of=cancelled.number if cancelled and not row else None,
            document=document,
        )

    @routes.get(
        "/v1/invoices/{number}/payments",
        response_model=PaymentHistory,
        summary="An invoice's payment status and history",
        responses=responses(*COMMON),
    )
    def get_payments(caller: CallerDependency, number: NumberParameter) -> PaymentHistory:
        visible, entries = visible_invoices(caller)
        row = visible.by_number.get(number)
        if row is None:
            raise NotFound(f"no invoice {number!r}")
        return PaymentHistory(
            number=row.number,
            status=row.status,
            currency=row.currency,
            outstanding_minor=row.outstanding_minor,
            outstanding=minor_text(row.outstanding_minor, row.currency),
            movements=invoice_movements(entries, row, caller.context.today()),
        )

    @routes.get(
        "/v1/organizations/{org}/payments",
        response_model=PaymentList,
        summary="An organization's payments, refunds and credit notes",
        responses=responses(*COMMON),
    )
    def list_payments(
        caller: CallerDependency,
        org: OrganizationParameter,
        offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = DEFAULT_PAGE_SIZE,
    ) -> PaymentList:
        """Every movement that settled (or charged again) an invoice of the organization
        and, for a parent, of its teams: date, invoice, amount, method and the invoice's
        status today, oldest first; another organization answers 404."""
        payments = organization_payments(caller, org)
        page = payments[offset : offset + limit]
        more = offset + limit < len(payments)
        return PaymentList(org=org, payments=page, next_offset=offset + limit if more else None)

    def file_route(kind: str) -> None:
        suffix, media_type, description = FILE_KINDS[kind]

        @routes.get(
            f"/v1/invoices/{{number}}/{kind}",
            response_class=Response,
            summary=f"Download: {description}",
            responses={
                200: {
                    "content": {media_type: {"schema": {"type": "string", "format": "binary"}}},
                    "description": description,
                },
                **responses(*COMMON),
            },
            operation_id=f"download_{kind}",
        )
        def download(caller: CallerDependency, number: NumberParameter) -> Response:
            find_invoice(caller, number)
            path = caller.context.workspace.invoices_dir / f"{number}.{suffix}"
            if not path.is_file():
                raise NotFound(
                    f"the file {path.name} is missing: `beanbill invoice render {number}`"
                )
            return FileResponse(path, media_type=media_type, filename=path.name)

    for kind in FILE_KINDS:
        file_route(kind)
    return routes

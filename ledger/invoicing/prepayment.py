"""Prepayment invoices: purchased credit invoiced with its VAT when it is paid.

A payment on account for services makes VAT chargeable when it is received (Directive
2006/112/EC art. 65), so with ``[invoicing] credits_vat = "at_purchase"`` (the default)
every ``credits buy`` issues a numbered prepayment invoice (EN16931 type 386) in the
invoice series, already paid. Its transaction is the lot's purchase itself: the payment
(credit + VAT) into the purchase account, the credit (excluding VAT) to the
organization's credits account, the VAT to output VAT. Consumption invoices then deduct
what they draw with its share of that VAT (``due.lot_draws``) and book only the rest.

Issuing one is crash-safe like any invoice: the number is bound to ``prepayment:<lot>``
before the files are written and the transaction appended; re-running the same purchase
finishes it under the same number and date.
"""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

from beanbill.ledger import keys
from beanbill.ledger.accounts import OrganizationAccounts, organization_accounts, vat_account
from beanbill.ledger.books import Books, CreditLot
from beanbill.ledger.entries import Entry, Posting
from beanbill.ledger.invoicing.derive import (
    buyer_vat,
    invoice_notes,
    party,
    seller_party,
)
from beanbill.ledger.invoicing.documents import (
    DocumentType,
    InvoiceDocument,
    InvoiceLine,
    check_renderable,
)
from beanbill.ledger.invoicing.files import relative_to_ledger_file, write_documents
from beanbill.ledger.invoicing.issuance import document_entries, ledger_file
from beanbill.ledger.invoicing.issue import crash_point, series_name
from beanbill.ledger.invoicing.lines import DEFAULT_UNIT_CODE
from beanbill.ledger.invoicing.recovery import numbering_state
from beanbill.ledger.posting import credit_entry
from beanbill.ledger.wording import about
from beanbill.ledger.writer import LedgerWriter
from beanbill.rating.config import Customer, Settings
from beanbill.rating.workspace import Workspace


def prepayment_document(
    lot: CreditLot, number: str, customer: Customer, settings: Settings, digits: int
) -> InvoiceDocument:
    """The prepayment invoice of a purchased lot: one line, its VAT, paid in full."""
    vat = buyer_vat(settings.seller, customer, settings.invoicing)
    price = Decimal(lot.amount_minor).scaleb(-digits)
    validity = f" until {lot.expires.isoformat()}" if lot.expires else ""
    line = InvoiceLine(
        "1",
        f"Prepaid credit usable from {lot.acquired.isoformat()}{validity} (ref. {lot.lot_id})",
        Decimal(1),
        DEFAULT_UNIT_CODE,
        price,
        Decimal(1),
        lot.amount_minor,
        vat,
        Decimal(1),
        "credit",
        price,
    )
    draft = InvoiceDocument(
        number=number,
        type=DocumentType.PREPAYMENT_INVOICE,
        issue_date=lot.acquired,
        due_date=None,  # paid when bought
        period_start=lot.acquired,
        period_end=lot.acquired,
        currency=settings.billing.currency,
        seller=seller_party(settings.seller),
        buyer=party(customer),
        lines=(line,),
        notes=invoice_notes(settings.invoicing),
        buyer_reference=customer.id,
    )
    return replace(draft, paid_minor=draft.gross_minor)


def purchase_entries(
    lot: CreditLot,
    document: InvoiceDocument,
    accounts: OrganizationAccounts,
    purchase_account: str,
    seller_country: str,
    files: dict[str, str],
) -> list[Entry]:
    """The purchase as the prepayment invoice's transaction, and its document entries:
    the lot's credit entry, paid with its VAT, which goes to output VAT."""
    currency = document.currency
    link = keys.link_of_invoice(document.number)
    credit = credit_entry(lot, accounts, currency, purchase_account, document.buyer.name)
    paid, held = credit.postings  # the purchase account, the organization's credits
    postings = [paid._replace(amount_minor=document.gross_minor), held]
    if document.tax_minor:
        account = vat_account(seller_country, document.lines[0].vat.country)
        postings.append(Posting(account, -document.tax_minor, currency))
    transaction = credit._replace(
        narration=about(
            f"Credit purchase {lot.lot_id}, prepayment invoice {document.number}",
            document.buyer.name,
        ),
        postings=tuple(postings),
        links=(*credit.links, link),
        meta=(*credit.meta, (keys.INVOICE_NUMBER, document.number)),
    )
    documents = document_entries(
        lot.acquired, accounts.receivable, document.number, transaction.links, files
    )
    return [transaction, *documents]


def issue_prepayment(
    workspace: Workspace, books: Books, lot: CreditLot, writer: LedgerWriter
) -> tuple[bool, str | None]:
    """Record a purchased lot with its prepayment invoice: (written now, its number).

    Runs under the workspace's write lock. A purchase already in the ledger is not
    recorded again (its number is marked issued if a crash left it pending); one that was
    recorded without VAT (``at_consumption``) keeps that treatment.
    """
    settings = workspace.settings
    numbers = numbering_state(workspace, books)
    key = keys.prepayment_key(lot.lot_id)
    if keys.credit_txn_id(lot.lot_id) in books.txn_ids():
        pending = numbers.pending_for(key)
        if pending is not None:
            numbers.mark_issued(pending.number)
        return False, books.lots()[lot.lot_id].invoice_number
    customer = workspace.customers.by_id()[lot.org]
    series = series_name(settings.invoicing.invoice_series, lot.acquired)
    assigned = numbers.assign(series, key, lot.acquired)
    crash_point("prepayment-assign")
    document = prepayment_document(lot, assigned.number, customer, settings, books.digits)
    check_renderable(document)
    target = ledger_file(assigned.issue_date)
    paths = relative_to_ledger_file(workspace, target, write_documents(workspace, document))
    crash_point("prepayment-render")
    accounts = organization_accounts([customer])[customer.id]
    entries = purchase_entries(
        lot,
        document,
        accounts,
        settings.ledger.credit_purchase_account,
        settings.seller.country,
        paths,
    )
    writer.append(target, entries)
    crash_point("prepayment-ledger")
    numbers.mark_issued(assigned.number)
    return True, assigned.number

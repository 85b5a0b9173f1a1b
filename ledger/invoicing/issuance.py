"""The ledger entries of an issue and of a credit note: pure functions of the documents.

Issuing moves unbilled consumption (or, provisioned, the provision into the credits
account and the over-consumption out of unbilled) to the receivable with the VAT, linked
``^invoice-<number>`` and to the story of each billing period it bills
(``^billing-<payer>-<period>``), and attaches the PDF with one ``document`` entry (the
XML e-invoices beside it are named in its metadata). A credit note reverses the issuance
transaction, linked to both, so the period is due again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date
from decimal import Decimal

from beanbill.ledger import keys
from beanbill.ledger.accounts import (
    DISCOUNTS,
    PROMOTIONS,
    OrganizationAccounts,
    vat_account,
)
from beanbill.ledger.entries import Document, Entry, Posting, Transaction, minor_digits
from beanbill.ledger.invoicing.derive import Derived
from beanbill.ledger.invoicing.documents import InvoiceDocument
from beanbill.ledger.posting import reversal_entry
from beanbill.ledger.wording import about, billing_link_of_key, period_label


def ledger_file(issue_date: date) -> str:
    """Where the entries of documents issued on ``issue_date`` are written."""
    return f"books/{issue_date:%Y-%m}/invoices.beancount"


ATTACHED_KIND = "pdf"  # the file Fava shows; the others are named in its metadata


def document_entries(
    day: date,
    receivable: str,
    number: str,
    links: Sequence[str],
    files: Mapping[str, str],
) -> list[Entry]:
    """One ``document`` entry per document: its PDF, with the other files (HTML, the
    CII and UBL e-invoices) in its metadata — paths relative to the ledger file that holds
    it. One entry instead of four keeps a year of daily invoices light to load."""
    if not files:
        return []
    kind = ATTACHED_KIND if ATTACHED_KIND in files else min(files)
    others = tuple((other, path) for other, path in sorted(files.items()) if other != kind)
    txn_id = keys.document_txn_id(number, kind)
    return [Document(day, receivable, files[kind], txn_id, tuple(links), others)]


def invoiced_periods(key: str, carried: Sequence[str] = ()) -> str:
    """``October 2026`` — or, with earlier periods carried below the minimum,
    ``September 2026 and October 2026``."""
    periods = [keys.InvoiceKey.parse(each).period for each in (*carried, key)]
    labels = [period_label(period) for period in sorted(set(periods))]
    return labels[0] if len(labels) == 1 else ", ".join(labels[:-1]) + " and " + labels[-1]


def story_links(number: str, key: str, carried: Sequence[str] = ()) -> tuple[str, ...]:
    """The invoice's own link, then each billing period's story link."""
    periods = sorted({billing_link_of_key(each) for each in (key, *carried)})
    return (keys.link_of_invoice(number), *periods)


def booked_vat(document: InvoiceDocument, seller_country: str) -> list[tuple[str, int]]:
    """(account, VAT minor) this document books: its VAT less the VAT its prepayment
    invoices already booked. One document charges one country's VAT (one treatment per
    buyer), so one account: the seller's return, or the OSS return of that country."""
    country = document.lines[0].vat.country if document.lines else ""
    amount = document.tax_minor - document.prepaid_vat_minor
    return [(vat_account(seller_country, country), amount)] if amount else []


def issuance_entries(
    derived: Derived,
    accounts: Mapping[str, OrganizationAccounts],
    payer: str,
    key: str,
    files: Mapping[str, str],
    seller_country: str = "",
    carried: Sequence[str] = (),
) -> list[Entry]:
    document = derived.document
    currency = document.currency
    links = story_links(document.number, key, carried)
    postings = [Posting(accounts[payer].receivable, document.due_minor, currency)]
    postings += [
        Posting(accounts[org].unbilled, -amount, currency)
        for org, amount in derived.unbilled_minor
        if amount
    ]
    postings += [
        Posting(accounts[org].credits, -amount, currency)
        for org, amount in derived.credits_minor
        if amount
    ]
    if derived.discount_minor:
        postings.append(Posting(DISCOUNTS, derived.discount_minor, currency))
    if derived.granted_minor:  # granted credit used: a price reduction, no longer a cost
        postings.append(Posting(DISCOUNTS, derived.granted_minor, currency))
        postings.append(Posting(PROMOTIONS, -derived.granted_minor, currency))
    postings += [
        Posting(account, -amount, currency)
        for account, amount in booked_vat(document, seller_country)
    ]
    transaction = Transaction(
        date=document.issue_date,
        txn_id=keys.invoice_txn_id(document.number),
        narration=about(
            f"Invoice {document.number}, {invoiced_periods(key, carried)}", document.buyer.name
        ),
        postings=tuple(postings),
        links=links,
        payee=document.buyer.name,
        meta=(
            (keys.INVOICE_KEY, key),
            *(((keys.CARRIED_KEYS, ",".join(carried)),) if carried else ()),
            (keys.INVOICE_NUMBER, document.number),
            (keys.ORG, document.buyer_reference or ""),
            ("net", Decimal(document.net_minor).scaleb(-minor_digits(currency))),
            *((("due-date", document.due_date),) if document.due_date else ()),
        ),
    )
    receivable = accounts[payer].receivable
    documents = document_entries(document.issue_date, receivable, document.number, links, files)
    return [transaction, *documents]


def credit_note_entries(
    issuance: Transaction,
    invoice_number: str,
    number: str,
    issue_date: date,
    receivable: str,
    files: Mapping[str, str],
) -> list[Entry]:
    """The reversal of ``issuance`` as credit note ``number``, and its files."""
    link = keys.link_of_credit_note(number)
    reversal = reversal_entry(issuance, issue_date)._replace(
        txn_id=keys.credit_note_txn_id(number),
        narration=about(
            f"Credit note {number} cancelling invoice {invoice_number}", issuance.payee
        ),
    )
    reversal = reversal._replace(links=(*reversal.links, link))
    return [reversal, *document_entries(issue_date, receivable, number, reversal.links, files)]

"""``beanbill invoice render NUMBER``: write an issued document's missing files again.

From its JSON snapshot when there is one (exactly what was issued). Without it, an
invoice is derived again under its number and date, and accepted only if it moves what
its issuance transaction moved (amount due, net): the ledger says what was issued.
Existing files are never replaced (``files.write_documents`` is write-once).
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from beanbill.ledger import keys
from beanbill.ledger.accounts import RECEIVABLE_ROOT, under
from beanbill.ledger.books import Books, load_books
from beanbill.ledger.entries import minor_digits
from beanbill.ledger.invoicing import InvoicingError
from beanbill.ledger.invoicing.documents import InvoiceDocument, load_document
from beanbill.ledger.invoicing.due import consumptions, covered_keys, due_for_issued
from beanbill.ledger.invoicing.files import file_names, write_documents
from beanbill.ledger.invoicing.issue import derive_due
from beanbill.ledger.invoicing.recovery import numbering_state
from beanbill.rating.rated_store import RatedStore
from beanbill.rating.workspace import Workspace


def render_issued(workspace: Workspace, number: str) -> list[Path]:
    """The files written (those that were missing); an empty list when none was."""
    currency = workspace.settings.billing.currency
    with workspace.writing():
        books = load_books(workspace.ledger_path, currency)
        assigned = numbering_state(workspace, books).by_number(number)
        if assigned is None or not assigned.issued:
            raise InvoicingError(f"no issued invoice or credit note {number}")
        snapshot = workspace.invoices_dir / f"{number}.json"
        checked = not snapshot.exists()
        if not checked:
            document = load_document(snapshot)
        elif keys.is_credit_note_key(assigned.document_key):
            raise InvoicingError(
                f"{snapshot} is missing and a credit note is not derived again: restore it "
                "from a backup, then run `beanbill invoice render` again"
            )
        else:
            document = _derive_again(workspace, books, number)
        names = file_names(document).values()
        missing = [name for name in names if not (workspace.invoices_dir / name).exists()]
        write_documents(workspace, document, checked_against_ledger=checked)
    return [workspace.invoices_dir / name for name in sorted(missing)]


def _derive_again(workspace: Workspace, books: Books, number: str) -> InvoiceDocument:
    issuance = books.transaction(keys.invoice_txn_id(number))
    meta = dict(issuance.meta)
    customers = workspace.customers.by_id()
    customer = customers[str(meta[keys.ORG])]
    due = due_for_issued(
        customers,
        consumptions(books),
        str(meta[keys.INVOICE_KEY]),
        customer,
        covered_keys(issuance),
    )
    with RatedStore(workspace) as store:
        document = derive_due(workspace, store, due, number, issuance.date).document
    due_minor = sum(p.amount_minor for p in issuance.postings if under(p.account, RECEIVABLE_ROOT))
    net = meta.get("net")
    digits = minor_digits(document.currency)
    if document.due_minor != due_minor or net != Decimal(document.net_minor).scaleb(-digits):
        raise InvoicingError(
            f"{number} (issued {issuance.date}) derived again moves {document.due_minor} minor "
            f"units, its issuance {due_minor}: the books changed since; restore "
            f"invoices/{number}.json from a backup"
        )
    return document

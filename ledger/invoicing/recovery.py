"""The numbering state is a cache of the ledger: rebuilt when lost, refused when behind.

``state/invoices.sqlite`` binds numbers to what they invoice so that a crash is finished
under the same number. The ledger holds the same facts for every issued document (the
issuance with its number, key and date; the credit note's reversal), so a lost state is
rebuilt from it — issuing with an empty state would reuse issued numbers. A state that
lacks numbers the ledger holds (a restored old copy, say) is refused with the fix for
where it lives (``rebuild_advice``). A PostgreSQL state (``[state] url``) is started the
same way: from the ledger, on first use.
"""

from __future__ import annotations

import sqlite3

from beanbill.ledger import keys
from beanbill.ledger.books import Books
from beanbill.ledger.invoicing import InvoicingError
from beanbill.ledger.invoicing.due import invoicing_transactions
from beanbill.ledger.invoicing.numbering import (
    Assigned,
    NumberStore,
    open_numbers,
    parse_number,
    rebuild_advice,
)
from beanbill.rating.workspace import Workspace

MAX_LISTED = 5


def issued_in_ledger(books: Books) -> list[Assigned]:
    """Every invoice and credit note the ledger says was issued, as numbering rows."""
    issued = []
    for transaction in invoicing_transactions(books):
        meta = dict(transaction.meta)
        number = keys.invoice_number_of(transaction.txn_id)
        note = keys.credit_note_number_of(transaction.txn_id)
        if number is not None:
            key = str(meta[keys.INVOICE_KEY])
        elif note is not None:
            number = note
            cancelled = keys.invoice_number_of(str(meta.get(keys.REVERSES, "")))
            if cancelled is None:
                raise InvoicingError(f"{transaction.txn_id} reverses no invoice")
            key = keys.credit_note_key(cancelled)
        else:
            continue
        series, value = parse_number(number)
        issued.append(Assigned(number, series, value, key, True, transaction.date))
    for lot in books.lots().values():  # prepayment invoices: credit purchases with VAT
        if lot.invoice_number:
            series, value = parse_number(lot.invoice_number)
            key = keys.prepayment_key(lot.lot_id)
            issued.append(Assigned(lot.invoice_number, series, value, key, True, lot.acquired))
    return issued


def numbering_state(workspace: Workspace, books: Books) -> NumberStore:
    """The numbering state, rebuilt from the ledger if it is missing, checked otherwise."""
    numbers = open_numbers(workspace)
    in_ledger = issued_in_ledger(books)
    if not numbers.exists():
        numbers.restore(in_ledger)
        return numbers
    try:
        known = {assigned.number: assigned for assigned in numbers.all()}
    except sqlite3.DatabaseError as error:
        raise InvoicingError(
            f"{numbers.location} cannot be read ({error}): move it aside and run again, "
            "it is rebuilt from the ledger"
        ) from error
    lacking = [
        a.number
        for a in in_ledger
        if a.number not in known or known[a.number].document_key != a.document_key
    ]
    if lacking:
        raise InvoicingError(
            f"{numbers.location} lacks {len(lacking)} number(s) the ledger holds "
            f"({', '.join(lacking[:MAX_LISTED])}): it is older than the ledger; "
            f"{rebuild_advice(workspace)}"
        )
    return numbers

"""Invoices: derived from the ledger, numbered without gaps, rendered, posted, corrected.

The package is a pipeline of small modules, each with one job, in the order of an issue:

- ``due``: which periods are due and which invoices are in force, read from the books
  alone (no rendering stack: asking what is issued never loads WeasyPrint);
- ``derive``: the invoice as a **pure function** of what is due, the rated detail that
  explains it, the catalog, the seller and the terms (``lines`` turns rated groups into
  invoice lines, ``coupons`` adds discounts, ``vat`` decides the treatment);
- ``numbering``: gapless, durable numbers; ``issuance``: the ledger entries of an issue
  and of a credit note; ``files``: HTML, PDF/A-3 + Factur-X, CII and UBL on disk
  (``render``, ``einvoice``, ``ubl``); ``documents``: the document model connectors read;
- ``issue`` (issue, preview) and ``corrections`` (credit notes) put them together under
  the workspace lock, crash-safe.
"""

from __future__ import annotations

from beanbill.rating.errors import BeanbillError


class InvoicingError(BeanbillError):
    """An invoice cannot be derived or issued as the ledger stands."""

"""The figures behind beanbill's Fava billing pages, as pure functions of the ledger.

``billing`` (invoices, receivables' aging), ``credits`` (lots, balances, expiries),
``revenue`` (per family and month) and ``periods`` (the page's date and months) read
Beancount's entries and return typed rows, tested without Fava. The Fava extension
itself, which also reads the sync state, lives in ``beanbill.fava_billing``: the ledger
layer may not import sync.
"""

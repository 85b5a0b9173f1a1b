"""Ledger: double-entry Beancount books derived from rated output, and the invoices.

``accounts`` (the chart), ``keys`` (txn-ids, metadata keys), ``entries`` and ``text`` (typed
entries and their one safe text), ``writer`` (the one writer), ``books`` (reading back),
``posting`` and ``post`` (consumption, credits, expiries), ``invoicing/`` (invoices),
``plugin`` (the invariants bean-check enforces). Imports ``rating`` only.
"""

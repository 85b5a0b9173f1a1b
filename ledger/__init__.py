"""Ledger: double-entry Beancount postings derived from rated output (next issue)."""

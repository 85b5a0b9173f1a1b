"""Sync: push documents to external systems and reconcile payments (later issue)."""

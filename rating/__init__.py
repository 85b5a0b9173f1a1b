"""Rating: turn raw usage events into exactly priced detail lines.

This package is the base of beanbill's dependency graph: it imports none of
``ledger``, ``sync`` or ``connectors``. It owns the workspace configuration
(settings, catalog, customers), event ingestion into the usage store, and the
Ibis rating expressions.
"""

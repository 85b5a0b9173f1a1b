"""Sync: push issued documents to external systems, take their payments back into the books.

``interface`` (what a connector implements), ``state`` (durable push records, webhook
inbox), ``retry`` and ``limits`` (when and how fast to call), ``push`` (the nightly push),
``payments`` (movements → ledger, the single writer), ``serve`` (webhooks), ``reconcile``.
"""

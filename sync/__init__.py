"""Sync: push documents to external systems and reconcile payments.

So far: the durable state store (``sync.state``) and the retry policy (``sync.retry``);
the engine (`beanbill sync push`), webhooks and reconciliation come with the Stripe issue.
"""

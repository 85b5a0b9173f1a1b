"""The customer API: usage events in, usage, invoices, payments and credits out.

An ASGI application (FastAPI, so that its OpenAPI 3 document is written from the same
models that check the answers) over one workspace. It adds no record of its own beyond
the API keys: events go through the file ingest's rules (``beanbill.rating.ingest``),
invoices and credits are read from the ledger and the issued snapshots, usage from the
rated store. ``create_app`` (``beanbill.api.app``) builds it.
"""

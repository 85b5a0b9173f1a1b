"""The one small interface every external system's adapter implements.

A connector pushes beanbill's documents (``ledger.documents.InvoiceDocument``), finds them
again by beanbill's number (look before create: a timed-out create must not duplicate),
reports payment status, and verifies and parses the webhooks it sends. The sync engine
drives connectors; a new system is one module implementing this and its tests.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple, Protocol

from ledger.documents import InvoiceDocument


class RemoteDocument(NamedTuple):
    """Where a document lives in the external system, and its state there."""

    remote_ids: dict[str, str]
    status: str
    total_minor: int


class WebhookEvent(NamedTuple):
    event_id: str
    event_type: str
    payload: dict[str, Any]


class Connector(Protocol):
    name: str

    def find(self, document: InvoiceDocument) -> RemoteDocument | None:
        """The document as the remote system has it, found by our number; None if absent."""
        ...

    def push(self, document: InvoiceDocument, idempotency_key: str) -> RemoteDocument:
        """Create (or void, for a credit note) the document remotely; the key makes it safe."""
        ...

    def payment_status(self, remote: RemoteDocument) -> str: ...

    def parse_webhook(self, body: bytes, headers: Mapping[str, str]) -> WebhookEvent:
        """Verify the signature over the raw body, then parse; raise on a bad or stale one."""
        ...


def idempotency_key(target: str, document_number: str, operation: str) -> str:
    """Stable across retries and runs: the same push always carries the same key."""
    return f"beanbill:{target}:{document_number}:{operation}"

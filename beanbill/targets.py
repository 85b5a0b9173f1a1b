"""The enabled targets of a workspace, built from its settings and the environment.

Keys are read from environment variables named in the settings, never from files, so no
secret is written to a workspace, a log or the ledger.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from beanbill.connectors.email import EmailConnector
from beanbill.connectors.stripe import TARGET as STRIPE
from beanbill.connectors.stripe import StripeConnector
from beanbill.connectors.tryton import TrytonConnector, line_families
from beanbill.ledger.invoicing.documents import InvoiceDocument
from beanbill.rating.errors import BeanbillError
from beanbill.rating.workspace import Workspace
from beanbill.sync.crm import Crm
from beanbill.sync.interface import Connector, DocumentTarget
from beanbill.sync.push import target_documents
from beanbill.sync.retry import RetryPolicy
from beanbill.sync.state import SyncState, open_sync_state

CRM_TARGETS = frozenset({"hubspot"})  # targets that mirror organizations, not documents


class TargetError(BeanbillError):
    """A target is enabled but cannot be used (a key or password is missing)."""


def connectors(workspace: Workspace) -> list[Connector]:
    settings = workspace.settings
    stripe = settings.sync.stripe
    result: list[Connector] = []
    if stripe is not None and stripe.enabled:
        key = os.environ.get(stripe.api_key_env, "")
        if not key:
            raise TargetError(f"Stripe is enabled but {stripe.api_key_env} is not set")
        result.append(
            StripeConnector(
                stripe,
                key,
                os.environ.get(stripe.webhook_secret_env) or None,
                settings.invoicing.payment_days,
                settings.billing.timezone,
                settings.sync.workspace_id_of(settings.seller),
            )
        )
    tryton = settings.sync.tryton
    if tryton is not None and tryton.enabled:
        password = os.environ.get(tryton.password_env, "")
        if not password:
            raise TargetError(f"Tryton is enabled but {tryton.password_env} is not set")
        result.append(TrytonConnector(tryton, password, line_families(workspace.catalog)))
    return result


def delivery_targets(workspace: Workspace, state: SyncState) -> list[EmailConnector]:
    """The targets that deliver documents and move no money (e-mail)."""
    settings = workspace.settings
    email = settings.sync.email
    if email is None or not email.enabled:
        return []
    password = None
    if email.user:
        password = os.environ.get(email.password_env, "")
        if not password:
            raise TargetError(f"e-mail has a user but {email.password_env} is not set")
    customers = workspace.customers.by_id()

    def recipients_of(document: InvoiceDocument) -> Sequence[str]:
        customer = customers.get(document.buyer_reference or "")
        if customer is not None:
            return customer.billing_emails or [customer.email]
        return [document.buyer.email] if document.buyer.email else []

    def payment_link_of(number: str) -> str | None:
        record = state.get(number, STRIPE)
        return record.remote_ids.get("hosted_invoice_url") if record else None

    return [
        EmailConnector(
            email,
            password,
            workspace.invoices_dir,
            settings.sync.workspace_id_of(settings.seller),
            recipients_of,
            payment_link_of,
        )
    ]


def document_targets(workspace: Workspace, state: SyncState) -> list[DocumentTarget]:
    """Every target ``sync push`` pushes documents to, payment processors and ERPs first
    (an e-mail then links the Stripe invoice page of the same run)."""
    return [*connectors(workspace), *delivery_targets(workspace, state)]


def check_keys(workspace: Workspace) -> None:
    """Every enabled target has its key, password or token in the environment: a night
    fails before any work rather than after issuing."""
    connectors(workspace)
    delivery_targets(workspace, sync_state(workspace))
    crm_targets(workspace)


def crm_targets(workspace: Workspace) -> list[Crm]:
    """The CRMs the settings enable (HubSpot), their token from the environment."""
    settings = workspace.settings
    hubspot = settings.sync.hubspot
    if hubspot is None or not hubspot.enabled:
        return []
    from beanbill.connectors.hubspot import HubSpotConnector

    token = os.environ.get(hubspot.token_env, "")
    if not token:
        raise TargetError(f"HubSpot is enabled but {hubspot.token_env} is not set")
    workspace_id = settings.sync.workspace_id_of(settings.seller)
    return [HubSpotConnector(hubspot, token, workspace_id, policy=retry_policy(workspace))]


def _enabled(workspace: Workspace) -> list[str]:
    sync = workspace.settings.sync
    return [
        name
        for name in sorted(type(sync).model_fields)
        if getattr(getattr(sync, name), "enabled", False) is True
    ]


def enabled_target_names(workspace: Workspace) -> tuple[str, ...]:
    """The document targets the settings enable, by name, without building their
    connectors (no key needed). Each target's table is named as its connector:
    ``[sync.stripe]`` is the ``stripe`` target."""
    return tuple(name for name in _enabled(workspace) if name not in CRM_TARGETS)


def enabled_crm_names(workspace: Workspace) -> tuple[str, ...]:
    return tuple(name for name in _enabled(workspace) if name in CRM_TARGETS)


def documents_of_target(
    workspace: Workspace, target: str, documents: list[InvoiceDocument]
) -> list[InvoiceDocument]:
    """What ``target`` is to have of the issued documents, as its push selects them."""
    email = workspace.settings.sync.email
    if target == EmailConnector.name and email is not None:
        return target_documents(documents, True, email.issued_since)
    return target_documents(documents, False, None)


def retry_policy(workspace: Workspace) -> RetryPolicy:
    sync = workspace.settings.sync
    return RetryPolicy(attempts=sync.attempts, max_wait_seconds=float(sync.max_wait_seconds))


def sync_state(workspace: Workspace) -> SyncState:
    """The workspace's sync state: SQLite in ``state/``, or the PostgreSQL server that
    ``[state] url`` names (shared by several ``serve`` replicas)."""
    return open_sync_state(workspace)

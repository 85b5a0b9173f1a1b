"""The enabled targets of a workspace, built from its settings and the environment.

Keys are read from environment variables named in the settings, never from files, so no
secret is written to a workspace, a log or the ledger.
"""

from __future__ import annotations

import os

from beanbill.connectors.stripe import StripeConnector
from beanbill.connectors.tryton import TrytonConnector, line_families
from beanbill.rating.errors import BeanbillError
from beanbill.rating.workspace import Workspace
from beanbill.sync.interface import Connector
from beanbill.sync.retry import RetryPolicy
from beanbill.sync.state import SqliteSyncState


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


def enabled_target_names(workspace: Workspace) -> tuple[str, ...]:
    """The targets the settings enable, by name, without building their connectors (no
    key needed). Each target's table is named as its connector: ``[sync.stripe]`` is the
    ``stripe`` target."""
    sync = workspace.settings.sync
    return tuple(
        name
        for name in sorted(type(sync).model_fields)
        if getattr(getattr(sync, name), "enabled", False) is True
    )


def retry_policy(workspace: Workspace) -> RetryPolicy:
    sync = workspace.settings.sync
    return RetryPolicy(attempts=sync.attempts, max_wait_seconds=float(sync.max_wait_seconds))


def sync_state(workspace: Workspace) -> SqliteSyncState:
    return SqliteSyncState(workspace.state_dir)

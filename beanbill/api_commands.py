"""`beanbill api-key create|list|revoke`: the customer API's keys.

``create ORG`` prints the new key once, on stdout alone on its line, so that a script can
capture it (``KEY=$(beanbill api-key create org-0001 -q)``); it is stored hashed and can
never be shown again: a lost key is revoked and replaced. ``create --admin`` makes a key
that sees every organization. ``list`` never shows keys, only their ids; ``revoke KEY_ID``
takes effect at the key's next request.
"""

from __future__ import annotations

from pathlib import Path

import click

from beanbill.api.keys import ApiKey, ApiKeyError, KeyStore
from beanbill.exits import load_workspace, reports_errors, workspace_option


@click.group(name="api-key")
def api_key() -> None:
    """Create, list and revoke the customer API's keys."""


@api_key.command(name="create")
@workspace_option
@click.argument("org", required=False)
@click.option("--admin", is_flag=True, help="A key that sees every organization.")
@click.option("--label", default="", help="What the key is for (shown by `list`).")
@click.option("--quiet", "-q", is_flag=True, help="Print the key only.")
@reports_errors
def create_command(workspace: Path, org: str | None, admin: bool, label: str, quiet: bool) -> None:
    """Create a key for ORG (its teams included, for a parent), or --admin; shown once."""
    if admin == (org is not None):
        raise ApiKeyError("give either ORG or --admin")
    loaded = load_workspace(workspace)
    created = KeyStore(loaded.state_dir).create(
        org, (customer.id for customer in loaded.customers.customer), label
    )
    if not quiet:
        scope = "admin (every organization)" if admin else f"organization {org}"
        click.echo(f"API key {created.record.key_id} for {scope}; shown once, store it now:")
    click.echo(created.secret_key)


def _line(record: ApiKey) -> str:
    scope = "admin" if record.is_admin else record.org
    state = f"revoked {record.revoked_at}" if record.revoked_at else "active"
    label = f"  {record.label}" if record.label else ""
    return f"{record.key_id}  {scope}  created {record.created_at}  {state}{label}"


@api_key.command(name="list")
@workspace_option
@click.argument("org", required=False)
@reports_errors
def list_command(workspace: Path, org: str | None) -> None:
    """List the keys (of ORG only, if given): ids, scopes, states; never the keys."""
    loaded = load_workspace(workspace)
    records = KeyStore(loaded.state_dir).keys(org)
    if not records:
        click.echo("no API keys")
    for record in records:
        click.echo(_line(record))


@api_key.command(name="revoke")
@workspace_option
@click.argument("key_id")
@reports_errors
def revoke_command(workspace: Path, key_id: str) -> None:
    """Revoke the key KEY_ID (as `list` shows it) for good."""
    loaded = load_workspace(workspace)
    record = KeyStore(loaded.state_dir).revoke(key_id)
    click.echo(_line(record))

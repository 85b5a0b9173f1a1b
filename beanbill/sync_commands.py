"""`beanbill sync …`, `beanbill serve` and `beanbill run`: the external systems and the nightly job.

Exit codes follow the main command: 0 done, 1 done but something needs a human (dead
letters, discrepancies, rejected input), 2 nothing done.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import click

from beanbill.exits import (
    EXIT_ATTENTION,
    EXIT_OK,
    load_workspace,
    reports_errors,
    workspace_option,
)
from beanbill.progress import ProgressBar
from beanbill.rating.workspace import Workspace
from beanbill.sync.attention import attention
from beanbill.sync.crm import Crm, CrmReport, update_crm, workspace_companies
from beanbill.sync.erp import Erp, reconcile_erp
from beanbill.sync.interface import Connector, DocumentTarget
from beanbill.sync.payments import apply_events
from beanbill.sync.push import (
    PushSummary,
    documents_for,
    issued_snapshots,
    one_push_at_a_time,
    push_all,
)
from beanbill.sync.reconcile import ReconcileReport, reconcile
from beanbill.sync.retry import PermanentError, TransientError
from beanbill.sync.state import SyncState
from beanbill.targets import (
    TargetError,
    connectors,
    crm_targets,
    delivery_targets,
    document_targets,
    documents_of_target,
    enabled_crm_names,
    enabled_target_names,
    retry_policy,
    sync_state,
)

DEFAULT_RECONCILE_DAYS = 35
DEFAULT_PORT = 8787


@dataclass
class TargetsPushSummary(PushSummary):
    """A push to every target: also the targets that could not start, and why."""

    unstarted: list[tuple[str, str]] = field(default_factory=list)  # (target, reason)
    crm: list[CrmReport] = field(default_factory=list)

    @property
    def needs_attention(self) -> bool:
        crm = any(report.needs_attention for report in self.crm)
        return super().needs_attention or bool(self.unstarted) or crm


def _merge(total: PushSummary, part: PushSummary) -> None:
    total.synced += part.synced
    total.already += part.already
    total.waiting += part.waiting
    total.dead += part.dead


def _started(targets: list[DocumentTarget], summary: TargetsPushSummary) -> list[DocumentTarget]:
    """The targets that pass their check at start (an ERP's accounts and taxes exist);
    one that fails is named and skipped, never holding back the others."""
    ready = []
    for target in targets:
        check = getattr(target, "check", None)
        try:
            if callable(check):
                check()
            ready.append(target)
        except (TransientError, PermanentError) as error:
            summary.unstarted.append((target.name, str(error)))
    return ready


def run_push(workspace: Workspace) -> TargetsPushSummary:
    """Push to every enabled target, one after the other: a target that cannot start or
    fails leaves the others' pushes whole."""
    state = sync_state(workspace)
    targets = document_targets(workspace, state)
    crms = crm_targets(workspace)
    if not targets and not crms:
        click.echo(
            "sync: no target enabled ([sync.stripe], [sync.tryton], [sync.email] or "
            "[sync.hubspot] in beanbill.toml)"
        )
        return TargetsPushSummary()
    summary = TargetsPushSummary()
    with one_push_at_a_time(workspace):
        documents, unreadable = issued_snapshots(workspace, include_prepayments=True)
        ready = _started(targets, summary)
        total = sum(len(documents_for(target, documents)) for target in ready)
        policy = retry_policy(workspace)
        concurrency = workspace.settings.sync.concurrency
        with ProgressBar("pushing") as bar:
            done = [0]

            def advance(count: int) -> None:
                done[0] += count
                bar(done[0], total)

            for connector in ready:
                try:
                    pushed = push_all(documents, [connector], state, policy, concurrency, advance)
                finally:
                    close = getattr(connector, "close", None)
                    if callable(close):
                        close()
                _merge(summary, pushed)
        summary.crm = run_crm(workspace, crms, state)
    summary.unreadable = unreadable
    click.echo(
        f"sync push: {len(summary.synced):,} synced now, {summary.already:,} already synced, "
        f"{len(summary.waiting):,} waiting for their invoice, {len(summary.dead):,} dead letters"
    )
    for name, reason in summary.unstarted:
        click.echo(f"  not started: {name}: {reason}")
    for document, target, reason in summary.dead:
        click.echo(f"  dead: {document} → {target}: {reason}")
    for number in summary.waiting:
        click.echo(f"  waiting: {number} (its invoice is not synced)")
    for number, reason in summary.unreadable:
        click.echo(f"  not pushed: {number}: {reason}")
    if targets and summary.unstarted and len(summary.unstarted) == len(targets):
        name, reason = summary.unstarted[0]
        raise TargetError(f"sync push: no target could start: {name}: {reason}")
    return summary


def run_crm(workspace: Workspace, crms: list[Crm], state: SyncState) -> list[CrmReport]:
    """Bring every CRM's companies up to date with the books as they are now (after a
    push or a reconciliation moved them); one CRM failing leaves the others."""
    if not crms:
        return []
    companies = workspace_companies(workspace, datetime.now(UTC).date())
    reports = []
    for crm in crms:
        report = update_crm(crm, state, companies)
        click.echo(
            f"crm {report.target}: {report.upserted:,} companies updated, "
            f"{report.unchanged:,} unchanged, {len(report.refused):,} refused"
        )
        if report.unstarted:
            click.echo(f"  not started: {report.target}: {report.unstarted}")
        for org, reason in report.refused:
            click.echo(f"  refused: {org} → {report.target}: {reason}")
        reports.append(report)
    return reports


def _reconcile_one(
    workspace: Workspace, connector: Connector, state: SyncState, since: date
) -> ReconcileReport:
    if isinstance(connector, Erp):  # an ERP's books: payments both ways
        return reconcile_erp(workspace, connector, state, retry_policy(workspace))
    while apply_events(workspace, connector, state):
        pass  # what webhooks brought first: reconciliation then only fills gaps
    return reconcile(workspace, connector, state, since)


def run_reconcile(workspace: Workspace, since: date) -> list[ReconcileReport]:
    """Reconcile every enabled target; one that cannot be reached is a discrepancy of its
    own and the others are reconciled all the same."""
    state = sync_state(workspace)
    reports = []
    for connector in connectors(workspace):  # the targets that move money
        try:
            report = _reconcile_one(workspace, connector, state, since)
        except (TransientError, PermanentError) as error:
            report = ReconcileReport(discrepancies=[f"{connector.name}: not reconciled: {error}"])
        click.echo(
            f"reconcile {connector.name} since {since}: {report.checked_invoices:,} invoices, "
            f"{report.movements:,} movements, {report.posted.posted:,} posted now, "
            f"{len(report.discrepancies):,} discrepancies"
        )
        for line in report.discrepancies:
            click.echo(f"  {line}")
        reports.append(report)
    for crm_report in run_crm(workspace, crm_targets(workspace), state):
        if crm_report.needs_attention:
            problems = [f"{org}: {reason}" for org, reason in crm_report.refused]
            if crm_report.unstarted:
                problems.append(f"not started: {crm_report.unstarted}")
            reports.append(
                ReconcileReport(discrepancies=[f"{crm_report.target}: {p}" for p in problems])
            )
    return reports


def send_again(workspace: Workspace, number: str, reason: str) -> dict[str, str]:
    """E-mail an issued document again on request: a message of its own (its Message-ID
    counts the resends), recorded as a delivery beside the push record, which it never
    changes. What it sent: Message-ID and recipients."""
    from beanbill.ledger.invoicing.documents import load_document

    state = sync_state(workspace)
    targets = delivery_targets(workspace, state)
    if not targets:
        raise TargetError("e-mail is not enabled: add [sync.email] to beanbill.toml")
    snapshot = workspace.invoices_dir / f"{number}.json"
    if not snapshot.is_file():
        raise TargetError(f"no issued document {number} in {workspace.invoices_dir}")
    document = load_document(snapshot)
    target = targets[0]
    try:
        sequence = state.next_delivery(number, target.name)
        outgoing = target.outgoing(document, resend=sequence)
        sent = retry_policy(workspace).call(lambda: target.send(outgoing))
    finally:
        target.close()
    state.record_delivery(number, target.name, sequence, sent, reason)
    return sent


@click.group(name="sync")
def sync_group() -> None:
    """Push issued invoices to external systems; reconcile payments into the ledger."""


@sync_group.command(name="push")
@workspace_option
@reports_errors
def push_command(workspace: Path) -> None:
    """Push every issued invoice and credit note not yet synced to every enabled target."""
    summary = run_push(load_workspace(workspace))
    sys.exit(EXIT_ATTENTION if summary.needs_attention else EXIT_OK)


@sync_group.command(name="status")
@workspace_option
@reports_errors
def status_command(workspace: Path) -> None:
    """What was pushed where, what is pending, the dead letters, the webhook inbox and
    payment states; exits 1 when something needs a human (the Fava Sync page shows the
    same, from ``sync.attention``)."""
    loaded = load_workspace(workspace)
    state = sync_state(loaded)
    documents, _ = issued_snapshots(loaded, include_prepayments=True)
    enabled = enabled_target_names(loaded)
    known = {record.target for record in state.records()}
    issued = {
        name: [d.number for d in documents_of_target(loaded, name, documents)]
        for name in {*enabled, *known}
    }
    targets = attention(state, enabled, issued)
    for target in targets:
        for status, count in target.push_counts.items():
            click.echo(f"{target.target:10} {status:8} {count:6,}")
        if target.pending:
            click.echo(f"{target.target:10} {'to push':8} {len(target.pending):6,}")
        for record in (*target.dead, *target.retrying):
            click.echo(
                f"  {record.document} → {record.target}: {record.status.value} after "
                f"{record.attempts} attempts: {record.last_error or ''}"
            )
        inbox = ", ".join(f"{kind} {count:,}" for kind, count in target.inbox.items())
        click.echo(f"{target.target} inbox: {inbox or 'empty'}")
        for outcome, count in target.problem_events:
            click.echo(f"  {count:,} event(s) {outcome}")
        for payment in target.payment_states:
            click.echo(f"  {payment.remote_id} {payment.document or ''} {payment.status}")
    crm_refused = False
    for name in enabled_crm_names(loaded):
        companies = state.crm_companies(name).values()
        refused = [company for company in companies if company.last_error]
        current = sum(1 for company in companies if company.digest and not company.last_error)
        click.echo(f"{name:10} {'companies':9} {current:6,} current, {len(refused):,} refused")
        for company in refused:
            click.echo(f"  {company.org} → {name}: {company.last_error}")
        crm_refused = crm_refused or bool(refused)
    attention_needed = crm_refused or any(t.needs_attention for t in targets)
    sys.exit(EXIT_ATTENTION if attention_needed else EXIT_OK)


@sync_group.command(name="import-sqlite")
@workspace_option
@reports_errors
def import_sqlite_command(workspace: Path) -> None:
    """Copy state/sync.sqlite into the PostgreSQL database of [state] url (once, before the
    first push on PostgreSQL: what each target already has is not sent again)."""
    from beanbill.sync.state_import import import_sqlite_state

    loaded = load_workspace(workspace)
    report = import_sqlite_state(loaded.state_dir, loaded.settings.state)
    if report.already_there:
        click.echo(f"already imported: the database holds the same {report.rows:,} rows")
        return
    for table, count in report.copied:
        click.echo(f"{table:15} {count:9,} rows copied")
    click.echo(
        "the SQLite file is kept as it was; beanbill reads the database while [state] url "
        "is set (the invoice numbering is rebuilt there from the ledger on first use)"
    )


@sync_group.command(name="retry")
@workspace_option
@click.option("--target", default=None, help="Only this target (default: every target).")
@reports_errors
def retry_command(workspace: Path, target: str | None) -> None:
    """Re-queue dead letters; the next `sync push` tries them again."""
    count = sync_state(load_workspace(workspace)).requeue_dead(target)
    click.echo(f"{count:,} dead letters re-queued")


@sync_group.command(name="reconcile")
@workspace_option
@click.option(
    "--since",
    type=click.DateTime(["%Y-%m-%d"]),
    default=None,
    help=f"Look at remote objects created since this day (default: {DEFAULT_RECONCILE_DAYS} "
    "days ago).",
)
@reports_errors
def reconcile_command(workspace: Path, since: datetime | None) -> None:
    """Post payments, refunds, fees, payouts and disputes the ledger lacks; report the rest."""
    day = since.date() if since else datetime.now(UTC).date() - timedelta(DEFAULT_RECONCILE_DAYS)
    reports = run_reconcile(load_workspace(workspace), day)
    sys.exit(EXIT_ATTENTION if any(report.discrepancies for report in reports) else EXIT_OK)


# What `serve --workers N` hands each worker process (uvicorn starts them by import
# string): the workspace and the provisional rating interval, as JSON.
SERVE_WORKER_ENVIRONMENT = "BEANBILL_SERVE_WORKER"


def serve_app(workspace: Path, rate_open_minutes: int) -> Any:
    """The server's app: payment webhooks and the customer API, on one port."""
    from beanbill.api.app import create_app as create_api
    from beanbill.sync.serve import create_app

    loaded = load_workspace(workspace)
    # Only payment processors send webhooks (an ERP is reconciled by polling).
    targets = [target for target in connectors(loaded) if not isinstance(target, Erp)]
    for target in targets:
        if not getattr(target, "webhook_secret", None):
            raise TargetError(f"{target.name}: no webhook secret in the environment")
    every = float(rate_open_minutes * 60) if rate_open_minutes else None
    app = create_app(loaded, targets, sync_state(loaded), rate_open_every_seconds=every)
    app.mount("/", create_api(loaded))  # after the webhooks and /health, which match first
    return app


def serve_worker_app() -> Any:
    """One worker's app under `serve --workers N` (uvicorn's factory, in each process)."""
    from beanbill.serving import settle_heap

    options = json.loads(os.environ[SERVE_WORKER_ENVIRONMENT])
    app = serve_app(Path(options["workspace"]), int(options["rate_open_minutes"]))
    settle_heap()  # as ``serve_one`` does: the app is built
    return app


@click.command(name="serve")
@workspace_option
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=DEFAULT_PORT, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--rate-open-minutes",
    default=15,
    show_default=True,
    type=click.IntRange(0, 1440),
    help="Rate the open periods (the API's usage and forecast) this often; 0: never.",
)
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(1, 16),
    help="Server processes on the one port (each its own interpreter: requests are "
    "parsed on every core; the inbox and the workspace lock keep them consistent).",
)
@reports_errors
def serve_command(
    workspace: Path, host: str, port: int, rate_open_minutes: int, workers: int
) -> None:
    """Receive payment webhooks (POST /webhooks/stripe) and post them to the ledger;
    serve the customer API (/v1, its OpenAPI document at /openapi.json) beside them."""
    from beanbill.serving import listen, serve_in_workers, serve_one

    app = serve_app(workspace, rate_open_minutes)  # settings and secrets checked here, once
    bound = listen(host, port)
    click.echo(
        f"beanbill serve on http://{host}:{port}/webhooks/<target>, the customer API on "
        f"http://{host}:{port}/v1 (OpenAPI document: /openapi.json)"
        + (f", {workers} workers" if workers > 1 else ""),
        err=True,
    )
    if workers == 1:
        serve_one(app, bound)
        return
    os.environ[SERVE_WORKER_ENVIRONMENT] = json.dumps(
        {"workspace": str(workspace.resolve()), "rate_open_minutes": rate_open_minutes}
    )
    serve_in_workers("beanbill.sync_commands:serve_worker_app", bound, workers)

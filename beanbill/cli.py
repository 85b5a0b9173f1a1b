"""The ``beanbill`` command.

Exit codes scripts can rely on:
  0  done
  1  done, but some input was rejected (see the rejects file named in the output)
  2  nothing done: bad usage, configuration or input (the message says where)
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import click

from beanbill import demo as demo_module
from beanbill import demo_stripe
from beanbill.examples import write_configuration
from beanbill.exits import (
    EXIT_ATTENTION,
    EXIT_OK,
    load_workspace,
    reports_errors,
    workspace_option,
)
from beanbill.ledger import keys
from beanbill.ledger.books import ledger_errors, load_books
from beanbill.ledger.entries import format_minor
from beanbill.ledger.invoicing.due import issued_numbers_of
from beanbill.ledger.main_file import FAVA_EXTENSION

if TYPE_CHECKING:
    from beanbill.ledger.invoicing.issue import IssueSummary
from beanbill.api_commands import api_key
from beanbill.ledger.post import balance, post, record_credit
from beanbill.progress import ProgressBar, on_terminal
from beanbill.rating.config import EU_COUNTRIES, BillingMode
from beanbill.rating.errors import RatingError, WorkspaceError
from beanbill.rating.ingest import IngestSummary, ingest, summary_as_json
from beanbill.rating.periods import Month, parse_month_range
from beanbill.rating.provisional import local_today, rate_open
from beanbill.rating.rate import RatedMonth, rate_months
from beanbill.rating.workspace import SETTINGS_FILE, Workspace
from beanbill.report import render_summary
from beanbill.sync_commands import (
    DEFAULT_PORT,
    DEFAULT_RECONCILE_DAYS,
    run_push,
    run_reconcile,
    serve_command,
    sync_group,
)
from beanbill.targets import check_keys

DEMO_CUSTOMERS = 50
INIT_CUSTOMERS = 6


@click.group(
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog="Exit codes: 0 done; 1 done but some input rejected; 2 error, nothing done.",
)
@click.version_option(package_name="beanbill")
def main() -> None:
    """beanbill: exact per-second billing for cloud platforms, kept in a Beancount ledger.

    \b
    A typical day:
      beanbill init ./billing            create a workspace (settings, catalog, customers)
      beanbill ingest -w ./billing usage.jsonl
                                         validate, deduplicate and store usage events
      beanbill rate -w ./billing --period 2026-11
                                         price every second of the month's billing periods
    Or run everything on generated data:  beanbill demo
    """


@main.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--customers", default=INIT_CUSTOMERS, show_default=True, help="How many example organizations."
)
@click.option("--seed", default=1, show_default=True, help="Seed for the example data.")
@reports_errors
def init(directory: Path, customers: int, seed: int) -> None:
    """Create an example workspace in DIRECTORY (refuses to overwrite one)."""
    directory = directory.resolve()
    if (directory / SETTINGS_FILE).exists():
        raise WorkspaceError(f"{directory} already holds a workspace ({SETTINGS_FILE})")
    write_configuration(directory, customers, seed)
    loaded = load_workspace(directory)
    organizations = [customer.id for customer in loaded.customers.customer]
    samples = demo_module.write_usage(directory / "inbox", organizations, seed)
    click.echo(f"Created workspace {loaded.root}")
    click.echo("Edit beanbill.toml, catalog.toml and customers.toml; sample usage to try:")
    click.echo(f"  beanbill ingest -w {directory} " + " ".join(str(path) for path in samples))
    click.echo(f"  beanbill rate -w {directory} --period {demo_module.DEMO_MONTH}")


@main.command(name="check")
@workspace_option
@reports_errors
def check_command(workspace: Path) -> None:
    """Validate the workspace's settings, catalog and customers; report every problem."""
    loaded = load_workspace(workspace)
    click.echo(
        f"OK: {len(loaded.catalog.rated_meters())} meters and services, "
        f"{len(loaded.catalog.addon)} add-ons, {len(loaded.customers.customer)} organizations"
    )


def _print_ingest(summary: IngestSummary) -> None:
    click.echo(
        f"read {summary.read:,}  accepted {summary.accepted:,}  duplicates {summary.duplicates:,}  "
        f"rejected {summary.rejected:,}  late {summary.late:,}"
    )
    if summary.months:
        click.echo(f"stored months: {', '.join(summary.months)}")
    for rule, count in summary.reasons:
        click.echo(f"  rejected {count:>8,}  {rule}")
    if summary.rejects_path:
        click.echo(f"rejected events (file, line, field, reason): {summary.rejects_path}")
    if summary.late_path:
        click.echo(f"late events for already closed periods: {summary.late_path}")
    if summary.compaction_problem:
        click.echo(f"stored, but: {summary.compaction_problem}")


@main.command(name="ingest")
@click.argument(
    "files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@workspace_option
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@reports_errors
def ingest_command(files: tuple[Path, ...], workspace: Path, as_json: bool) -> None:
    """Validate, deduplicate and store usage events from FILES (.jsonl, .csv, .parquet).

    Ingesting the same file twice stores nothing the second time. Rejected events are
    written to the workspace's rejects folder with file, line, field and reason; the
    command then exits with 1.
    """
    show_progress = sys.stdout.isatty() and not as_json
    summary = ingest(load_workspace(workspace), list(files), show_progress=show_progress)
    if as_json:
        click.echo(summary_as_json(summary))
    else:
        _print_ingest(summary)
    sys.exit(summary.exit_code)


def _print_rated(result: RatedMonth) -> None:
    click.echo(
        f"{result.month}: {result.line_count:,} lines for {result.organization_count:,} "
        f"organizations, {result.amount.normalize():f} at full precision → {result.lines_path}"
    )


@main.command(name="rate")
@workspace_option
@click.option(
    "--period", "-p", default=None, help="A month (2026-11) or a range (2026-09..2026-11)."
)
@click.option(
    "--open",
    "open_periods",
    is_flag=True,
    help="Rate the current (open) periods provisionally, into provisional/ (never posted).",
)
@reports_errors
def rate_command(workspace: Path, period: str | None, open_periods: bool) -> None:
    """Rate every billing period that starts in the given month(s).

    Writes rated/month=YYYY-MM/lines.parquet (per organization, period, day, meter,
    resource and pricing tier) and totals.parquet (per organization, period and product
    family). Re-running gives byte-identical files.

    With --open: the months of the periods running today, rated by the same engine into
    provisional/month=YYYY-MM/, which the customer API's usage and forecast read and
    `post` never does.
    """
    if (period is None) == (not open_periods):
        raise click.UsageError("give --period MONTH or --open (one of them)")
    loaded = load_workspace(workspace)
    if open_periods:
        with ProgressBar("rating open periods") as bar:
            results = rate_open(loaded, local_today(loaded), bar)
    else:
        assert period is not None
        with ProgressBar("rating") as bar:
            results = rate_months(loaded, parse_month_range(period), bar)
    for result in results:
        _print_rated(result)


@main.command(name="report")
@workspace_option
@click.option("--period", "-p", required=True, help="A month already rated, e.g. 2026-11.")
@reports_errors
def report_command(workspace: Path, period: str) -> None:
    """Print the rated totals of a month: per product family and the largest organizations."""
    loaded = load_workspace(workspace)
    for month in parse_month_range(period):
        click.echo(render_summary(loaded, month))


def _money(amount_minor: int, currency: str) -> str:
    return f"{format_minor(amount_minor, currency)} {currency}"


@main.command(name="post")
@workspace_option
@click.option(
    "--period", "-p", required=True, help="Post closed periods of rated months up to this month."
)
@click.option(
    "--as-of",
    type=click.DateTime(["%Y-%m-%d"]),
    default=None,
    help="Treat periods ending on or before this day as closed (default: today, UTC).",
)
@click.option(
    "--correct",
    is_flag=True,
    help="For periods re-rated after posting: post a reversal and the corrected consumption.",
)
@reports_errors
def post_command(workspace: Path, period: str, as_of: datetime | None, correct: bool) -> None:
    """Post the consumption of every closed billing period to the ledger, and due expiries.

    One transaction per organization and period, one posting per product family, paid
    from credits first. Re-running posts nothing twice; a period whose rated amounts
    changed after posting is refused (correct it with a new entry).
    """
    loaded = load_workspace(workspace)
    day = as_of.date() if as_of else datetime.now(UTC).date()
    with ProgressBar("posting") as bar:
        summary = post(loaded, Month.parse(period), day, correct=correct, progress=bar)
    click.echo(
        f"{summary.periods:,} closed periods: {summary.written:,} entries written, "
        f"{summary.unchanged:,} already posted, {summary.expiries:,} credit expiries"
    )
    click.echo(f"ledger: {loaded.ledger_path}")


@main.group(name="credits")
def credits_group() -> None:
    """Record prepaid credit: purchases (paid) and promotional grants."""


def _credit_command(kind: str) -> Callable[..., None]:
    @workspace_option
    @click.argument("org")
    @click.argument("amount")
    @click.option("--date", "acquired", type=click.DateTime(["%Y-%m-%d"]), required=True)
    @click.option(
        "--expires",
        type=click.DateTime(["%Y-%m-%d"]),
        default=None,
        help="Last day the credit can be used.",
    )
    @click.option(
        "--priority",
        type=click.IntRange(0, 1000),
        default=100 if kind == "purchase" else 10,
        show_default=True,
        help="Lower is drawn first.",
    )
    @click.option(
        "--id", "lot_id", default=None, help="Stable id (idempotency key) of this credit."
    )
    @reports_errors
    def command(
        workspace: Path,
        org: str,
        amount: str,
        acquired: datetime,
        expires: datetime | None,
        priority: int,
        lot_id: str | None,
    ) -> None:
        loaded = load_workspace(workspace)
        lot, written = record_credit(
            loaded,
            org,
            kind,
            amount,
            acquired.date(),
            expires.date() if expires else None,
            priority,
            lot_id,
        )
        state = "recorded" if written else "already recorded"
        click.echo(
            f"credit {lot.lot_id}: {amount} {loaded.settings.billing.currency} for {org} {state}"
        )
        books = load_books(loaded.ledger_path, loaded.settings.billing.currency)
        recorded = books.lots().get(lot.lot_id)
        if recorded is not None and recorded.invoice_number:
            click.echo(
                f"  prepayment invoice {recorded.invoice_number} (VAT "
                f"{_money(recorded.vat_minor, loaded.settings.billing.currency)}): "
                f"{loaded.invoices_dir / (recorded.invoice_number + '.pdf')}"
            )

    return command


credits_group.command(name="buy", help="Record a paid credit purchase for ORG.")(
    _credit_command("purchase")
)
credits_group.command(name="grant", help="Grant promotional credit to ORG.")(
    _credit_command("grant")
)


@main.command(name="balance")
@workspace_option
@click.argument("org")
@reports_errors
def balance_command(workspace: Path, org: str) -> None:
    """Show ORG's credits, unbilled consumption and receivable, from the ledger."""
    loaded = load_workspace(workspace)
    result = balance(loaded, org)
    currency = result.currency
    click.echo(
        f"{org}: credits {_money(result.credits_minor, currency)}, "
        f"unbilled {_money(result.unbilled_minor, currency)}, "
        f"receivable {_money(result.receivable_minor, currency)}"
    )
    for lot, left in result.lots:
        expires = lot.expires.isoformat() if lot.expires else "never"
        click.echo(
            f"  lot {lot.lot_id} ({lot.kind}, priority {lot.priority}, expires {expires}): "
            f"{_money(left, currency)} of {_money(lot.amount_minor, currency)} left"
        )


def _print_balances(workspace: Workspace) -> None:
    """One organization of each billing mode, and every over-consumption."""
    shown: set[str] = set()
    click.echo("Balances (one organization per billing mode, then every over-consumption):")
    for customer in workspace.customers.customer:
        result = balance(workspace, customer.id)
        provisioned = customer.billing_mode is BillingMode.PROVISIONED
        over_consumed = provisioned and result.unbilled_minor > 0
        if customer.billing_mode.value in shown and not over_consumed:
            continue
        shown.add(customer.billing_mode.value)
        owed = "over-consumption owed" if provisioned else "unbilled"
        click.echo(
            f"  {customer.id} ({customer.billing_mode.value}): credits "
            f"{_money(result.credits_minor, result.currency)}, {owed} "
            f"{_money(result.unbilled_minor, result.currency)}"
        )


@main.group(name="invoice", invoke_without_command=True)
@workspace_option
@click.option("--period", "-p", default=None, help="Issue every invoice due up to this month.")
@click.option(
    "--date",
    "issue_day",
    type=click.DateTime(["%Y-%m-%d"]),
    default=None,
    help="Issue date (default: today, UTC).",
)
@click.option(
    "--correct",
    is_flag=True,
    help="For invoices whose period was re-rated after issue: cancel each with a credit note "
    "and issue the period again, late usage included.",
)
@click.pass_context
@reports_errors
def invoice_group(
    context: click.Context,
    workspace: Path,
    period: str | None,
    issue_day: datetime | None,
    correct: bool,
) -> None:
    """Issue invoices from the ledger: numbered, rendered (HTML, PDF/A-3 Factur-X, UBL), posted.

    \b
      beanbill invoice --period 2026-10      issue every invoice due up to October 2026
      beanbill invoice --period 2026-10 --correct   and correct those re-rated since
      beanbill invoice draft --period 2026-10 preview them without numbers
      beanbill invoice show INV-2026-000001   what an issued invoice says
      beanbill invoice credit INV-2026-000001 --reason "..."  cancel it with a credit note
      beanbill invoice render INV-2026-000001 write its missing files again
    """
    if context.invoked_subcommand is not None:
        return  # the subcommand takes this --workspace unless it is given its own
    if period is None:
        raise click.UsageError("give --period, or a subcommand (draft, show, credit)")
    from beanbill.ledger.invoicing.corrections import credit_note  # the PDF stack loads here
    from beanbill.ledger.invoicing.issue import issue

    loaded = load_workspace(workspace)
    day = issue_day.date() if issue_day else datetime.now(UTC).date()
    with ProgressBar("rendering invoices") as bar:
        summary = issue(loaded, Month.parse(period), day, bar)
    if correct and summary.stale:
        for stale in summary.stale:
            reason = f"Usage of the period re-rated after issue (late usage): {stale.key}"
            note, _ = credit_note(loaded, stale.number, day, reason)
            click.echo(f"credit note {note} cancels {stale.number} (re-rated after issue)")
        with ProgressBar("rendering invoices") as bar:
            again = issue(loaded, Month.parse(period), day, bar)
        summary = replace(again, issued=summary.issued + again.issued)
    click.echo(f"{len(summary.issued):,} invoices issued")
    if summary.issued:
        click.echo(f"  {summary.issued[0]} … {summary.issued[-1]} in {loaded.invoices_dir}")
    _print_refused(summary)
    if summary.refused or summary.stale:
        sys.exit(EXIT_ATTENTION)


def _print_refused(summary: IssueSummary) -> None:
    for key, reason in summary.refused:
        click.echo(f"  not issued: {key}: {reason}")
    for key, amount_minor in summary.held:
        click.echo(
            f"  held: {key}: {amount_minor} minor units to pay, below the minimum invoice "
            "amount; carried to the next period's invoice"
        )
    for stale in summary.stale:
        click.echo(
            f"  re-rated after issue: {stale.number} moved {stale.moved_minor}, its period now "
            f"holds {stale.now_minor} (minor units): `beanbill invoice credit {stale.number}` "
            "cancels it and the next run invoices the period again, late usage included"
        )


@invoice_group.command(name="draft")
@workspace_option
@click.option("--period", "-p", required=True)
@reports_errors
def invoice_draft(workspace: Path, period: str) -> None:
    """Preview the invoices due up to PERIOD: no number, nothing written."""
    from beanbill.ledger.invoicing.issue import preview  # the PDF stack loads only here

    loaded = load_workspace(workspace)
    currency = loaded.settings.billing.currency
    for document in preview(loaded, Month.parse(period), datetime.now(UTC).date()):
        net = _money(document.net_minor, currency)
        vat = _money(document.tax_minor, currency)
        due = _money(document.due_minor, currency)
        click.echo(
            f"{document.number}: {len(document.lines)} lines, net {net}, VAT {vat}, due {due}"
        )


@invoice_group.command(name="show")
@workspace_option
@click.argument("number")
@reports_errors
def invoice_show(workspace: Path, number: str) -> None:
    """Show what an issued invoice, prepayment invoice or credit note says, and its files."""
    from beanbill.ledger.invoicing.documents import load_document
    from beanbill.ledger.invoicing.numbering import parse_number

    parse_number(number)  # a number, never a path
    loaded = load_workspace(workspace)
    snapshot = loaded.invoices_dir / f"{number}.json"
    if not snapshot.exists():
        raise WorkspaceError(f"no issued document {number} in {loaded.invoices_dir}")
    document = load_document(snapshot)
    currency = document.currency
    title = {"380": "invoice", "381": "credit note", "386": "prepayment invoice"}
    click.echo(f"{number}: {title[document.type.value]} for {document.buyer.name}")
    click.echo(f"  issued {document.issue_date}, period {document.period_start} – "
               f"{document.period_end}"
               + (f", due {document.due_date}" if document.due_date else ""))  # fmt: skip
    if document.preceding_number:
        click.echo(f"  corrects {document.preceding_number}: {document.reason or ''}")
    click.echo(f"  {len(document.lines)} lines, net {_money(document.net_minor, currency)}")
    for entry in document.vat_breakdown():
        click.echo(
            f"  VAT {entry.category.value} {entry.rate_percent.normalize():f} %: "
            f"{_money(entry.tax_minor, currency)} on {_money(entry.base_minor, currency)}"
        )
    if document.paid_minor:
        click.echo(f"  paid in advance {_money(document.paid_minor, currency)}")
    to_pay = "credited" if document.type.value == "381" else "to pay"
    click.echo(f"  total {to_pay} {_money(document.due_minor, currency)}")
    for suffix in ("pdf", "cii.xml", "ubl.xml", "html"):
        path = loaded.invoices_dir / f"{number}.{suffix}"
        if path.exists():
            click.echo(f"  {suffix:8} {path}")


@invoice_group.command(name="send")
@workspace_option
@click.argument("number")
@click.option("--reason", default="on request", show_default=True, help="Recorded with it.")
@reports_errors
def invoice_send(workspace: Path, number: str, reason: str) -> None:
    """E-mail an issued document again (the customer lost it): a new message, recorded
    beside the push, which stays as it was."""
    from beanbill.ledger.invoicing.numbering import parse_number
    from beanbill.sync_commands import send_again

    parse_number(number)  # a number, never a path
    sent = send_again(load_workspace(workspace), number, reason)
    click.echo(f"{number} sent again to {sent['recipients']} ({sent['message_id']})")
    if sent.get("refused"):
        click.echo(f"  refused: {sent['refused']}")
        sys.exit(EXIT_ATTENTION)


@invoice_group.command(name="render")
@workspace_option
@click.argument("number")
@reports_errors
def invoice_render(workspace: Path, number: str) -> None:
    """Write again the missing files of issued invoice or credit note NUMBER.

    From its snapshot (invoices/NUMBER.json), or, for an invoice whose snapshot is gone,
    derived again and checked against its issuance in the ledger. Existing files are
    never replaced.
    """
    from beanbill.ledger.invoicing.reprint import render_issued  # the PDF stack loads here

    written = render_issued(load_workspace(workspace), number)
    if not written:
        click.echo(f"{number}: every file is present; nothing written")
    for path in written:
        click.echo(f"written: {path}")


@invoice_group.command(name="credit")
@workspace_option
@click.argument("number")
@click.option(
    "--reason", required=True, help="Why the invoice is cancelled (printed on the credit note)."
)
@reports_errors
def invoice_credit(workspace: Path, number: str, reason: str) -> None:
    """Cancel invoice NUMBER with a credit note (its own series); the period is due again."""
    from beanbill.ledger.invoicing.corrections import credit_note  # the PDF stack loads here

    loaded = load_workspace(workspace)
    credit_number, pdf = credit_note(loaded, number, datetime.now(UTC).date(), reason)
    click.echo(f"credit note {credit_number} cancels {number}: {pdf}")


def _print_credit_examples(workspace: Workspace) -> None:
    """Where the demo's credit and VAT cases are: a prepayment invoice, an invoice with a
    grant as a price reduction, and a consumer charged their country's VAT (OSS)."""
    currency = workspace.settings.billing.currency
    lots = list(load_books(workspace.ledger_path, currency).lots().values())
    bought = next((lot for lot in lots if lot.invoice_number), None)
    if bought is not None:
        path = workspace.invoices_dir / f"{bought.invoice_number}.pdf"
        click.echo(f"  prepayment     {path} (credit bought by {bought.org}, VAT when paid)")
    granted = next((lot.org for lot in lots if lot.kind == "grant"), None)
    number = _invoice_number_of(workspace, granted) if granted else None
    if number:
        path = workspace.invoices_dir / f"{number}.pdf"
        click.echo(f"  granted credit {path} (a price reduction: VAT on what is paid)")
    seller = workspace.settings.seller.country
    consumer = next(
        (
            c.id
            for c in workspace.customers.customer
            if c.country != seller and not c.vat_id and c.country in EU_COUNTRIES
        ),
        None,
    )
    number = _invoice_number_of(workspace, consumer) if consumer else None
    if number and workspace.settings.invoicing.oss:
        path = workspace.invoices_dir / f"{number}.pdf"
        click.echo(f"  OSS consumer   {path} (VAT at the rate of the customer's country)")
    carried = next(
        (
            str(entry.meta[keys.INVOICE_NUMBER])
            for entry in load_books(workspace.ledger_path, currency).entries
            if keys.CARRIED_KEYS in entry.meta
        ),
        None,
    )
    if carried:
        path = workspace.invoices_dir / f"{carried}.pdf"
        minimum = workspace.settings.invoicing.minimum_amount
        click.echo(f"  carried        {path} (earlier days below the {minimum} minimum)")


def _print_demo_keys(workspace: Workspace) -> None:
    """Two API keys for trying the customer API on the demo: shown once, stored hashed."""
    from beanbill.api.keys import KeyStore

    store = KeyStore(workspace.state_dir)
    organizations = [customer.id for customer in workspace.customers.customer]
    admin = store.create(None, organizations, "demo admin").secret_key
    customer = store.create(organizations[0], organizations, "demo customer").secret_key
    address = f"http://127.0.0.1:{DEFAULT_PORT}"
    click.echo(f"Customer API and portal: beanbill serve -w {workspace.root}, then")
    click.echo(f"  API {address}/v1 (OpenAPI: {address}/openapi.json), portal {address}/portal/")
    click.echo(f"  admin key            {admin}")
    click.echo(f"  {organizations[0]} key        {customer}")


def _invoice_number_of(workspace: Workspace, org: str) -> str | None:
    books = load_books(workspace.ledger_path, workspace.settings.billing.currency)
    numbers = issued_numbers_of(books, org)
    return numbers[0] if numbers else None


OLD_EXTENSION_LINE = '"beanbill.ledger.fava_billing"'  # main files written before 2026-11-30
EXTENSION_LINE = f'"{FAVA_EXTENSION}"'


@main.command(name="fava")
@workspace_option
@click.option("--port", default=5000, show_default=True, type=click.IntRange(1, 65535))
@reports_errors
def fava_command(workspace: Path, port: int) -> None:
    """Browse the workspace ledger in Fava: read-only, on 127.0.0.1 only.

    Read-only because beanbill appends to the ledger and Fava's editor would rewrite
    files without fsync. Fava runs in this process and opens the books from Beancount's
    cache when it is valid (seconds instead of half a minute for a year); it reloads
    when beanbill appends.
    """
    from beanbill.fava_server import serve  # Fava and Flask load only for this command

    loaded = load_workspace(workspace)
    ledger = loaded.ledger_path
    if ledger.is_file() and OLD_EXTENSION_LINE in ledger.read_text(encoding="utf-8"):
        click.echo(
            f"note: {loaded.ledger_path} enables the billing pages under their old name: "
            f"replace {OLD_EXTENSION_LINE} with {EXTENSION_LINE} (the pages read the sync state)",
            err=True,
        )
    where = f"Fava on http://127.0.0.1:{port}/ (read-only), ledger {loaded.ledger_path}"
    serve(loaded.ledger_path, port, listening=lambda: click.echo(where))


@main.command(name="demo")
@click.option(
    "--workspace",
    "-w",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("demo-workspace"),
    show_default=True,
    help="Where to build the demo workspace (rebuilt from scratch).",
)
@click.option("--seed", default=7, show_default=True, help="Same seed → same files.")
@click.option("--customers", default=DEMO_CUSTOMERS, show_default=True)
@reports_errors
def demo_command(workspace: Path, seed: int, customers: int) -> None:
    """Build a demo workspace, generate a month of usage, ingest it, rate it, summarize it."""
    from beanbill.ledger.invoicing.corrections import credit_note  # the PDF stack loads here
    from beanbill.ledger.invoicing.issue import issue

    workspace = workspace.resolve()
    if workspace.exists():
        if not (workspace / SETTINGS_FILE).exists():
            raise WorkspaceError(
                f"{workspace} exists and is not a beanbill workspace; not touching it"
            )
        shutil.rmtree(workspace)
    write_configuration(workspace, customers, seed)
    loaded = load_workspace(workspace)
    organizations = [customer.id for customer in loaded.customers.customer]
    files = demo_module.write_usage(workspace / "inbox", organizations, seed)
    click.echo(f"Workspace: {loaded.root}")
    click.echo(
        f"Generated usage: {', '.join(str(path.relative_to(loaded.root)) for path in files)}"
    )
    summary = ingest(loaded, files, show_progress=on_terminal())
    _print_ingest(summary)
    click.echo("(the broken events are deliberate: they show how rejects are reported)")
    month = Month.parse(demo_module.DEMO_MONTH)
    with ProgressBar("rating") as bar:
        rated = rate_months(loaded, [month], bar)
    for result in rated:
        _print_rated(result)
    click.echo(render_summary(loaded, month))
    credits = demo_module.record_demo_credits(loaded)
    with ProgressBar("posting") as bar:
        posted = post(loaded, month, demo_module.DEMO_AS_OF, progress=bar)
    click.echo(
        f"\nLedger: {credits} credit purchases and grants; {posted.periods} closed periods "
        f"posted; {posted.expiries} credit expiries"
    )
    _print_balances(loaded)
    with ProgressBar("rendering invoices") as bar:
        invoices = issue(loaded, month, demo_module.DEMO_AS_OF, bar)
    click.echo(f"\nInvoices: {len(invoices.issued)} issued (HTML, PDF/A-3 with Factur-X, UBL)")
    if invoices.held:
        click.echo(
            f"  {len(invoices.held)} held below the minimum amount, carried to the next "
            "period's invoice"
        )
    shown: set[str] = set()
    for customer in loaded.customers.customer:
        kind = (
            "reverse charge"
            if customer.vat_id and customer.country != "FR"
            else customer.billing_mode.value
        )
        if kind in shown or customer.parent:
            continue
        shown.add(kind)
        number = _invoice_number_of(loaded, customer.id)
        if number:
            click.echo(f"  {kind:14} {loaded.invoices_dir / (number + '.pdf')}")
    _print_credit_examples(loaded)
    central = next((c.parent for c in loaded.customers.customer if c.parent), None)
    if central:
        number = _invoice_number_of(loaded, central)
        click.echo(f"  central        {loaded.invoices_dir / f'{number}.pdf'} (with its teams)")
        if number:
            reason = "Billing address corrected: invoice cancelled and issued again"
            _, pdf = credit_note(loaded, number, demo_module.DEMO_AS_OF, reason)
            click.echo(f"  credit note    {pdf} (cancels {number})")
            reissued = issue(loaded, month, demo_module.DEMO_AS_OF)
            click.echo(f"  re-issued      {', '.join(reissued.issued)}")
    errors = ledger_errors(loaded.ledger_path)
    click.echo(f"bean-check: {errors if errors else 'no errors'}")
    click.echo(f"Results: {loaded.rated_dir}  rejects: {loaded.rejects_dir}")
    demo_stripe.run(loaded)
    _print_demo_keys(loaded)
    click.echo(f"Ledger: {loaded.ledger_path}  (browse it: beanbill fava -w {loaded.root})")


@main.command(name="run")
@workspace_option
@click.option("--period", "-p", default=None, help="The month to bill (default: last month).")
@click.option(
    "--as-of",
    type=click.DateTime(["%Y-%m-%d"]),
    default=None,
    help="Today for the job (default: today, UTC): closes periods, dates invoices.",
)
@reports_errors
def run_command(workspace: Path, period: str | None, as_of: datetime | None) -> None:
    """The nightly job: ingest inbox/, rate, post, invoice, sync push, reconcile.

    Every step is idempotent, so a failed night is fixed by running it again. Exits 1
    when something needs a human (rejected events, dead letters, discrepancies).
    """
    from beanbill.ledger.invoicing.issue import issue

    loaded = load_workspace(workspace)
    check_keys(loaded)  # a target without its key fails the night before any work
    day = as_of.date() if as_of else datetime.now(UTC).date()
    month = Month.parse(period) if period else Month(day.year, day.month).previous()
    inbox = sorted(
        path
        for path in (loaded.root / "inbox").glob("*")
        if path.suffix in {".jsonl", ".csv", ".parquet"}
    )
    attention = False
    if inbox:
        ingested = ingest(loaded, inbox, show_progress=on_terminal())
        _print_ingest(ingested)
        attention |= ingested.exit_code != EXIT_OK
    with ProgressBar("rating") as bar:
        rated = rate_months(loaded, [month], bar)
    for result in rated:
        _print_rated(result)
    with ProgressBar("posting") as bar:
        posted = post(loaded, month, day, progress=bar)
    click.echo(f"post: {posted.written:,} entries written, {posted.unchanged:,} already posted")
    with ProgressBar("rendering invoices") as bar:
        issued = issue(loaded, month, day, bar)
    click.echo(f"invoice: {len(issued.issued):,} issued")
    _print_refused(issued)
    attention |= bool(issued.refused or issued.stale)
    pushed = run_push(loaded)
    reports = run_reconcile(loaded, month.first_day - timedelta(days=DEFAULT_RECONCILE_DAYS))
    attention |= pushed.needs_attention or any(report.discrepancies for report in reports)
    errors = ledger_errors(loaded.ledger_path)
    click.echo(f"bean-check: {errors if errors else 'no errors'}")
    try:  # the open periods, provisionally (the API's usage and forecast); never posted
        for result in rate_open(loaded, as_of.date() if as_of else local_today(loaded)):
            click.echo(f"provisional {result.month}: {result.line_count:,} lines")
    except RatingError as error:
        click.echo(f"provisional rating failed: {error}", err=True)
        attention = True
    sys.exit(EXIT_ATTENTION if attention or errors else EXIT_OK)


main.add_command(sync_group)
main.add_command(serve_command)
main.add_command(api_key)

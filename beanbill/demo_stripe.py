"""The demo's last act: push to a local Stripe peer, get paid by webhook, reconcile, show balances.

The peer is localstripe, patched and started by ``beanbill.stripe_peer`` (part of the
package, so an installed wheel runs it too). localstripe is optional: the ``demo`` extra
(``pip install 'beanbill[demo]'``) or a dev install (what `make demo` installs) brings it.
Where it is missing, the demo says so in one line, with how to point beanbill at Stripe
test mode instead, and ends normally. Keys here are throwaway test values for the local
peer, set in this process's environment only.

Tryton, e-mail and HubSpot join as targets when their local peers are available (Tryton's
and HubSpot's are the test suite's, in a source checkout, once `make test` has built them);
each part says in one line when it is skipped and how to use the real system instead.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import secrets
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import click
import tomli_w
from beancount.core import data

from beanbill import stripe_peer
from beanbill.connectors.hubspot import ID_PROPERTY, company_properties
from beanbill.connectors.stripe import ACCOUNTS
from beanbill.connectors.tryton import TrytonConnector
from beanbill.ledger import keys
from beanbill.ledger.accounts import BANK, RECEIVABLE_ROOT
from beanbill.ledger.books import ledger_errors, load_books
from beanbill.ledger.entries import format_minor
from beanbill.ledger.invoicing.documents import DocumentType
from beanbill.rating.config import HubSpotSettings
from beanbill.rating.workspace import SETTINGS_FILE, Workspace
from beanbill.smtp_peer import SmtpPeer, running_smtp
from beanbill.sync.crm import workspace_companies
from beanbill.sync.erp import ErpInvoice
from beanbill.sync.push import issued_documents
from beanbill.sync.reconcile import ledger_dues
from beanbill.sync_commands import run_push, run_reconcile
from beanbill.targets import connectors

SETTLE_SECONDS = 30
SHOWN_ACCOUNTS = (ACCOUNTS.clearing, ACCOUNTS.fees, BANK)  # names from the chart, not here
LAST_INVOICE = "beanbill_last_invoice_number"


def skipped_message(workspace: Workspace) -> str:
    """One line: the Stripe part is skipped, what to install, and the Stripe test mode way."""
    return (
        "Stripe: skipped (localstripe is not installed; pip install 'beanbill[demo]' to run "
        f"it locally); for Stripe test mode instead, add [sync.stripe] to "
        f"{workspace.root / SETTINGS_FILE}, export STRIPE_SECRET_KEY and run `beanbill sync push`."
    )


def _source_peer(name: str) -> Any | None:
    """One of the test suite's peer launchers (tests/peers/<name>.py beside this package, in
    a source checkout), when `make test` has built that peer: the demo never installs one."""
    launcher = Path(__file__).resolve().parent.parent / "tests" / "peers" / f"{name}.py"
    if not launcher.is_file():
        return None
    spec = importlib.util.spec_from_file_location(f"beanbill_demo_{name}_peer", launcher)
    if spec is None or spec.loader is None:
        return None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module if module.is_built() else None


def _tryton_peer() -> Any | None:
    """The Tryton launcher, when its peer (a trytond venv, a template database) is built."""
    return _source_peer("tryton")


def _start_tryton(workspace: Workspace, stack: contextlib.ExitStack) -> bool:
    """Add a local Tryton to the targets when its peer is available; whether it was."""
    peer = _tryton_peer()
    if peer is None:
        click.echo(
            "\nTryton: skipped (its local peer is built by `make test` in a source checkout); "
            f"for your Tryton, add [sync.tryton] to {workspace.root / SETTINGS_FILE}."
        )
        return False
    running = stack.enter_context(peer.running_tryton(workspace.root / "tryton-peer"))
    os.environ[peer.PASSWORD_ENV] = peer.PASSWORD
    settings = {"sync": {"tryton": running.settings()}}
    with (workspace.root / SETTINGS_FILE).open("a", encoding="utf-8") as file:
        file.write("\n" + tomli_w.dumps(settings))
    click.echo(f"\nTryton 8.0 (database {running.database} on {running.url}) is a target too")
    return True


def _show_tryton(workspace: Workspace) -> None:
    """The ERP's view: our invoices in Tryton, posted and paid, totals as ours."""
    target = next(t for t in connectors(workspace) if isinstance(t, TrytonConnector))
    numbers = [d.number for d in issued_documents(workspace) if d.type is DocumentType.INVOICE]
    found = [i for i in target.erp_invoices(numbers) if isinstance(i, ErpInvoice)]
    dues, _ = ledger_dues(workspace)
    same = sum(1 for invoice in found if invoice.total_minor == dues.get(invoice.number))
    states = Counter(invoice.state for invoice in found)
    recorded = sum(1 for i in found for p in i.payments if p.recorded_txn_id)
    click.echo(
        f"Tryton invoices: {len(found)} of {len(numbers)} with beanbill's number, {same} with "
        f"our total; "
        + ", ".join(f"{count} {state}" for state, count in sorted(states.items()))
        + f"; {recorded} payments recorded from the ledger"
    )


def _start_email(workspace: Workspace, stack: contextlib.ExitStack) -> SmtpPeer | None:
    """Add e-mail delivery to a local SMTP server (aiosmtpd, from the dev or demo
    install) writing what it receives to ``outbox/``; None when it is not installed."""
    if importlib.util.find_spec("aiosmtpd") is None:
        click.echo(
            "\nE-mail: skipped (aiosmtpd is not installed; pip install 'beanbill[demo]'); for "
            f"your SMTP relay, add [sync.email] to {workspace.root / SETTINGS_FILE}."
        )
        return None
    peer = stack.enter_context(running_smtp(outbox=workspace.root / "outbox"))
    settings = {
        "sync": {
            "email": {
                "host": peer.host,
                "port": peer.port,
                "security": "none",  # a loopback server; a real relay: starttls and a user
                "sender": workspace.settings.seller.email or "billing@nimbus.example",
                "bcc": ["finance@nimbus.example"],
            }
        }
    }
    with (workspace.root / SETTINGS_FILE).open("a", encoding="utf-8") as file:
        file.write("\n" + tomli_w.dumps(settings))
    click.echo(f"\nE-mail: invoices are sent to a local SMTP server on {peer.host}:{peer.port}")
    return peer


def _show_email(workspace: Workspace, peer: SmtpPeer) -> None:
    """What the customers received: one message per document, with its attachments."""
    messages = [item.parsed() for item in peer.received]
    click.echo(f"E-mails sent: {len(messages)} (saved in {workspace.root / 'outbox'}), e.g.:")
    shown: set[str] = set()
    for message in messages:  # one of each kind: invoice, prepayment invoice, credit note
        kind = str(message["Subject"]).split(" INV-")[0].split(" CN-")[0]
        if kind in shown:
            continue
        shown.add(kind)
        files = ", ".join(str(part.get_filename()) for part in message.iter_attachments())
        click.echo(f"  to {message['To']}: {message['Subject']} [{files}]")


def _start_hubspot(workspace: Workspace, stack: contextlib.ExitStack) -> Any | None:
    """Add HubSpot to the targets when its local peer is available (Prism checking each
    request against beanbill's HubSpot document, behind a front that keeps the properties
    and companies it is sent: tests/peers/hubspot.py); the running peer, else None."""
    peer = _source_peer("hubspot")
    if peer is None:
        click.echo(
            "\nHubSpot: skipped (its local peer, Prism, is installed by `make test` in a source "
            f"checkout); for your portal, add [sync.hubspot] to {workspace.root / SETTINGS_FILE} "
            "and export HUBSPOT_TOKEN (a private app's token)."
        )
        return None
    running = stack.enter_context(peer.running_hubspot(workspace.root / "hubspot-peer"))
    # A throwaway token for the local peer, in this process's environment only.
    os.environ[HubSpotSettings().token_env] = "pat-demo-" + secrets.token_hex(16)
    settings = {"sync": {"hubspot": {"api_base": running.url}}}
    with (workspace.root / SETTINGS_FILE).open("a", encoding="utf-8") as file:
        file.write("\n" + tomli_w.dumps(settings))
    click.echo(f"\nHubSpot (a local peer on {running.url}) is a CRM target too")
    return running


def _show_hubspot(workspace: Workspace, peer: Any) -> None:
    """The CRM's view: a company per organization, holding the figures the books give
    today (each property as beanbill sends it), one of them shown."""
    held: dict[str, dict[str, str]] = peer.companies()
    settings = workspace.settings
    workspace_id = settings.sync.workspace_id_of(settings.seller)
    books = workspace_companies(workspace, datetime.now(UTC).date())
    expected = {company.org: company_properties(company, workspace_id) for company in books}
    same = sum(
        1
        for org, values in expected.items()
        if all(held.get(org, {}).get(name) == value for name, value in values.items())
    )
    invoiced = sorted(org for org, values in held.items() if values.get(LAST_INVOICE))
    example = ""
    if invoiced:
        org = invoiced[0]
        values = held[org]
        example = (
            f"; e.g. {org}: balance due {values['beanbill_balance_due']} "
            f"{values['beanbill_currency']}, last invoice {values[LAST_INVOICE]} "
            f"{values['beanbill_last_invoice_status']}"
        )
    click.echo(
        f"HubSpot: {len(held)} companies updated (upserted by {ID_PROPERTY}), {same} of "
        f"{len(expected)} with the books' figures{example}"
    )


def run(workspace: Workspace) -> None:
    if not stripe_peer.localstripe_installed():
        click.echo("\n" + skipped_message(workspace))  # a blank line, like every section
        return
    with contextlib.ExitStack() as stack:
        tryton = _start_tryton(workspace, stack)
        email = _start_email(workspace, stack)
        hubspot = _start_hubspot(workspace, stack)
        _run_with_stripe(workspace)
        if tryton:
            _show_tryton(Workspace.load(workspace.root))
        if email is not None:
            _show_email(workspace, email)
        if hubspot is not None:
            _show_hubspot(Workspace.load(workspace.root), hubspot)


def _run_with_stripe(workspace: Workspace) -> None:
    with stripe_peer.running_localstripe() as url:
        os.environ["STRIPE_SECRET_KEY"] = stripe_peer.API_KEY
        os.environ["STRIPE_WEBHOOK_SECRET"] = "whsec_" + secrets.token_hex(16)
        with (workspace.root / SETTINGS_FILE).open("a", encoding="utf-8") as settings:
            settings.write(f'\n[sync.stripe]\napi_base = "{url}"\n')
        loaded = Workspace.load(workspace.root)
        click.echo(f"\nStripe (localstripe on {url}):")
        purchases = _credit_purchases(loaded)
        for amount in purchases:  # bought by card at checkout, into the Stripe balance
            stripe_peer.card_payment(url, amount)
        click.echo(f"  {len(purchases)} credit purchases paid by card at checkout")
        run_push(loaded)
        port = stripe_peer.free_port()
        serve = subprocess.Popen(
            [str(Path(sys.executable).with_name("beanbill")), "serve", "-w", str(loaded.root),
             "--port", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            stripe_peer.wait_for_port(port, serve, SETTLE_SECONDS)
            hook = f"http://127.0.0.1:{port}/webhooks/stripe"
            stripe_peer.register_webhook(url, hook, os.environ["STRIPE_WEBHOOK_SECRET"])
            payable = [i for i in stripe_peer.beanbill_invoices(url) if i.status == "open"]
            for invoice in payable:
                stripe_peer.pay(url, str(invoice.id))
            click.echo(f"  {len(payable)} invoices paid by card; webhooks → {hook}")
            _wait_for_payments(loaded, len(payable))
        finally:
            serve.send_signal(signal.SIGTERM)
            serve.wait(timeout=30)
        currency = loaded.settings.billing.currency
        available = stripe_peer.balance_minor(url, currency.lower())
        stripe_peer.payout(url, available, currency.lower())  # the balance, to the bank
        click.echo(f"  payout of {format_minor(available, currency)} {currency} to the bank")
        run_reconcile(loaded, date(2000, 1, 1))
        _print_money(loaded)
        _compare_with_stripe(loaded, url)


def _credit_purchases(workspace: Workspace) -> list[int]:
    """The amounts (minor units) of the credit purchases paid into the Stripe balance."""
    currency = workspace.settings.billing.currency
    books = load_books(workspace.ledger_path, currency)
    return [
        books.minor(posting.units.number)
        for entry in books.entries
        if isinstance(entry, data.Transaction) and entry.meta.get(keys.CREDIT_KIND) == "purchase"
        for posting in entry.postings
        if posting.account == ACCOUNTS.clearing and posting.units and posting.units.number
    ]


def _compare_with_stripe(workspace: Workspace, url: str) -> None:
    """What a user checks first: the two systems agree on money and on numbers."""
    currency = workspace.settings.billing.currency
    books = load_books(workspace.ledger_path, currency)
    ledger = books.balances([ACCOUNTS.clearing])[ACCOUNTS.clearing]
    remote = stripe_peer.balance_minor(url, currency.lower())
    verdict = "equal" if ledger == remote else "DIFFERENT"
    click.echo(
        f"Stripe balance {format_minor(remote, currency)} {currency}, "
        f"{ACCOUNTS.clearing} {format_minor(ledger, currency)} {currency}: {verdict}"
    )
    invoices = stripe_peer.beanbill_invoices(url)
    same = sum(1 for i in invoices if i.metadata and i.number == i.metadata["beanbill_number"])
    unpaid = sum(1 for i in invoices if i.status != "paid")
    click.echo(
        f"Stripe invoices: {len(invoices)}, {same} with beanbill's number, {unpaid} not paid"
    )


def _wait_for_payments(workspace: Workspace, count: int) -> None:
    deadline = time.monotonic() + SETTLE_SECONDS
    folder = workspace.root / "books"
    while time.monotonic() < deadline:
        posted = sum(
            p.read_text().count("stripe-payment:") for p in folder.glob("*/payments.beancount")
        )
        if posted >= count:
            click.echo(f"  {posted} payments posted by `beanbill serve`")
            return
        time.sleep(0.2)
    click.echo("  not every payment arrived by webhook; reconciliation will post the rest")


def _print_money(workspace: Workspace) -> None:
    currency = workspace.settings.billing.currency
    books = load_books(workspace.ledger_path, currency)
    receivables = sorted(
        {
            posting.account
            for entry in books.entries
            for posting in getattr(entry, "postings", ())
            if posting.account.startswith(f"{RECEIVABLE_ROOT}:")
        }
    )
    balances = books.balances([*SHOWN_ACCOUNTS, *receivables])
    click.echo("Final balances:")
    for account in SHOWN_ACCOUNTS:
        click.echo(f"  {account:28} {format_minor(balances[account], currency):>12} {currency}")
    owed = sum(balances[account] for account in receivables)
    label = "Receivables (all)"
    click.echo(f"  {label:28} {format_minor(owed, currency):>12} {currency}")
    errors = ledger_errors(workspace.ledger_path)
    click.echo(f"bean-check: {errors if errors else 'no errors'}")

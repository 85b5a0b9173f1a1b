"""Books that read like books: the customer as payee, narrations that say what happened to
whom, one link for a billing period's whole story, one document entry per invoice, and
over-consumption held as money owed (an asset), never as a negative liability.

Built with the real pipeline (rate, post, issue, push to the Stripe peer, its payment
and refund events, a credit note) and read back through Beancount's loader.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date
from pathlib import Path

from beancount import loader
from beancount.core import data

from beanbill.ledger.accounts import organization_accounts
from beanbill.ledger.invoicing.corrections import credit_note
from beanbill.ledger.post import balance
from beanbill.ledger.wording import billing_link, period_label, usage_narration
from beanbill.stripe_peer import client, pay
from beanbill.sync.reconcile import reconcile
from beanbill.targets import sync_state
from tests.support import Issued, push
from tests.test_stripe_behaviour import (
    SINCE,
    charge_of,
    deliver,
    documents_by_org,
    remote_invoice,
    stripe_connector,
)

CREDIT_DAY = date(2026, 11, 20)


def test_periods_read_as_people_say_them() -> None:
    assert period_label("2026-10") == "October 2026"
    assert period_label("2026-W44") == "week 44 of 2026"
    assert period_label("2026-10-05") == "5 October 2026"
    assert usage_narration("2026-10", None, None, "Acme GmbH") == "Usage October 2026 — Acme GmbH"
    daily = usage_narration("2026-10", date(2026, 10, 5), None, "Acme")
    assert daily == "Usage October 2026, 5 October 2026 — Acme"
    part = usage_narration("2026-W44", date(2026, 11, 1), date(2026, 11, 1), "")
    assert part == "Usage week 44 of 2026, 1 November 2026, through 1 November 2026"


def entries_of(ledger_path: Path) -> list[data.Directive]:
    entries, errors, _ = loader.load_file(str(ledger_path))
    assert errors == [], [error.message for error in errors]
    return list(entries)


def by_link(entries: list[data.Directive]) -> dict[str, list[data.Directive]]:
    found: dict[str, list[data.Directive]] = defaultdict(list)
    for entry in entries:
        for link in getattr(entry, "links", None) or ():
            found[link].append(entry)
    return found


def test_a_billing_periods_story_shares_one_link_and_names_the_customer(
    issued: Issued, localstripe: str
) -> None:
    workspace = issued()
    push(workspace)
    invoices = documents_by_org(workspace)
    number = invoices["fr-post"].number
    remote = remote_invoice(localstripe, number)
    pay(localstripe, str(remote.id))
    client(localstripe).v1.refunds.create(
        params={"charge": charge_of(localstripe, str(remote.id)), "amount": 100}
    )
    outcomes = deliver(localstripe, workspace)
    assert not [o for o in outcomes if o.startswith(("quarantined", "unmatched"))], outcomes
    connector = stripe_connector(workspace)
    reconcile(workspace, connector, sync_state(workspace), SINCE)  # books the card fee
    note, _ = credit_note(workspace, number, CREDIT_DAY, "Refunded in part: wrong plan")

    entries = entries_of(workspace.ledger_path)
    story = by_link(entries)[billing_link("fr-post", "2026-10")]
    kinds = sorted(str(entry.meta["txn-id"]).split(":")[0] for entry in story)
    # the team's and the payer's usage, the invoice and its PDF, the payment, its fee,
    # the refund, the credit note and its PDF: the whole story from any one of them
    assert kinds == sorted(
        ["usage", "usage", "invoice", "document", "stripe-payment", "stripe-fee",
         "stripe-refund", "credit-note", "document"]
    )  # fmt: skip
    usage = {
        entry.meta["org"]: entry
        for entry in story
        if isinstance(entry, data.Transaction) and entry.meta["txn-id"].startswith("usage:")
    }
    assert usage["fr-post"].payee == "fr-post Ltd"
    assert usage["fr-post"].narration == "Usage October 2026 — fr-post Ltd"
    assert usage["team-a"].payee == "team-a Ltd"  # the team used it, its parent pays
    transactions = {
        str(entry.meta["txn-id"]).split(":")[0]: entry
        for entry in story
        if isinstance(entry, data.Transaction)
    }
    issuance = transactions["invoice"]
    assert issuance.payee == "fr-post Ltd"
    assert issuance.narration == f"Invoice {number}, October 2026 — fr-post Ltd"
    assert f"invoice-{number}" in issuance.links
    for kind in ("stripe-payment", "stripe-fee", "stripe-refund", "credit-note"):
        assert transactions[kind].payee == "fr-post Ltd", kind
        assert f"invoice-{number}" in transactions[kind].links, kind
        assert number in transactions[kind].narration, kind
    assert transactions["stripe-payment"].narration == (
        f"Stripe payment of invoice {number} — fr-post Ltd"
    )
    assert transactions["stripe-fee"].narration == (
        f"Stripe processing fee of invoice {number} — fr-post Ltd"
    )
    assert "org" not in transactions["stripe-fee"].meta  # as fees were always written
    assert transactions["credit-note"].narration == (
        f"Credit note {note} cancelling invoice {number} — fr-post Ltd"
    )


def test_one_document_entry_per_invoice_names_its_e_invoices(issued: Issued) -> None:
    workspace = issued()
    entries = entries_of(workspace.ledger_path)
    documents = [entry for entry in entries if isinstance(entry, data.Document)]
    numbers = {document.number for document in documents_by_org(workspace).values()}
    assert len(documents) == len(numbers) and numbers
    for document in documents:
        assert document.filename.endswith(".pdf")
        folder = Path(document.meta["filename"]).parent
        for kind, suffix in (("cii", ".cii.xml"), ("ubl", ".ubl.xml"), ("html", ".html")):
            named = folder / document.meta[kind]
            assert named.name.endswith(suffix) and named.is_file(), (kind, named)


def test_over_consumption_is_owed_not_a_negative_liability(issued: Issued) -> None:
    """us-prov consumed more than its 0.50 of credit: the rest is owed (unbilled, an
    asset) until the unified invoice moves it to the receivable."""
    workspace = issued()
    accounts = organization_accounts(workspace.customers.customer)["us-prov"]
    entries = entries_of(workspace.ledger_path)
    [usage] = [
        entry
        for entry in entries
        if isinstance(entry, data.Transaction)
        and entry.meta.get("txn-id") == "usage:us-prov:2026-10"
    ]
    [over] = [posting for posting in usage.postings if posting.meta.get("over-consumption")]
    assert over.account == accounts.unbilled and over.units.number > 0
    credits_before_invoice = sum(
        posting.units.number
        for entry in entries
        if isinstance(entry, data.Transaction) and not entry.meta["txn-id"].startswith("invoice:")
        for posting in entry.postings
        if posting.account == accounts.credits
    )
    assert credits_before_invoice == 0  # the lot drawn to zero, never below
    after = balance(workspace, "us-prov")
    assert after.unbilled_minor == 0  # the unified invoice regularized it
    assert after.credits_minor >= 0  # the provision: a liability, never negative

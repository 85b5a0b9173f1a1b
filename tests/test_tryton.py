"""The Tryton connector against a real trytond 8.0 (tests/peers/tryton.py): push, re-push,
credit notes, payments both ways, a mapping error. No mocks: what Tryton accepts and
computes is what these tests check."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from beanbill.cli import main
from beanbill.connectors.stripe import StripeConnector
from beanbill.connectors.tryton import (
    TrytonConnector,
    TrytonMappingError,
    no_data,
    view_defaults,
)
from beanbill.ledger.books import load_books
from beanbill.ledger.invoicing.corrections import credit_note
from beanbill.ledger.invoicing.documents import DocumentType, InvoiceDocument
from beanbill.ledger.invoicing.issue import issue
from beanbill.ledger.post import post, record_credit
from beanbill.ports import free_port
from beanbill.rating.config import StripeSettings
from beanbill.rating.ingest import ingest
from beanbill.rating.periods import Month
from beanbill.rating.rate import rate_months
from beanbill.rating.workspace import Workspace
from beanbill.sync.erp import ErpInvoice, ErpPayment
from beanbill.sync.interface import Movement, MovementKind
from beanbill.sync.payments import post_movements
from beanbill.sync.push import issued_documents
from beanbill.sync.state import PushStatus, SqliteSyncState
from beanbill.sync_commands import run_reconcile
from beanbill.targets import connectors
from tests.peers.tryton import DATABASE, TrytonPeer
from tests.support import BEANBILL, Issued, customer, october_usage, push, write_jsonl

OCTOBER = Month(2026, 10)
ISSUE_DAY = date(2026, 11, 5)
MakeWorkspace = Callable[..., Workspace]


def october_issued(
    make_workspace: MakeWorkspace, tmp_path: Path, sync: dict[str, Any], name: str = "ws"
) -> Workspace:
    """October invoiced for five organizations: French VAT, a team billed centrally, a
    reverse-charge prepaid German, an American outside the scope of VAT, a small one."""
    settings = {"attempts": 6, "concurrency": 2, "max_wait_seconds": 1, **sync}
    workspace = make_workspace(
        name=name,
        invoicing={"credits_vat": "at_consumption"},
        customers=[
            customer("fr-post", billing_mode="postpaid", vat_id="FR44732829320"),
            customer("team-a", billing_mode="postpaid", parent="fr-post"),
            customer("de-pre", billing_mode="prepaid", country="DE", vat_id="DE123456788"),
            customer("us-prov", billing_mode="provisioned", country="US"),
            customer("fr-small", billing_mode="postpaid"),
        ],
        sync=settings,
        ledger={"credit_purchase_account": "Assets:Bank:Operating"},
    )
    orgs = [("fr-post", 10), ("team-a", 3), ("de-pre", 20), ("us-prov", 8), ("fr-small", 5)]
    records = [record for org, hours in orgs for record in october_usage(org, hours)]
    ingest(workspace, [write_jsonl(tmp_path / f"{name}.jsonl", records)])
    rate_months(workspace, [OCTOBER])
    record_credit(workspace, "de-pre", "purchase", "1.00", date(2026, 10, 1), None, 100, "d1")
    record_credit(workspace, "us-prov", "purchase", "0.50", date(2026, 10, 1), None, 100, "u1")
    post(workspace, OCTOBER, date(2026, 11, 2))
    issue(workspace, OCTOBER, ISSUE_DAY)
    return workspace


@pytest.fixture
def tryton_workspace(
    make_workspace: MakeWorkspace, tmp_path: Path, tryton: TrytonPeer
) -> Workspace:
    return october_issued(make_workspace, tmp_path, {"tryton": tryton.settings()})


def tryton_of(workspace: Workspace) -> TrytonConnector:
    (connector,) = [c for c in connectors(workspace) if isinstance(c, TrytonConnector)]
    return connector


def remote_invoices(connector: TrytonConnector) -> dict[str, list[dict[str, Any]]]:
    """Every customer invoice in Tryton by its reference (our number)."""
    found = connector.rpc.search_read(
        "account.invoice",
        [["type", "=", "out"]],
        ["reference", "state", "total_amount", "tax_amount", "party.code", "lines"],
    )
    by_reference: dict[str, list[dict[str, Any]]] = {}
    for invoice in found:
        by_reference.setdefault(str(invoice["reference"]), []).append(invoice)
    return by_reference


def assert_each_invoice_once_with_our_totals(workspace: Workspace) -> None:
    documents = [d for d in issued_documents(workspace) if d.type is DocumentType.INVOICE]
    connector = tryton_of(workspace)
    remote = remote_invoices(connector)
    assert set(d.number for d in documents) <= set(remote)
    for document in documents:
        (invoice,) = remote[document.number]
        assert invoice["state"] in ("posted", "paid", "cancelled")
        assert invoice["total_amount"].scaleb(2) == document.due_minor
        assert invoice["tax_amount"].scaleb(2) == document.tax_minor
        assert invoice["party."]["code"] == document.buyer_reference
        expected_lines = len(document.lines) + (1 if document.paid_minor else 0)
        assert len(invoice["lines"]) == expected_lines
    parties = connector.rpc.search_read("party.party", [["code", "!=", None]], ["code"])
    codes = [party["code"] for party in parties]
    assert len(codes) == len(set(codes))


def test_push_posts_every_invoice_once_with_our_totals_and_repush_changes_nothing(
    tryton_workspace: Workspace,
) -> None:
    summary = push(tryton_workspace)
    assert summary.dead == []
    assert len(summary.synced) == len(issued_documents(tryton_workspace))
    assert_each_invoice_once_with_our_totals(tryton_workspace)
    state = SqliteSyncState(tryton_workspace.state_dir)
    assert {record.status for record in state.records("tryton")} == {PushStatus.SYNCED}
    # Forgotten by the sync state, pushed again: found by reference, nothing made twice.
    state_file = tryton_workspace.state_dir / "sync.sqlite"
    state_file.unlink()
    again = push(tryton_workspace)
    assert again.dead == []
    assert_each_invoice_once_with_our_totals(tryton_workspace)


def test_a_missing_account_or_tax_is_named_before_anything_is_pushed(
    make_workspace: MakeWorkspace, tmp_path: Path, tryton: TrytonPeer
) -> None:
    settings = tryton.settings(
        revenue_accounts={"Compute": "7061", "Storage": "9999"},
        taxes=[{"category": "S", "rate_percent": "20", "tax": "TVA 20 %"}],
    )
    workspace = october_issued(make_workspace, tmp_path, {"tryton": settings})
    with pytest.raises(TrytonMappingError) as error:
        tryton_of(workspace).check()
    assert "revenue account 9999 (revenue_accounts.Storage)" in str(error.value)
    assert "tax 'TVA 20 %'" in str(error.value)
    assert remote_invoices(tryton_of(workspace)) == {}


def test_a_credit_note_is_a_tryton_credit_of_the_invoice_it_corrects(
    tryton_workspace: Workspace,
) -> None:
    workspace = tryton_workspace
    assert push(workspace).dead == []
    central = next(d for d in issued_documents(workspace) if d.buyer_reference == "fr-post")
    note_number, _ = credit_note(workspace, central.number, ISSUE_DAY, "Wrong billing address")
    reissued = issue(workspace, OCTOBER, ISSUE_DAY)
    after = push(workspace)
    assert after.dead == []
    assert sorted(after.synced) == sorted([note_number, *reissued.issued])
    remote = remote_invoices(tryton_of(workspace))
    (note,) = remote[note_number]
    assert note["total_amount"].scaleb(2) == -central.due_minor
    assert note["tax_amount"].scaleb(2) == -central.tax_minor
    assert note["state"] == "paid"  # reconciled with the invoice it cancels
    (cancelled,) = remote[central.number]
    assert cancelled["state"] == "cancelled"
    # Pushed again from scratch: the credit is found (by reference), never made twice.
    (workspace.state_dir / "sync.sqlite").unlink()
    assert push(workspace).dead == []
    again = remote_invoices(tryton_of(workspace))
    assert len(again[note_number]) == 1
    assert sum(len(found) for found in again.values()) == len(remote)


def pay_in_tryton(
    connector: TrytonConnector, number: str, amount: Decimal, day: date, partial: bool = False
) -> None:
    """What an accountant does in Tryton: a bank transfer entered with the pay wizard."""
    invoice = connector.find_invoice(number)
    assert invoice is not None
    (method,) = connector.rpc.search_read(
        "account.invoice.payment.method", [["name", "=", "Bank transfer"]], ["name"]
    )
    start = {"amount": amount, "payment_method": method["id"], "date": day,
             "description": "transfer ref 4711"}  # fmt: skip
    steps: list[tuple[str, Callable[[Any], dict[str, Any]]]] = [
        ("start", no_data),
        ("choice", lambda answer: {"start": {**view_defaults(answer), **start}}),
    ]
    if partial:
        steps.append(("pay", lambda answer: {"ask": {**view_defaults(answer), "type": "partial"}}))
    connector.rpc.wizard("account.invoice.pay", ("account.invoice", int(invoice["id"])), steps)


def stripe_payment(workspace: Workspace, number: str, amount_minor: int, org: str) -> None:
    """A card payment the ledger got from Stripe (as its webhook path posts it)."""
    stripe = StripeConnector(StripeSettings(), "sk_test_unused", None, 30, "UTC", "ws-test")
    movement = Movement(
        f"stripe-payment:in_{number}", MovementKind.PAYMENT, date(2026, 11, 20), amount_minor,
        "EUR", f"in_{number}", number, org,
    )  # fmt: skip
    posted = post_movements(workspace, stripe, SqliteSyncState(workspace.state_dir), [movement])
    assert posted.posted == 1, posted


def invoice_of(workspace: Workspace, org: str) -> InvoiceDocument:
    return next(
        d for d in issued_documents(workspace)
        if d.buyer_reference == org and d.type is DocumentType.INVOICE
    )  # fmt: skip


def payment_lines(connector: TrytonConnector, number: str) -> list[ErpPayment]:
    (invoice,) = connector.erp_invoices([number])
    assert isinstance(invoice, ErpInvoice)
    return list(invoice.payments)


def test_payments_go_both_ways_once(tryton_workspace: Workspace) -> None:
    workspace = tryton_workspace
    assert push(workspace).dead == []
    connector = tryton_of(workspace)
    by_card = invoice_of(workspace, "fr-small")
    by_transfer = invoice_of(workspace, "fr-post")
    stripe_payment(workspace, by_card.number, by_card.due_minor, "fr-small")
    pay_in_tryton(connector, by_transfer.number, Decimal(by_transfer.due_minor).scaleb(-2),
                  date(2026, 11, 21))  # fmt: skip
    for _ in range(2):  # the second run finds everything done
        (report,) = run_reconcile(workspace, date(2026, 10, 1))
        assert report.discrepancies == []
    assert report.posted.posted == 0
    (recorded,) = payment_lines(connector, by_card.number)
    assert recorded.recorded_txn_id == f"stripe-payment:in_{by_card.number}"
    assert recorded.amount_minor == by_card.due_minor
    assert connector.find_invoice(by_card.number)["state"] == "paid"  # type: ignore[index]
    (transfer,) = payment_lines(connector, by_transfer.number)
    books = load_books(workspace.ledger_path, "EUR")
    entry = books.transaction(f"tryton-payment:{DATABASE}:{transfer.remote_id}")
    assert f"invoice-{by_transfer.number}" in entry.links
    assert {(p.account, p.amount_minor) for p in entry.postings} == {
        ("Assets:Bank:Operating", by_transfer.due_minor),
        ("Assets:Receivable:Fr-post", -by_transfer.due_minor),
    }
    assert entry.date == date(2026, 11, 21)
    assert not [t for t in books.txn_ids() if t.startswith("tryton-payment:") and t != entry.txn_id]


def test_paid_in_both_systems_or_another_amount_is_reported_never_booked_twice(
    tryton_workspace: Workspace,
) -> None:
    workspace = tryton_workspace
    assert push(workspace).dead == []
    connector = tryton_of(workspace)
    twice = invoice_of(workspace, "fr-small")
    short = invoice_of(workspace, "fr-post")
    stripe_payment(workspace, twice.number, twice.due_minor, "fr-small")
    pay_in_tryton(connector, twice.number, Decimal(twice.due_minor).scaleb(-2), ISSUE_DAY)
    pay_in_tryton(connector, short.number, Decimal("1.00"), ISSUE_DAY, partial=True)
    before = load_books(workspace.ledger_path, "EUR").txn_ids()
    result = CliRunner().invoke(main, ["sync", "reconcile", "-w", str(workspace.root)])
    assert result.exit_code == 1, result.output
    assert f"({twice.number}): paid in both systems" in result.output
    assert f"({short.number}): tryton payments total 100, due {short.due_minor}" in result.output
    assert load_books(workspace.ledger_path, "EUR").txn_ids() == before
    assert [p.recorded_txn_id for p in payment_lines(connector, twice.number)] == [None]


def test_the_commands_cover_tryton_and_a_bad_mapping_exits_2_in_one_line(
    make_workspace: MakeWorkspace, tmp_path: Path, tryton: TrytonPeer
) -> None:
    bad = tryton.settings(default_revenue_account="0000")
    workspace = october_issued(make_workspace, tmp_path, {"tryton": bad})
    root = str(workspace.root)
    refused = CliRunner().invoke(main, ["sync", "push", "-w", root])
    assert refused.exit_code == 2, refused.output
    assert "no revenue account 0000 (default_revenue_account)" in refused.output
    settings = workspace.root / "beanbill.toml"
    settings.write_text(settings.read_text().replace('"0000"', '"7068"'))
    pushed = CliRunner().invoke(main, ["sync", "push", "-w", root])
    assert pushed.exit_code == 0, pushed.output
    status = CliRunner().invoke(main, ["sync", "status", "-w", root])
    assert status.exit_code == 0, status.output
    assert "tryton     synced        4" in status.output
    reconciled = CliRunner().invoke(main, ["sync", "reconcile", "-w", root])
    assert reconciled.exit_code == 0, reconciled.output
    assert "reconcile tryton" in reconciled.output


def test_a_tryton_refusal_is_dead_lettered_with_its_message_and_retried_on_request(
    tryton_workspace: Workspace,
) -> None:
    workspace = tryton_workspace
    connector = tryton_of(workspace)
    november = connector.rpc.search_read(
        "account.period",
        [["start_date", "<=", ISSUE_DAY], ["end_date", ">=", ISSUE_DAY], ["type", "=", "standard"]],
        ["name"],
    )
    periods = [int(period["id"]) for period in november]
    connector.rpc.call("model.account.period.close", periods)  # the accountant closed it
    refused = push(workspace)
    assert refused.synced == []
    assert {reason.split(":")[0] for _, _, reason in refused.dead} == {"TrytonUserError"}
    assert all("Tryton refused:" in reason for _, _, reason in refused.dead)
    state = SqliteSyncState(workspace.state_dir)
    assert {r.attempts for r in state.records("tryton")} == {1}  # never retried blindly
    connector.rpc.call("model.account.period.reopen", periods)
    assert state.requeue_dead("tryton") == len(refused.dead)
    assert push(workspace).dead == []
    assert_each_invoice_once_with_our_totals(workspace)


def test_one_target_down_never_blocks_the_other(
    issued: Issued, localstripe: str, tryton: TrytonPeer
) -> None:
    unreachable = tryton.settings(url=f"http://127.0.0.1:{free_port()}", timeout_seconds=10)
    workspace = issued(tryton=unreachable, attempts=4)
    result = CliRunner().invoke(main, ["sync", "push", "-w", str(workspace.root)])
    assert result.exit_code == 1, result.output
    assert "sync push: 4 synced now" in result.output
    assert "not started: tryton: Tryton network" in result.output
    settings = workspace.root / "beanbill.toml"
    settings.write_text(settings.read_text().replace(unreachable["url"], tryton.url))
    again = CliRunner().invoke(main, ["sync", "push", "-w", str(workspace.root)])
    assert again.exit_code == 0, again.output
    assert "sync push: 4 synced now, 4 already synced" in again.output
    reconciled = CliRunner().invoke(main, ["sync", "reconcile", "-w", str(workspace.root)])
    assert "reconcile stripe" in reconciled.output and "reconcile tryton" in reconciled.output
    assert_each_invoice_once_with_our_totals(Workspace.load(workspace.root))


def test_a_changed_customer_updates_its_party(tryton_workspace: Workspace) -> None:
    workspace = tryton_workspace
    assert push(workspace).dead == []
    connector = tryton_of(workspace)
    (party,) = connector.rpc.search_read(
        "party.party", [["code", "=", "fr-post"]], ["addresses", "identifiers"]
    )
    # What an old push left, or someone typed: another name, address and VAT id.
    connector.rpc.call("model.party.party.write", [party["id"]], {"name": "Old name"})
    connector.rpc.call("model.party.address.write", party["addresses"][:1], {"street": "Gone"})
    connector.rpc.call(
        "model.party.identifier.write", party["identifiers"], {"code": "FR40303265045"}
    )
    (workspace.state_dir / "sync.sqlite").unlink()
    assert push(workspace).dead == []
    document = invoice_of(workspace, "fr-post")
    (after,) = connector.rpc.search_read(
        "party.party", [["code", "=", "fr-post"]], ["name", "addresses", "identifiers"]
    )
    assert after["name"] == document.buyer.name
    (address,) = connector.rpc.read("party.address", after["addresses"][:1], ["street"])
    assert address["street"] == "\n".join(document.buyer.address)
    codes = connector.rpc.read("party.identifier", after["identifiers"], ["type", "code"])
    assert ("eu_vat", document.buyer.vat_id) in [(c["type"], c["code"]) for c in codes]


def test_the_nightly_run_covers_tryton_and_repeats_as_a_no_op(
    tryton_workspace: Workspace,
) -> None:
    root = str(tryton_workspace.root)
    command = [BEANBILL, "run", "-w", root, "-p", "2026-10", "--as-of", "2026-11-05"]
    first = subprocess.run(command, capture_output=True, text=True, env=os.environ)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "sync push: 4 synced now, 0 already synced" in first.stdout
    assert "reconcile tryton" in first.stdout and "0 discrepancies" in first.stdout
    second = subprocess.run(command, capture_output=True, text=True, env=os.environ)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "sync push: 0 synced now, 4 already synced" in second.stdout
    assert_each_invoice_once_with_our_totals(tryton_workspace)
    without = {k: v for k, v in os.environ.items() if k != "TRYTON_PASSWORD"}
    refused = subprocess.run(command, capture_output=True, text=True, env=without)
    assert refused.returncode == 2 and "TRYTON_PASSWORD is not set" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1

"""HubSpot kept current by `sync push` and `sync reconcile`: each organization's billing
figures from the books, upserted by the unique property, sent again only when they
change; a refusal or an unreachable CRM is shown and never blocks the documents.

Prism (tests/peers/prism.py) validates every request against our OpenAPI document of the
endpoints called; it keeps no state, so the recording proxy of tests/test_hubspot.py
answers an upsert with its inputs (``echo``) once Prism has validated it. The last test runs
against the HubSpot peer (tests/peers/hubspot.py, what the demo starts): Prism behind a
front that keeps the properties and companies it is sent.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import date
from pathlib import Path

import pytest
from click.testing import CliRunner

from beanbill.cli import main
from beanbill.exits import EXIT_ATTENTION
from beanbill.ledger.post import record_credit
from beanbill.rating.workspace import Workspace
from beanbill.sync.crm import InvoiceStatus, company_billing, digest
from beanbill.sync.push import issued_documents
from beanbill.sync.state import SqliteSyncState
from beanbill.sync_commands import run_push, run_reconcile
from tests import test_hubspot
from tests.peers.hubspot import front
from tests.test_hubspot import TOKEN, Recorder, Step
from tests.test_tryton import october_issued

# The HubSpot tests' fixtures: Prism behind the recording proxy, one per module.
prism = test_hubspot.prism
recorder_server = test_hubspot.recorder_server
recorder = test_hubspot.recorder

MakeWorkspace = Callable[..., Workspace]
UPSERT = "/crm/v3/objects/companies/batch/upsert"
ORGS = {"fr-post", "team-a", "de-pre", "us-prov", "fr-small"}


def echo(number: int, method: str, path: str) -> Step:
    return Step(echo=path.startswith(UPSERT))


def upserted(recorder: Recorder) -> dict[str, dict[str, str]]:
    """org → the properties sent for it, across this test's upserts."""
    sent: dict[str, dict[str, str]] = {}
    for exchange in recorder.requests("POST", UPSERT):
        for item in exchange.body["inputs"]:
            assert item["idProperty"] == "beanbill_org_id"
            sent[item["id"]] = item["properties"]
    return sent


@pytest.fixture
def crm_workspace(
    make_workspace: MakeWorkspace,
    tmp_path: Path,
    recorder: Recorder,
    monkeypatch: pytest.MonkeyPatch,
) -> Workspace:
    monkeypatch.setenv("HUBSPOT_TOKEN", TOKEN)
    recorder.reset(echo)
    return october_issued(
        make_workspace, tmp_path, {"hubspot": {"api_base": recorder.url, "timeout_seconds": 5}}
    )


def test_every_organization_is_upserted_with_its_figures_then_only_changes_are_sent(
    crm_workspace: Workspace, recorder: Recorder
) -> None:
    summary = run_push(crm_workspace)
    (report,) = summary.crm
    assert (report.upserted, report.unchanged, report.refused) == (5, 0, [])
    sent = upserted(recorder)
    assert set(sent) == ORGS
    invoice = next(d for d in issued_documents(crm_workspace) if d.buyer_reference == "fr-post")
    figures = sent["fr-post"]
    assert figures["beanbill_last_invoice_number"] == invoice.number
    assert figures["beanbill_last_invoice_date"] == invoice.issue_date.isoformat()
    due = f"{invoice.due_minor // 100}.{invoice.due_minor % 100:02d}"
    assert figures["beanbill_balance_due"] == due  # exact, in major units
    assert figures["beanbill_last_invoice_status"] in {"open", "overdue"}
    assert sent["team-a"]["beanbill_last_invoice_number"] == ""  # invoiced to its parent
    # Nothing changed: nothing is sent, by push or by reconcile.
    recorder.reset(echo)
    again = run_push(crm_workspace)
    assert (again.crm[0].upserted, again.crm[0].unchanged) == (0, 5)
    run_reconcile(crm_workspace, date(2026, 10, 1))
    assert recorder.requests("POST", UPSERT) == []
    # A credit grant changes one organization's credit balance: only it is sent.
    record_credit(crm_workspace, "fr-small", "grant", "7.00", date(2026, 11, 6), None, 1, "g1")
    recorder.reset(echo)
    run_push(crm_workspace)
    assert set(upserted(recorder)) == {"fr-small"}
    assert upserted(recorder)["fr-small"]["beanbill_credit_balance"] == "7.00"
    result = CliRunner().invoke(main, ["sync", "status", "-w", str(crm_workspace.root)])
    assert "hubspot" in result.output and "5 current, 0 refused" in result.output


def test_a_refused_batch_is_shown_and_sent_again_at_the_next_run(
    crm_workspace: Workspace, recorder: Recorder
) -> None:
    body = json.dumps(
        {"status": "error", "message": "Property values were not valid", "category":
         "VALIDATION_ERROR", "correlationId": "4f2a0c61-5b7e-4e1a-9d3c-1a2b3c4d5e6f"}
    ).encode()  # fmt: skip

    def refuse(number: int, method: str, path: str) -> Step:
        return Step(answer=(400, body)) if path.startswith(UPSERT) else Step()

    recorder.reset(refuse)
    summary = run_push(crm_workspace)
    assert summary.needs_attention and len(summary.crm[0].refused) == 5
    assert summary.synced == []  # no document target: nothing else to push
    result = CliRunner().invoke(main, ["sync", "status", "-w", str(crm_workspace.root)])
    assert result.exit_code == EXIT_ATTENTION
    assert "Property values were not valid" in result.output and "0 current, 5 refused" in (
        result.output
    )
    recorder.reset(echo)
    assert run_push(crm_workspace).crm[0].upserted == 5
    companies = SqliteSyncState(crm_workspace.state_dir).crm_companies("hubspot")
    assert {c.org for c in companies.values() if c.remote_id and not c.last_error} == ORGS


def test_an_unreachable_crm_never_blocks_the_documents(
    make_workspace: MakeWorkspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from beanbill.ports import free_port
    from beanbill.smtp_peer import running_smtp

    monkeypatch.setenv("HUBSPOT_TOKEN", TOKEN)
    with running_smtp() as smtp:
        sync = {
            "attempts": 2,
            "max_wait_seconds": 1,
            "hubspot": {"api_base": f"http://127.0.0.1:{free_port()}", "timeout_seconds": 1},
            "email": {"host": smtp.host, "port": smtp.port, "security": "none",
                      "sender": "billing@nimbus.example"},
        }  # fmt: skip
        workspace = october_issued(make_workspace, tmp_path, sync)
        summary = run_push(workspace)
        assert len(summary.synced) == len(issued_documents(workspace)) == len(smtp.received)
        assert summary.crm[0].unstarted and summary.needs_attention


def test_the_figures_are_a_pure_function_of_the_books(crm_workspace: Workspace) -> None:
    from beanbill.ledger.books import load_books

    books = load_books(crm_workspace.ledger_path, "EUR")
    customers = crm_workspace.customers.customer
    on_time = company_billing(books.entries, customers, {"fr-post": 123}, date(2026, 11, 6))
    late = company_billing(books.entries, customers, {"fr-post": 123}, date(2026, 12, 15))
    post = {c.org: c for c in on_time}["fr-post"]
    overdue = {c.org: c for c in late}["fr-post"]
    assert post.last_invoice_status is InvoiceStatus.OPEN and post.overdue_minor == 0
    assert overdue.last_invoice_status is InvoiceStatus.OVERDUE
    assert overdue.overdue_minor == overdue.balance_due_minor == post.balance_due_minor > 0
    assert overdue.overdue_days == 10  # due 2026-12-05
    assert post.consumption_30_days_minor == 123
    assert digest(post) != digest(overdue)


def test_push_keeps_a_hubspot_that_remembers_current(
    make_workspace: MakeWorkspace, tmp_path: Path, prism: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first push creates the properties and a company per organization; the next
    finds them (nothing to create) and sends only what changed, to the same companies."""
    monkeypatch.setenv("HUBSPOT_TOKEN", TOKEN)
    with front(prism) as peer:
        hubspot = {"api_base": peer.url, "timeout_seconds": 5}
        workspace = october_issued(make_workspace, tmp_path, {"hubspot": hubspot})
        (first,) = run_push(workspace).crm
        assert (first.upserted, first.refused, first.unstarted) == (5, [], None)
        held = peer.companies()
        assert set(held) == ORGS
        invoice = next(d for d in issued_documents(workspace) if d.buyer_reference == "fr-post")
        assert held["fr-post"]["beanbill_last_invoice_number"] == invoice.number
        state = SqliteSyncState(workspace.state_dir)
        ids = {org: c.remote_id for org, c in state.crm_companies("hubspot").items()}
        record_credit(workspace, "fr-small", "grant", "7.00", date(2026, 11, 6), None, 1, "g1")
        (second,) = run_push(workspace).crm
        assert (second.upserted, second.unchanged, second.unstarted) == (1, 4, None)
        assert peer.companies()["fr-small"]["beanbill_credit_balance"] == "7.00"
        assert {org: c.remote_id for org, c in state.crm_companies("hubspot").items()} == ids

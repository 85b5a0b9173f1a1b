"""`sync push` and `sync reconcile` against localstripe, with and without faults on the wire."""

from __future__ import annotations

from collections import Counter
from datetime import date
from typing import Any

from beanbill.ledger.books import ledger_errors, load_books
from beanbill.ledger.invoicing.corrections import credit_note
from beanbill.ledger.invoicing.documents import DocumentType
from beanbill.ledger.invoicing.issue import issue
from beanbill.ledger.post import balance
from beanbill.rating.periods import Month
from beanbill.rating.workspace import Workspace
from beanbill.stripe_peer import beanbill_invoices, client, dispute, pay, payout
from beanbill.sync.push import issued_documents, push_all
from beanbill.sync.reconcile import reconcile
from beanbill.sync.state import PushStatus, SqliteSyncState
from beanbill.targets import connectors, retry_policy
from tests.peers.fault_proxy import Fault, fault_proxy
from tests.support import Issued, push

OCTOBER = Month(2026, 10)
ISSUE_DAY = date(2026, 11, 5)


def retarget(workspace: Workspace, api_base: str) -> Workspace:
    """The same workspace pointed at another address (a fault proxy started after issuing:
    issuing forks renderers, which must not happen while the proxy's threads run)."""
    settings = workspace.root / "beanbill.toml"
    text = settings.read_text()
    old = workspace.settings.sync.stripe.api_base if workspace.settings.sync.stripe else None
    settings.write_text(text.replace(f'"{old}"', f'"{api_base}"'))
    return Workspace.load(workspace.root)


def remote_by_number(url: str) -> dict[str, list[Any]]:
    found: dict[str, list[Any]] = {}
    for invoice in beanbill_invoices(url):
        found.setdefault(invoice.metadata.to_dict()["beanbill_number"], []).append(invoice)
    return found


def assert_each_invoice_once_with_our_totals(workspace: Workspace, url: str) -> None:
    documents = [d for d in issued_documents(workspace) if d.type is DocumentType.INVOICE]
    remote = remote_by_number(url)
    assert sorted(remote) == sorted(d.number for d in documents)
    for document in documents:
        (invoice,) = remote[document.number]
        assert invoice.total == document.due_minor
        assert [line.amount for line in invoice.lines.data] != []
        assert invoice.number == document.number  # one invoice, one number
        taxes = sum(tax.amount for tax in invoice.total_taxes or [])
        assert sum(line.amount for line in invoice.lines.data) + taxes == document.due_minor
        line_keys = [line.metadata.to_dict()["beanbill_line"] for line in invoice.lines.data]
        assert len(line_keys) == len(set(line_keys))
    customers = client(url).v1.customers.list(params={"limit": 100}).data
    orgs = Counter(c.metadata.to_dict().get("beanbill_org") for c in customers)
    assert set(orgs.values()) == {1}
    assert set(orgs) == {d.buyer_reference for d in documents}


def test_push_creates_every_invoice_once_with_our_totals_and_credit_notes(
    issued: Issued, localstripe: str
) -> None:
    workspace = issued()
    first = push(workspace)
    assert len(first.synced) == 4 and not first.dead
    assert_each_invoice_once_with_our_totals(workspace, localstripe)
    state = SqliteSyncState(workspace.state_dir)
    assert {r.status for r in state.records()} == {PushStatus.SYNCED}

    (target,) = connectors(workspace)
    again = push_all(issued_documents(workspace), [target], state, retry_policy(workspace), 2)
    assert again.synced == [] and again.already == 4
    assert target.calls == 0  # type: ignore[attr-defined]

    central = next(d for d in issued_documents(workspace) if d.buyer_reference == "fr-post")
    note_number, _ = credit_note(workspace, central.number, ISSUE_DAY, "Wrong billing address")
    reissued = issue(workspace, OCTOBER, ISSUE_DAY)
    after = push(workspace)
    assert sorted(after.synced) == sorted([note_number, *reissued.issued])
    notes = client(localstripe).v1.credit_notes.list(params={"limit": 100}).data
    assert [(n.metadata.to_dict()["beanbill_number"], n.total) for n in notes] == [
        (note_number, central.due_minor)
    ]
    assert_each_invoice_once_with_our_totals(workspace, localstripe)


def test_faults_on_the_wire_neither_lose_nor_duplicate(issued: Issued, localstripe: str) -> None:
    cycle = [
        Fault.DROP_AFTER,
        Fault.RATE_LIMITED,
        Fault.STALL_AFTER,
        Fault.ERROR_AFTER,
        Fault.DROP_BEFORE,
    ]
    posts = Counter[str]()
    budget = 2 * len(cycle)  # every kind twice, then the wire heals (else nothing could finish)

    def plan(number: int, method: str, path: str) -> Fault:
        if posts["faults"] >= budget:
            return Fault.NONE
        if method == "POST":
            posts["seen"] += 1
        if (method == "GET" and number % 13 != 0) or (method == "POST" and posts["seen"] % 2):
            return Fault.NONE
        posts["faults"] += 1
        return cycle[posts["faults"] % len(cycle)]

    workspace = issued()
    with fault_proxy(localstripe, plan, stall_seconds=1.5) as proxy:
        workspace = retarget(workspace, proxy.url)  # type: ignore[attr-defined]
        summary = push(workspace)
    kinds = {fault for *_, fault in proxy.faults}
    assert summary.dead == [] and len(summary.synced) == 4, (summary.dead, proxy.refusals)
    assert kinds == set(cycle), proxy.faults
    assert summary.dead == [] and len(summary.synced) == 4, summary.dead
    assert_each_invoice_once_with_our_totals(workspace, localstripe)
    attempts = [r.attempts for r in SqliteSyncState(workspace.state_dir).records()]
    assert max(attempts) > 1


def test_a_permanent_refusal_is_dead_lettered_and_retried_on_request(
    issued: Issued, localstripe: str
) -> None:
    refusing = {"on": True}

    def plan(number: int, method: str, path: str) -> Fault:
        if refusing["on"] and method == "POST" and path.startswith("/v1/invoices"):
            return Fault.REJECT
        return Fault.NONE

    workspace = issued()
    with fault_proxy(localstripe, plan) as proxy:
        workspace = retarget(workspace, proxy.url)  # type: ignore[attr-defined]
        summary = push(workspace)
        assert summary.synced == [] and len(summary.dead) == 4
        state = SqliteSyncState(workspace.state_dir)
        dead = state.records()
        assert {r.status for r in dead} == {PushStatus.DEAD}
        assert all(r.attempts == 1 and "injected refusal" in (r.last_error or "") for r in dead)
        assert push(workspace).dead == []  # dead letters wait for `sync retry`
        assert state.requeue_dead() == 4
        refusing["on"] = False
        assert len(push(workspace).synced) == 4
    assert_each_invoice_once_with_our_totals(workspace, localstripe)


def test_reconcile_posts_payments_fees_refunds_payouts_disputes_once(
    issued: Issued, localstripe: str
) -> None:
    workspace = issued()
    push(workspace)
    api = client(localstripe).v1
    remote = remote_by_number(localstripe)
    documents = {d.number: d for d in issued_documents(workspace)}
    payable = sorted(n for n in remote if documents[n].due_minor > 0)
    paid = [pay(localstripe, remote[number][0].id) for number in payable]
    assert {invoice.status for invoice in paid} == {"paid"}
    charges = api.charges.list(params={"limit": 100}).data
    refunded = charges[0]
    api.refunds.create(params={"charge": refunded.id, "amount": 100})
    payout(localstripe, 100)  # before the dispute's fee takes the balance below zero
    dispute(localstripe, charges[-1].id)

    state = SqliteSyncState(workspace.state_dir)
    (target,) = connectors(workspace)
    report = reconcile(workspace, target, state, date(2026, 1, 1))
    assert report.discrepancies == []
    kinds = Counter(
        txn_id.split(":")[0]
        for txn_id in load_books(workspace.ledger_path, "EUR").txn_ids()
        if txn_id.startswith("stripe-")
    )
    assert kinds == {
        "stripe-payment": len(payable),
        "stripe-fee": len(payable) + 1,  # each card payment's, and the dispute's
        "stripe-refund": 1,
        "stripe-dispute": 1,
        "stripe-payout": 1,
    }
    assert ledger_errors(workspace.ledger_path) == []
    for number in payable:
        org = documents[number].buyer_reference or ""
        owed = balance(workspace, org).receivable_minor
        refund = 100 if org == _org_of_charge(api, refunded) else 0
        assert owed == refund  # paid in full; a refund makes that much due again
    second = reconcile(workspace, target, state, date(2026, 1, 1))
    assert second.posted.posted == 0 and second.discrepancies == []

    stranger = api.customers.create(params={"name": "not ours"})
    api.invoice_items.create(params={"customer": stranger.id, "amount": 500, "currency": "eur"})
    api.invoices.create(
        params={"customer": stranger.id, "pending_invoice_items_behavior": "exclude"}
    )
    third = reconcile(workspace, target, state, date(2026, 1, 1))
    assert len(third.discrepancies) == 1 and "unknown remote invoice" in third.discrepancies[0]


def _org_of_charge(api: Any, charge: Any) -> str:
    return str(api.customers.retrieve(str(charge.customer)).metadata.to_dict().get("beanbill_org"))

"""Edges a hostile user or a flaky machine finds: each test here failed before its fix."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import psutil
import tomli_w
from beancount import loader
from starlette.testclient import TestClient

from beanbill.ledger.books import load_books
from beanbill.ledger.post import post
from beanbill.rating.ingest import ingest
from beanbill.rating.periods import Month
from beanbill.rating.rate import rate_months
from beanbill.rating.workspace import CATALOG_FILE, Workspace
from tests.support import (
    BEANBILL,
    SMALL_CATALOG,
    customer,
    october_usage,
    stripe_signature,
    write_jsonl,
)

OCTOBER = Month(2026, 10)
SETTLE_SECONDS = 20.0


def test_a_family_added_after_init_gets_its_account_opened(
    make_workspace: Callable[..., Workspace], tmp_path: Path
) -> None:
    workspace = make_workspace(customers=[customer("acme")])
    gpu = {
        "id": "gpu",
        "name": "GPU",
        "unit": "GPU",
        "kind": "interval",
        "family": "Accelerators",
        "price": [{"effective": date(2026, 1, 1), "price": "0.0001"}],
    }
    catalog = {**SMALL_CATALOG, "meter": [*SMALL_CATALOG["meter"], gpu]}
    (workspace.root / CATALOG_FILE).write_text(tomli_w.dumps(catalog))
    workspace = Workspace.load(workspace.root)
    event = {
        "id": "g1",
        "org": "acme",
        "resource": "acme/gpu-1",
        "meter": "gpu",
        "start": "2026-10-05T00:00:00Z",
        "end": "2026-10-05T10:00:00Z",
    }
    ingest(workspace, [write_jsonl(tmp_path / "u.jsonl", [event])])
    rate_months(workspace, [OCTOBER])
    post(workspace, OCTOBER, date(2026, 11, 2))
    entries, errors, _ = loader.load_file(str(workspace.ledger_path))
    assert errors == []
    opened = {entry.account for entry in entries if type(entry).__name__ == "Open"}
    assert "Income:Usage:Accelerators" in opened


def descendants(process: psutil.Process) -> list[psutil.Process]:
    try:
        return process.children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def alive(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_a_killed_invoice_run_leaves_no_render_process_behind(
    make_workspace: Callable[..., Workspace], tmp_path: Path
) -> None:
    organizations = [f"org-{index:02d}" for index in range(40)]
    workspace = make_workspace(customers=[customer(org) for org in organizations])
    records = [record for org in organizations for record in october_usage(org, 5)]
    ingest(workspace, [write_jsonl(tmp_path / "u.jsonl", records)])
    rate_months(workspace, [OCTOBER])
    post(workspace, OCTOBER, date(2026, 11, 2))
    command = [BEANBILL, "invoice", "-w", str(workspace.root), "--period", "2026-10"]
    main = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    beanbill = psutil.Process(main.pid)
    deadline = time.monotonic() + SETTLE_SECONDS
    seen: list[psutil.Process] = []
    while time.monotonic() < deadline and main.poll() is None:
        seen = descendants(beanbill)
        rendering = any(workspace.invoices_dir.glob("*.pdf"))
        if len(seen) >= 3 and rendering:  # the fork server and workers, mid-run
            break
        time.sleep(0.01)
    assert len(seen) >= 3, "no render worker was seen before the run ended"
    main.send_signal(signal.SIGKILL)
    main.wait()
    deadline = time.monotonic() + SETTLE_SECONDS
    while time.monotonic() < deadline and any(alive(process) for process in seen):
        time.sleep(0.05)
    assert [process.pid for process in seen if alive(process)] == []


WEBHOOK_SECRET = "whsec_hardening"
STRIPE_API_VERSION = "2026-10-28.endive"


def webhook_app(workspace: Workspace) -> TestClient:
    from beanbill.connectors.stripe import StripeConnector
    from beanbill.rating.config import StripeSettings
    from beanbill.sync.serve import create_app
    from beanbill.targets import sync_state

    connector = StripeConnector(
        StripeSettings(), "sk_test_offline", WEBHOOK_SECRET, 30, "UTC", "ws-t"
    )
    return TestClient(create_app(workspace, [connector], sync_state(workspace)))


def post_signed(client: TestClient, event: dict[str, object], at: int | None = None) -> int:
    body = json.dumps(event).encode()
    response = client.post(
        "/webhooks/stripe", content=body, headers=stripe_signature(body, WEBHOOK_SECRET, at)
    )
    return response.status_code


def payout(event_id: str, amount: object, arrival_date: object) -> dict[str, object]:
    data = {"id": f"po_{event_id}", "object": "payout", "amount": amount, "currency": "eur",
            "arrival_date": arrival_date, "created": 1_790_000_000, "status": "paid"}  # fmt: skip
    return {"id": event_id, "type": "payout.paid", "api_version": STRIPE_API_VERSION,
            "data": {"object": data}}  # fmt: skip


def test_poisoned_webhooks_are_quarantined_and_the_rest_are_posted(
    make_workspace: Callable[..., Workspace],
) -> None:
    workspace = make_workspace(customers=[customer("acme")])
    good_day = int(datetime(2026, 11, 3, 12, tzinfo=UTC).timestamp())
    with webhook_app(workspace) as client:
        nan = b'{"id": "evt_nan", "type": "payout.paid", "data": {"object": {"amount": NaN}}}'
        assert (
            client.post(
                "/webhooks/stripe", content=nan, headers=stripe_signature(nan, WEBHOOK_SECRET)
            ).status_code
            == 400
        )
        statuses = [
            post_signed(client, payout("evt_huge", 1e30, good_day)),
            post_signed(client, payout("evt_epoch", 1000, 0)),
            post_signed(client, payout("evt_text", "1000", good_day)),
            post_signed(client, payout("evt_good", 1234, good_day)),
        ]
        assert statuses == [200] * 4
        state = sync_state_of(workspace)
        deadline = time.monotonic() + SETTLE_SECONDS
        while sum(state.inbox_counts("stripe").values()) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
    counts: Counter[str] = Counter()
    for outcome, count in state.inbox_counts("stripe").items():
        counts[outcome.split(":")[0]] += count
    assert counts == {"quarantined": 3, "posted": 1}
    books = load_books(workspace.ledger_path, "EUR")
    assert [e.meta["txn-id"] for e in books.entries if "po_" in e.meta.get("txn-id", "")] == [
        "stripe-payout:po_evt_good"
    ]
    assert loader.load_file(str(workspace.ledger_path))[1] == []


def sync_state_of(workspace: Workspace) -> Any:
    from beanbill.targets import sync_state

    return sync_state(workspace)


def test_serve_refuses_future_signatures_and_oversized_bodies_early(
    make_workspace: Callable[..., Workspace],
) -> None:
    workspace = make_workspace(customers=[customer("acme")])
    with webhook_app(workspace) as client:
        future = int(time.time()) + 3600
        assert post_signed(client, payout("evt_future", 1, future), at=future) == 400
        huge = b"x" * 2_000_001
        assert client.post("/webhooks/stripe", content=huge).status_code == 413

        def chunks() -> Iterator[bytes]:  # no Content-Length: capped while reading
            for _ in range(100):
                yield b"y" * 100_000

        assert client.post("/webhooks/stripe", content=chunks()).status_code == 413
    assert sync_state_of(workspace).inbox_counts("stripe") == {}


def paid_invoice(event_id: str, number: str, amount: int, org: str = "acme") -> dict[str, object]:
    paid_at = int(datetime(2026, 11, 10, 9, tzinfo=UTC).timestamp())
    invoice = {
        "id": f"in_{event_id}",
        "object": "invoice",
        "status": "paid",
        "amount_paid": amount,
        "currency": "eur",
        "created": paid_at,
        "status_transitions": {"paid_at": paid_at},
        "metadata": {"beanbill_number": number, "beanbill_org": org},
        "customer": "cus_acme",
    }
    return {"id": event_id, "type": "invoice.paid", "api_version": STRIPE_API_VERSION,
            "data": {"object": invoice}}  # fmt: skip


def test_payments_of_unknown_invoices_are_refused_and_overpayments_held(
    make_workspace: Callable[..., Workspace], tmp_path: Path
) -> None:
    from beanbill.ledger.invoicing.documents import load_document
    from beanbill.ledger.invoicing.issue import issue
    from beanbill.ledger.post import balance

    workspace = make_workspace(customers=[customer("acme"), customer("other")])
    records = [*october_usage("acme", 10), *october_usage("other", 3)]
    ingest(workspace, [write_jsonl(tmp_path / "u.jsonl", records)])
    rate_months(workspace, [OCTOBER])
    post(workspace, OCTOBER, date(2026, 11, 2))
    number = issue(workspace, OCTOBER, date(2026, 11, 5)).issued[0]
    due = load_document(workspace.invoices_dir / f"{number}.json").due_minor
    with webhook_app(workspace) as client:
        statuses = [
            post_signed(client, paid_invoice("evt_unknown", "INV-2026-999999", 1_000_000)),
            post_signed(client, paid_invoice("evt_wrong_org", number, due, org="other")),
            post_signed(client, paid_invoice("evt_over", number, due + 99_999_999)),
        ]
        assert statuses == [200] * 3
        state = sync_state_of(workspace)
        deadline = time.monotonic() + SETTLE_SECONDS
        while sum(state.inbox_counts("stripe").values()) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
    outcomes = sorted(state.inbox_counts("stripe"))
    assert [outcome.split(":")[0] for outcome in outcomes] == ["posted", "unmatched", "unmatched"]
    assert "held in Liabilities:Unapplied:Acme" in outcomes[0]
    assert "INV-2026-999999 was not issued by beanbill" in outcomes[1]
    assert "is acme's, the payment names other" in outcomes[2]
    assert balance(workspace, "acme").receivable_minor == 0  # exactly what was due
    assert balance(workspace, "other").receivable_minor > 0  # not paid by acme's money
    books = load_books(workspace.ledger_path, "EUR")
    assert books.balances(["Liabilities:Unapplied:Acme"]) == {
        "Liabilities:Unapplied:Acme": -99_999_999
    }
    assert loader.load_file(str(workspace.ledger_path))[1] == []


def test_dates_that_would_break_the_books_or_the_series_are_refused(
    make_workspace: Callable[..., Workspace], tmp_path: Path
) -> None:
    import pytest

    from beanbill.ledger.invoicing import InvoicingError
    from beanbill.ledger.invoicing.issue import issue
    from beanbill.ledger.invoicing.numbering import NumberingError
    from beanbill.ledger.post import PostingError, record_credit

    workspace = make_workspace(customers=[customer("acme"), customer("later")])
    before = workspace.ledger_path.read_bytes()
    with pytest.raises(PostingError, match="before the books open"):
        record_credit(workspace, "acme", "purchase", "10.00", date(1999, 12, 31), None, 1, None)
    assert workspace.ledger_path.read_bytes() == before
    assert loader.load_file(str(workspace.ledger_path))[1] == []
    ingest(workspace, [write_jsonl(tmp_path / "u.jsonl", october_usage("acme", 10))])
    rate_months(workspace, [OCTOBER])
    post(workspace, OCTOBER, date(2026, 11, 2))
    with pytest.raises(InvoicingError, match="would precede the end of the period"):
        issue(workspace, OCTOBER, date(2026, 10, 20))
    assert issue(workspace, OCTOBER, date(2026, 11, 20)).issued == ("INV-2026-000001",)
    records = october_usage("later", 3)
    ingest(workspace, [write_jsonl(tmp_path / "later.jsonl", records)])
    rate_months(workspace, [OCTOBER])
    post(workspace, OCTOBER, date(2026, 11, 2))
    with pytest.raises(NumberingError, match="out of date order"):
        issue(workspace, OCTOBER, date(2026, 11, 10))  # before INV-2026-000001's day
    assert issue(workspace, OCTOBER, date(2026, 11, 21)).issued == ("INV-2026-000002",)
    assert loader.load_file(str(workspace.ledger_path))[1] == []


def test_the_writer_refuses_what_bean_check_would_reject(
    make_workspace: Callable[..., Workspace],
) -> None:
    import pytest

    from beanbill.ledger.entries import Posting, Transaction
    from beanbill.ledger.writer import LedgerWriteError, LedgerWriter

    workspace = make_workspace(customers=[customer("acme")])
    writer = LedgerWriter(workspace.ledger_path)

    def entry(day: date, account: str) -> Transaction:
        postings = (Posting("Assets:Bank:Operating", 100, "EUR"), Posting(account, -100, "EUR"))
        return Transaction(day, f"test:{day}:{account}", "test", postings)

    with pytest.raises(LedgerWriteError, match="outside the books"):
        writer.append("books/x.beancount", [entry(date(1999, 12, 31), "Income:Addons")])
    with pytest.raises(LedgerWriteError, match="Income:Never:Opened is not open"):
        writer.append("books/x.beancount", [entry(date(2026, 1, 1), "Income:Never:Opened")])
    assert not (workspace.root / "books" / "x.beancount").exists()
    writer.append("books/x.beancount", [entry(date(2026, 1, 1), "Income:Addons")])
    assert loader.load_file(str(workspace.ledger_path))[1] == []


def invoiced_then_late_usage(
    make_workspace: Callable[..., Workspace], tmp_path: Path
) -> tuple[Workspace, str]:
    """October invoiced for acme, then a late October event posted with ``--correct``."""
    from beanbill.ledger.invoicing.issue import issue
    from beanbill.ledger.post import balance

    workspace = make_workspace(customers=[customer("acme")])
    ingest(workspace, [write_jsonl(tmp_path / "u.jsonl", october_usage("acme", 10))])
    rate_months(workspace, [OCTOBER])
    post(workspace, OCTOBER, date(2026, 11, 2))
    [first] = issue(workspace, OCTOBER, date(2026, 11, 5)).issued
    assert balance(workspace, "acme").unbilled_minor == 0
    late = {**october_usage("acme", 7, day=20)[0], "id": "late-1"}
    ingest(workspace, [write_jsonl(tmp_path / "late.jsonl", [late])])
    rate_months(workspace, [OCTOBER])
    post(workspace, OCTOBER, date(2026, 11, 8), correct=True)
    return workspace, first


def test_late_usage_after_an_invoice_ends_on_an_invoice(
    make_workspace: Callable[..., Workspace], tmp_path: Path
) -> None:
    from beanbill.ledger.invoicing.corrections import credit_note
    from beanbill.ledger.invoicing.issue import issue
    from beanbill.ledger.post import balance

    workspace, first = invoiced_then_late_usage(make_workspace, tmp_path)
    left = balance(workspace, "acme").unbilled_minor
    assert left > 0  # the late usage, posted but on no invoice yet
    summary = issue(workspace, OCTOBER, date(2026, 11, 9))
    assert summary.issued == ()
    assert [(s.number, s.now_minor - s.moved_minor) for s in summary.stale] == [(first, left)]
    credit_note(workspace, first, date(2026, 11, 9), "Wrong billing address")
    again = issue(workspace, OCTOBER, date(2026, 11, 9))
    assert len(again.issued) == 1 and again.stale == ()
    assert balance(workspace, "acme").unbilled_minor == 0  # every posted amount invoiced
    assert loader.load_file(str(workspace.ledger_path))[1] == []


def test_invoice_correct_cancels_and_reissues_a_re_rated_period(
    make_workspace: Callable[..., Workspace], tmp_path: Path
) -> None:
    from click.testing import CliRunner

    from beanbill.cli import main
    from beanbill.ledger.post import balance

    workspace, _ = invoiced_then_late_usage(make_workspace, tmp_path)
    line = ["invoice", "-w", str(workspace.root), "--period", "2026-10", "--date", "2026-11-09"]
    reported = CliRunner().invoke(main, line)
    assert reported.exit_code == 1 and "re-rated after issue: INV-2026-000001" in reported.output
    corrected = CliRunner().invoke(main, [*line, "--correct"])
    assert corrected.exit_code == 0, corrected.output
    assert "credit note CN-2026-000001 cancels INV-2026-000001" in corrected.output
    assert "INV-2026-000002" in corrected.output
    assert balance(workspace, "acme").unbilled_minor == 0
    assert loader.load_file(str(workspace.ledger_path))[1] == []


def test_reconcile_reads_each_remote_object_alone() -> None:
    import stripe

    from beanbill.connectors.stripe import StripeConnector, _each
    from beanbill.rating.config import StripeSettings
    from beanbill.sync.interface import Malformed, Movement

    connector = StripeConnector(
        StripeSettings(), "sk_test_offline", WEBHOOK_SECRET, 30, "UTC", "ws-t"
    )
    created = int(datetime(2026, 11, 3, tzinfo=UTC).timestamp())
    transactions = [
        {"id": "txn_float", "fee": 1e30, "currency": "eur", "created": created},
        {"id": "txn_epoch", "fee": 30, "currency": "eur", "created": 0},
        {"id": "txn_text", "fee": "30", "currency": "eur", "created": created},
        {"id": "txn_good", "fee": 30, "currency": "eur", "created": created},
    ]
    read = _each(transactions, stripe.BalanceTransaction, connector.fee_of)
    assert [type(item).__name__ for item in read] == ["Malformed"] * 3 + ["Movement"]
    assert [item.remote_id for item in read if isinstance(item, Malformed)] == [
        "txn_float",
        "txn_epoch",
        "txn_text",
    ]
    good = read[-1]
    assert isinstance(good, Movement) and good.amount_minor == 30
    invoice = {"id": "in_1", "total": 12.5, "amount_paid": 0, "status": "open"}
    [bad] = _each([invoice], stripe.Invoice, connector._remote_invoice)
    assert isinstance(bad, Malformed) and "total" in bad.reason

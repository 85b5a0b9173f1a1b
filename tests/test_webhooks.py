"""Payment webhooks: signed by localstripe, kept by `beanbill serve`, posted once by its writer."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import statistics
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from starlette.testclient import TestClient

from beanbill.connectors.stripe import STRIPE_API_VERSION
from beanbill.ledger.books import cache_is_valid, ledger_errors, load_books
from beanbill.ledger.post import balance
from beanbill.ports import free_port
from beanbill.rating.workspace import Workspace
from beanbill.stripe_peer import (
    API_KEY,
    beanbill_invoices,
    pay,
    payout,
    register_webhook,
    wait_for_port,
)
from beanbill.sync.push import issued_documents
from beanbill.sync.serve import InboxWriter, create_app
from beanbill.targets import connectors, sync_state
from tests.support import BEANBILL, Issued, push, stripe_signature

SECRET = "whsec_beanbill_tests"
SETTLE_SECONDS = 60
WARM_SECONDS = 0.5  # quiet time before the writer rewrites the cache (300 s by default)


def signed(body: bytes, secret: str = SECRET, at: int | None = None) -> dict[str, str]:
    return stripe_signature(body, secret, at)


def stripe_txn_ids(workspace: Workspace) -> Counter[str]:
    books = load_books(workspace.ledger_path, "EUR")
    return Counter(
        entry.meta["txn-id"].split(":")[0]
        for entry in books.entries
        if "txn-id" in entry.meta and entry.meta["txn-id"].startswith("stripe-")
    )


def paid_event(workspace: Workspace, url: str) -> bytes:
    """A real `invoice.paid` event body as localstripe would send it."""
    push(workspace)
    invoice = next(i for i in beanbill_invoices(url) if i.total > 0)
    paid = pay(url, str(invoice.id))
    event = {"id": "evt_test_paid", "type": "invoice.paid", "created": int(time.time()),
             "api_version": STRIPE_API_VERSION}  # fmt: skip
    event["data"] = {"object": paid.to_dict()}
    return json.dumps(event, default=str).encode()  # Stripe sends decimals as strings


@pytest.fixture
def app_client(
    issued: Issued,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[TestClient, Workspace]]:
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", SECRET)
    workspace = issued()
    app = create_app(
        workspace, connectors(workspace), sync_state(workspace), warm_after_seconds=WARM_SECONDS
    )
    with TestClient(app) as test_client:
        yield test_client, workspace


def wait_until(condition: Callable[[], bool], seconds: float = SETTLE_SECONDS) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("not settled in time")
        time.sleep(0.1)


def test_forged_stale_and_replayed_webhooks_change_nothing(
    app_client: tuple[TestClient, Workspace],
    localstripe: str,
) -> None:
    test_client, workspace = app_client
    body = paid_event(workspace, localstripe)
    ledger_before = stripe_txn_ids(workspace)
    url = "/webhooks/stripe"
    forged = test_client.post(url, content=body, headers=signed(body, "whsec_someone_else"))
    stale = test_client.post(url, content=body, headers=signed(body, at=int(time.time()) - 301))
    unsigned = test_client.post(url, content=body)
    tampered = test_client.post(url, content=body + b" ", headers=signed(body))
    assert [r.status_code for r in (forged, stale, unsigned, tampered)] == [400] * 4
    state = sync_state(workspace)
    assert state.inbox_counts("stripe") == {} and stripe_txn_ids(workspace) == ledger_before

    first = test_client.post(url, content=body, headers=signed(body))
    assert first.status_code == 200 and first.json()["duplicate"] is False
    wait_until(lambda: stripe_txn_ids(workspace)["stripe-payment"] == 1)
    replayed = test_client.post(url, content=body, headers=signed(body))
    assert replayed.status_code == 200 and replayed.json()["duplicate"] is True
    unknown = json.dumps({"id": "evt_other", "type": "customer.tax_id.created", "data": {}})
    ignored = test_client.post(url, content=unknown, headers=signed(unknown.encode()))
    assert ignored.status_code == 200
    wait_until(lambda: state.inbox_counts("stripe") == {"posted": 1, "ignored": 1})
    assert stripe_txn_ids(workspace) == Counter({"stripe-payment": 1})
    # quiet after the post: the books' cache is written again, so Fava opens them fast
    wait_until(lambda: cache_is_valid(workspace.ledger_path))
    assert ledger_errors(workspace.ledger_path) == []


def test_webhooks_arriving_together_share_commits_and_each_is_kept_once(
    app_client: tuple[TestClient, Workspace],
) -> None:
    test_client, workspace = app_client
    senders, each = 8, 25
    start = threading.Barrier(senders)

    def send(sender: int) -> list[bool]:
        start.wait()
        duplicates = []
        for n in range(each):
            # every event twice from two senders: kept once, the other answered duplicate
            identifier = f"evt_group_{(sender // 2) * each + n}"
            body = json.dumps({"id": identifier, "type": "customer.tax_id.created",
                               "data": {"object": {}}}).encode()  # fmt: skip
            answer = test_client.post("/webhooks/stripe", content=body, headers=signed(body))
            assert answer.status_code == 200, answer.text
            duplicates.append(answer.json()["duplicate"])
        return duplicates

    with ThreadPoolExecutor(senders) as pool:
        answers = [flag for flags in pool.map(send, range(senders)) for flag in flags]
    distinct = senders // 2 * each
    assert answers.count(False) == distinct and answers.count(True) == distinct
    inbox = test_client.app.state.inbox  # type: ignore[attr-defined]
    assert inbox.groups < senders * each  # some events shared a transaction
    state = sync_state(workspace)
    wait_until(lambda: sum(state.inbox_counts("stripe").values()) == distinct)


def test_a_store_that_fails_answers_503_and_keeps_nothing_then_recovers(
    app_client: tuple[TestClient, Workspace],
) -> None:
    test_client, workspace = app_client
    body = json.dumps({"id": "evt_broken_store", "type": "customer.tax_id.created",
                       "data": {"object": {}}}).encode()  # fmt: skip
    database = workspace.state_dir / "sync.sqlite"
    with contextlib.closing(sqlite3.connect(database)) as connection:
        connection.execute("ALTER TABLE inbox RENAME TO inbox_away")  # the store breaks
    answer = test_client.post("/webhooks/stripe", content=body, headers=signed(body))
    assert answer.status_code == 503 and "not kept, try again" in answer.json()["error"]
    with contextlib.closing(sqlite3.connect(database)) as connection:
        connection.execute("ALTER TABLE inbox_away RENAME TO inbox")
        assert connection.execute("SELECT count(*) FROM inbox").fetchone() == (0,)
    again = test_client.post("/webhooks/stripe", content=body, headers=signed(body))
    assert again.status_code == 200 and again.json()["duplicate"] is False


def start_serve(workspace: Workspace, port: int, workers: int = 1) -> subprocess.Popen[bytes]:
    environment = {**os.environ, "STRIPE_SECRET_KEY": API_KEY, "STRIPE_WEBHOOK_SECRET": SECRET}
    process = subprocess.Popen(
        [
            BEANBILL,
            "serve",
            "-w",
            str(workspace.root),
            "--port",
            str(port),
            "--workers",
            str(workers),
        ],
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for_port(port, process, 30)
    return process


def wait_until_posted(workspace: Workspace, payments: int, payouts: int) -> Counter[str]:
    """Wait until the ledger books each payment and payout once and the inbox is drained;
    what it must hold."""
    expected = Counter({"stripe-payment": payments, "stripe-payout": payouts})
    wait_until(lambda: stripe_txn_ids(workspace) == expected)
    state = sync_state(workspace)
    wait_until(lambda: "waiting" not in state.inbox_counts("stripe"))
    return expected


def test_serve_killed_during_a_burst_posts_every_accepted_event_once(
    issued: Issued,
    localstripe: str,
) -> None:
    workspace = issued()
    push(workspace)
    port = free_port()
    serve = start_serve(workspace, port)
    register_webhook(localstripe, f"http://127.0.0.1:{port}/webhooks/stripe", SECRET)
    documents = {d.number: d for d in issued_documents(workspace)}
    payable = [i for i in beanbill_invoices(localstripe) if i.total > 0]
    payouts = 40
    try:
        for invoice in payable:
            pay(localstripe, str(invoice.id))
        for _ in range(payouts):
            payout(localstripe, 10)  # within what the payments brought in
        time.sleep(0.3)
        serve.send_signal(signal.SIGKILL)  # mid-burst: some kept, some not even received
        serve.wait(timeout=10)
        serve = start_serve(workspace, port)
        httpx.post(f"{localstripe}/_beanbill/redeliver", auth=(API_KEY, "")).raise_for_status()
        expected = wait_until_posted(workspace, len(payable), payouts)
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.wait(timeout=10)
    assert stripe_txn_ids(workspace) == expected
    assert ledger_errors(workspace.ledger_path) == []
    for invoice in payable:
        number = invoice.metadata.to_dict()["beanbill_number"] if invoice.metadata else ""
        assert balance(workspace, documents[number].buyer_reference or "").receivable_minor == 0


def test_serve_with_two_workers_posts_every_event_once_and_answers_keep_alive_at_once(
    issued: Issued,
    localstripe: str,
) -> None:
    """Two server processes on one port: each event is kept by whichever receives it and
    posted once (the writers share the inbox and the workspace lock). Answers on a
    keep-alive connection come at once: uvicorn's own workers mode bound its socket so
    that Nagle's algorithm held each answer for the client's delayed ACK (~40 ms)."""
    workspace = issued()
    push(workspace)
    port = free_port()
    serve = start_serve(workspace, port, workers=2)
    register_webhook(localstripe, f"http://127.0.0.1:{port}/webhooks/stripe", SECRET)
    payable = [i for i in beanbill_invoices(localstripe) if i.total > 0]
    payouts = 30
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            client.get("/health").raise_for_status()
            seconds = []
            for _ in range(21):
                started = time.perf_counter()
                client.get("/health").raise_for_status()
                seconds.append(time.perf_counter() - started)
            assert statistics.median(seconds) < 0.025, seconds
            assert client.get("/openapi.json").status_code == 200  # the API beside
        for invoice in payable:
            pay(localstripe, str(invoice.id))
        for _ in range(payouts):
            payout(localstripe, 10)
        expected = wait_until_posted(workspace, len(payable), payouts)
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.wait(timeout=20)
    assert stripe_txn_ids(workspace) == expected
    assert ledger_errors(workspace.ledger_path) == []
    with (
        contextlib.suppress(ConnectionError, OSError),
        socket.create_connection(("127.0.0.1", port), timeout=1),
    ):
        raise AssertionError("a worker outlived the server")


def test_one_process_of_a_workspace_posts_the_inbox_and_another_takes_over_when_it_stops(
    issued: Issued,
) -> None:
    """Every server process keeps events; one at a time posts them (two writers judging
    one invoice's due amount at once could each think it unpaid)."""
    workspace = issued()
    state = sync_state(workspace)
    first, second = InboxWriter(workspace, [], state), InboxWriter(workspace, [], state)
    assert first.holds_writer_lock() and first.holds_writer_lock()  # kept once taken
    assert not second.holds_writer_lock()
    first.stopping.set()
    first.thread.start()  # stops at once, as a server shutting down
    first.stop()
    assert second.holds_writer_lock()
    second.stopping.set()
    second.thread.start()
    second.stop()


def test_the_inbox_writer_outlives_a_passing_error_taking_its_lock(
    issued: Issued, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file-open error (descriptors run out under a burst) is a pause, not the end of
    the thread that posts the inbox: webhooks would be kept but never booked."""
    monkeypatch.setattr("beanbill.sync.serve.ERROR_PAUSE_SECONDS", 0.05)
    monkeypatch.setattr("beanbill.sync.serve.COALESCE_SECONDS", 0.0)
    workspace = issued()
    writer = InboxWriter(workspace, [], sync_state(workspace))
    attempts: list[int] = []
    taken = writer.holds_writer_lock

    def flaky() -> bool:
        attempts.append(1)
        if len(attempts) == 1:
            raise OSError(24, "Too many open files")
        return taken()

    monkeypatch.setattr(writer, "holds_writer_lock", flaky)
    writer.start()
    try:
        deadline = time.monotonic() + 10
        while len(attempts) < 2 and time.monotonic() < deadline:
            writer.wake.set()
            time.sleep(0.02)
        assert writer.thread.is_alive() and len(attempts) >= 2
    finally:
        writer.stop()


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_on_a_port_in_use_exits_2_with_one_line(issued: Issued, workers: int) -> None:
    workspace = issued()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        environment = {**os.environ, "STRIPE_SECRET_KEY": API_KEY, "STRIPE_WEBHOOK_SECRET": SECRET}
        result = subprocess.run(
            [BEANBILL, "serve", "-w", str(workspace.root), "--port", str(port),
             "--workers", str(workers)],
            env=environment, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stderr == f"error: cannot listen on 127.0.0.1:{port}: Address already in use\n"

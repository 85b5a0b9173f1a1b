"""The shared state on PostgreSQL under what only a server sees: several processes at once.

The state suites (tests/test_sync_state.py, tests/test_numbering.py) run against both
stores; here are the races: issuers of one series in several processes (some killed -9),
inbox writers and processors side by side, two ``beanbill invoice`` runs, and two
``beanbill serve`` replicas receiving the same webhooks while one of them is killed -9.
Then moving to PostgreSQL (``sync import-sqlite``), and the fix each refusal gives: the one
for the store the workspace uses (tested on both where the fix differs).
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from beanbill.examples import SETTINGS
from beanbill.ledger.books import ledger_errors, load_books
from beanbill.ledger.invoicing import InvoicingError
from beanbill.ledger.invoicing.documents import load_document
from beanbill.ledger.invoicing.due import issued_keys
from beanbill.ledger.invoicing.files import write_documents
from beanbill.ledger.invoicing.issue import issue
from beanbill.ledger.invoicing.numbering import InvoiceNumbers, open_numbers, rebuild_advice
from beanbill.ledger.invoicing.numbering_postgres import PostgresInvoiceNumbers
from beanbill.ledger.invoicing.recovery import numbering_state
from beanbill.ledger.post import balance, post, record_credit
from beanbill.ports import free_port
from beanbill.rating.config import StateSettings
from beanbill.rating.ingest import ingest
from beanbill.rating.periods import Month
from beanbill.rating.rate import rate_months
from beanbill.rating.storage_postgres import StateDatabaseError
from beanbill.rating.workspace import Workspace
from beanbill.stripe_peer import (
    API_KEY,
    beanbill_invoices,
    pay,
    payout,
    register_webhook,
    reset,
    wait_for_port,
)
from beanbill.sync.interface import DocumentTarget
from beanbill.sync.push import issued_documents, push_all
from beanbill.sync.serve import WRITER_LOCK_FILE
from beanbill.sync.state import SqliteSyncState, open_sync_state
from beanbill.sync.state_import import StateImportError, import_sqlite_state
from beanbill.sync.state_postgres import PostgresSyncState
from beanbill.targets import connectors, retry_policy
from tests.peers.postgres import BACKENDS, PASSWORD, backend_settings, binaries
from tests.support import (
    BEANBILL,
    SMALL_CATALOG,
    customer,
    october_usage,
    write_jsonl,
    write_workspace,
)

OCTOBER = Month(2026, 10)
ISSUE_DAY = date(2026, 11, 5)
SECRET = "whsec_beanbill_tests"
SETTLE_SECONDS = 60.0
SCRIPT_SECONDS = 120


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[StateSettings]:
    """``[state]`` naming a new database of the session's cluster (skipped without one)."""
    with backend_settings("postgres", monkeypatch) as state:
        yield state


def script(source: str, settings: StateSettings, *arguments: str) -> list[str]:
    return [sys.executable, "-c", source, settings.url or "", settings.password_env, *arguments]


def wait_until(condition: Callable[[], bool], seconds: float = SETTLE_SECONDS) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("not settled in time")
        time.sleep(0.1)


# --- numbering: issuers in several processes ----------------------------------------------

ISSUER = """
import json, random, sys
from datetime import date
from beanbill.ledger.invoicing.numbering_postgres import PostgresInvoiceNumbers
numbers = PostgresInvoiceNumbers(sys.argv[1], sys.argv[2])
keys = [f"invoice:org-{index}:2026-10" for index in range(int(sys.argv[3]))]
random.Random(int(sys.argv[4])).shuffle(keys)
print("ready", flush=True)
got = {key: numbers.assign("INV-2026", key, date(2026, 11, 1)).number for key in keys}
print(json.dumps(got), flush=True)
"""
KEYS = 300
ISSUERS = 3
KILLED_ISSUERS = 4


def test_issuers_in_several_processes_share_one_gapless_series(settings: StateSettings) -> None:
    """Every issuer asks for the same keys in its own order while another is killed -9
    again and again: each key gets one number, the same for everyone, with no gap."""
    PostgresInvoiceNumbers(settings.url or "", settings.password_env)  # schema first
    issuers = [
        subprocess.Popen(script(ISSUER, settings, str(KEYS), str(seed)), stdout=subprocess.PIPE)
        for seed in range(ISSUERS)
    ]
    for seed in range(ISSUERS, ISSUERS + KILLED_ISSUERS):
        victim = subprocess.Popen(
            script(ISSUER, settings, str(KEYS), str(seed)), stdout=subprocess.PIPE, text=True
        )
        assert victim.stdout is not None and victim.stdout.readline() == "ready\n"
        time.sleep(0.05 * seed)  # mid-run: inside a transaction most of the time
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait()
    answers = []
    for issuer in issuers:
        out, _ = issuer.communicate(timeout=SCRIPT_SECONDS)
        assert issuer.returncode == 0
        answers.append(json.loads(out.splitlines()[-1]))
    assigned = PostgresInvoiceNumbers(settings.url or "", settings.password_env).all()
    assert [a.value for a in assigned] == list(range(1, KEYS + 1))
    assert {a.document_key: a.number for a in assigned} == answers[0]
    assert all(answer == answers[0] for answer in answers)


def test_a_wrong_password_is_refused_without_being_shown(
    settings: StateSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(settings.password_env, "not-the-password")
    with pytest.raises(StateDatabaseError, match="cannot connect to postgresql://") as refused:
        PostgresSyncState(settings.url or "", settings.password_env)
    assert "not-the-password" not in str(refused.value)
    monkeypatch.setenv("PGPASSWORD", PASSWORD)  # libpq's own variable works by itself
    assert PostgresSyncState(settings.url or "", "PGPASSWORD").schema_version() == 3


# --- the inbox: writers and processors side by side ---------------------------------------

INBOX_WRITER = """
import json, random, sys
from beanbill.sync.state_postgres import PostgresSyncState
state = PostgresSyncState(sys.argv[1], sys.argv[2])
ids = [f"evt_{index}" for index in range(int(sys.argv[3]))]
random.Random(int(sys.argv[4])).shuffle(ids)
kept = [i for i in ids if state.store_event("stripe", i, "invoice.paid", {"id": i})]
print(json.dumps(kept))
"""
PROCESSOR = """
import json, sys, time
from beanbill.sync.state_postgres import PostgresSyncState
state = PostgresSyncState(sys.argv[1], sys.argv[2])
claimed = []
deadline = time.monotonic() + 60
while "waiting" in state.inbox_counts("stripe") and time.monotonic() < deadline:
    batch = state.unprocessed_events("stripe", 10)
    if sys.argv[3] == "stall" and batch:
        print(json.dumps([e.event_id for e in batch]), flush=True)
        time.sleep(600)  # holds its claim until killed
    claimed += [e.event_id for e in batch]
    time.sleep(0.01)  # the work: interpret, post to the ledger
    state.mark_processed("stripe", {e.event_id: "posted" for e in batch})
print(json.dumps(claimed))
"""
EVENTS = 400


def test_inbox_writers_keep_each_event_once_and_processors_claim_it_once(
    settings: StateSettings,
) -> None:
    url, password_env = settings.url or "", settings.password_env
    state = PostgresSyncState(url, password_env)
    writers = [
        subprocess.Popen(script(INBOX_WRITER, settings, str(EVENTS), str(seed)),
                         stdout=subprocess.PIPE)
        for seed in range(3)
    ]  # fmt: skip
    kept = [json.loads(w.communicate(timeout=SCRIPT_SECONDS)[0]) for w in writers]
    assert sorted(i for k in kept for i in k) == sorted(f"evt_{i}" for i in range(EVENTS))
    assert state.inbox_counts("stripe") == {"waiting": EVENTS}

    staller = subprocess.Popen(
        script(PROCESSOR, settings, "stall"), stdout=subprocess.PIPE, text=True
    )
    assert staller.stdout is not None
    stalled = json.loads(staller.stdout.readline())  # claimed, never to be closed by it
    processors = [
        subprocess.Popen(script(PROCESSOR, settings, "work"), stdout=subprocess.PIPE)
        for _ in range(3)
    ]
    time.sleep(1.0)
    os.kill(staller.pid, signal.SIGKILL)  # its claim ends with its connection
    staller.wait()
    claimed = [json.loads(p.communicate(timeout=SCRIPT_SECONDS)[0]) for p in processors]
    everything = Counter(i for batch in claimed for i in batch)
    assert set(stalled) <= set(everything)  # taken over after the kill
    assert everything == Counter(f"evt_{i}" for i in range(EVENTS))  # once each
    assert state.inbox_counts("stripe") == {"posted": EVENTS}


# --- whole commands: `beanbill invoice` twice at once, `beanbill serve` twice ---------------


def postgres_workspace(
    root: Path, state: StateSettings, sync: dict[str, Any] | None = None
) -> Workspace:
    """October rated and posted for the tests' organizations, its state on PostgreSQL."""
    configured = copy.deepcopy(SETTINGS)
    configured["state"] = {"url": state.url, "password_env": state.password_env}
    configured["invoicing"] = {**configured.get("invoicing", {}), "credits_vat": "at_consumption"}
    configured["ledger"] = {"credit_purchase_account": "Assets:Bank:Operating"}
    if sync is not None:
        configured["sync"] = sync
    customers = [
        customer("fr-post", billing_mode="postpaid", vat_id="FR44732829320"),
        customer("team-a", billing_mode="postpaid", parent="fr-post"),
        customer("de-pre", billing_mode="prepaid", country="DE", vat_id="DE123456788"),
        customer("us-prov", billing_mode="provisioned", country="US"),
    ]
    workspace = write_workspace(root / "ws", configured, SMALL_CATALOG, customers)
    orgs = [("fr-post", 10), ("team-a", 3), ("de-pre", 20), ("us-prov", 8)]
    records = [record for org, hours in orgs for record in october_usage(org, hours)]
    ingest(workspace, [write_jsonl(root / "usage.jsonl", records)])
    rate_months(workspace, [OCTOBER])
    record_credit(workspace, "de-pre", "purchase", "1.00", date(2026, 10, 1), None, 100, "d1")
    record_credit(workspace, "us-prov", "purchase", "0.50", date(2026, 10, 1), None, 100, "u1")
    post(workspace, OCTOBER, date(2026, 11, 2))
    return workspace


def test_two_invoice_runs_at_once_one_killed_issue_each_invoice_once(
    settings: StateSettings, tmp_path: Path
) -> None:
    workspace = postgres_workspace(tmp_path, settings)
    command = [BEANBILL, "invoice", "-w", str(workspace.root), "--period", "2026-10",
               "--date", "2026-11-05"]  # fmt: skip
    first = subprocess.Popen(command, stderr=subprocess.DEVNULL)
    numbers = open_numbers(workspace)
    wait_until(lambda: numbers.exists() and bool(numbers.all()))  # the first one numbers
    second = subprocess.Popen(command, stderr=subprocess.PIPE)  # waits for the workspace
    os.kill(first.pid, signal.SIGKILL)  # numbered, maybe rendered or posted: not finished
    first.wait()
    _, problem = second.communicate(timeout=SCRIPT_SECONDS)
    assert second.returncode == 0, problem  # finished the first one's numbers
    again = subprocess.run(command, capture_output=True, text=True, timeout=SCRIPT_SECONDS)
    assert again.returncode == 0, again.stderr
    assigned = numbers.all()
    assert [a.value for a in assigned] == [1, 2, 3] and all(a.issued for a in assigned)
    keys = issued_keys(load_books(workspace.ledger_path, "EUR"))
    assert sorted(keys.values()) == [a.number for a in assigned]
    assert not (workspace.state_dir / "invoices.sqlite").exists()  # the server has them
    assert ledger_errors(workspace.ledger_path) == []


def stripe_txn_ids(workspace: Workspace) -> Counter[str]:
    books = load_books(workspace.ledger_path, "EUR")
    return Counter(
        entry.meta["txn-id"].split(":")[0]
        for entry in books.entries
        if "txn-id" in entry.meta and entry.meta["txn-id"].startswith("stripe-")
    )


def start_serve(workspace: Workspace, port: int) -> subprocess.Popen[bytes]:
    environment = {**os.environ, "STRIPE_SECRET_KEY": API_KEY, "STRIPE_WEBHOOK_SECRET": SECRET}
    process = subprocess.Popen(
        [BEANBILL, "serve", "-w", str(workspace.root), "--port", str(port)],
        env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    wait_for_port(port, process, 30)
    return process


def test_two_serve_replicas_post_every_event_once_while_one_is_killed(
    settings: StateSettings,
    tmp_path: Path,
    localstripe: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Both replicas receive every event (two endpoints at the peer, as behind a load
    balancer that retries elsewhere); one is killed -9 mid-burst. The survivor posts what
    the dead one had kept or claimed, and every payment and payout is booked once."""
    reset(localstripe)
    monkeypatch.setenv("STRIPE_SECRET_KEY", API_KEY)
    peer = {"api_base": localstripe, "timeout_seconds": 1, "requests_per_second": 100}
    sync = {"attempts": 8, "concurrency": 2, "max_wait_seconds": 1, "stripe": peer}
    workspace = postgres_workspace(tmp_path, settings, sync)
    issue(workspace, OCTOBER, ISSUE_DAY)
    state = open_sync_state(workspace)
    targets: list[DocumentTarget] = [*connectors(workspace)]
    pushed = push_all(issued_documents(workspace), targets, state, retry_policy(workspace), 2)
    assert not pushed.dead
    documents = {d.number: d for d in issued_documents(workspace)}
    ports = [free_port(), free_port()]
    replicas = [start_serve(workspace, port) for port in ports]
    register_webhook(localstripe, f"http://127.0.0.1:{ports[0]}/webhooks/stripe", SECRET)
    httpx.post(
        f"{localstripe}/_config/webhooks/replica-b",
        data={"url": f"http://127.0.0.1:{ports[1]}/webhooks/stripe", "secret": SECRET},
    ).raise_for_status()
    payable = [i for i in beanbill_invoices(localstripe) if i.total > 0]
    payouts = 12
    try:
        for invoice in payable:
            pay(localstripe, str(invoice.id))
        for _ in range(payouts):
            payout(localstripe, 10)
        time.sleep(0.3)
        replicas[0].send_signal(signal.SIGKILL)
        replicas[0].wait(timeout=10)
        expected = Counter({"stripe-payment": len(payable), "stripe-payout": payouts})
        wait_until(lambda: stripe_txn_ids(workspace) == expected)
        wait_until(lambda: "waiting" not in state.inbox_counts("stripe"))
    finally:
        for replica in replicas:
            replica.send_signal(signal.SIGTERM)
            replica.wait(timeout=10)
    assert stripe_txn_ids(workspace) == expected
    assert not (workspace.state_dir / "sync.sqlite").exists()  # the server has it
    assert ledger_errors(workspace.ledger_path) == []
    for invoice in payable:
        number = invoice.metadata.to_dict()["beanbill_number"] if invoice.metadata else ""
        assert balance(workspace, documents[number].buyer_reference or "").receivable_minor == 0


def filled_sqlite_state(state_dir: Path) -> SqliteSyncState:
    """A state in SQLite with a row in every table (text a copy could mangle included)."""
    state = SqliteSyncState(state_dir)
    state.record_attempt("INV-2026-000001", "stripe", None)
    state.mark_synced("INV-2026-000001", "stripe", {"invoice": "in_1", "note": "é ' \" \\"})
    state.record_attempt("INV-2026-000002", "tryton", "timeout")
    state.mark_dead("INV-2026-000002", "tryton", "refused: line\nbreak")
    state.store_event("stripe", "evt_1", "invoice.paid", {"id": "evt_1", "n": 1})
    state.store_event("stripe", "evt_2", "payout.paid", {"id": "evt_2", "n": 2})
    state.mark_processed("stripe", {"evt_1": "posted"})
    state.remember("stripe", "customer", "fr-post", "cus_1")
    state.set_status("stripe", "in_1", "INV-2026-000001", "paid", "card")
    state.record_delivery("INV-2026-000001", "email", 1, {"message": "<m@x>"}, "issued")
    state.record_crm("hubspot", "fr-post", "digest-1", "101", None)
    return state


def sync_view(state: Any) -> Any:
    """Everything a command reads of a sync state."""
    return (
        state.records(),
        state.inbox_counts("stripe"),
        state.remote_id("stripe", "customer", "fr-post"),
        state.statuses("stripe"),
        state.deliveries(),
        state.crm_companies("hubspot"),
    )


def test_the_sqlite_state_is_imported_once_and_never_overwritten(
    settings: StateSettings, tmp_path: Path
) -> None:
    """`beanbill sync import-sqlite`: every row reaches PostgreSQL as it was; a second run
    changes nothing; a database holding other rows is refused, never overwritten."""
    state_dir = tmp_path / "state"
    sqlite = filled_sqlite_state(state_dir)
    report = import_sqlite_state(state_dir, settings)
    assert not report.already_there and report.rows == 8
    postgres = PostgresSyncState(settings.url or "", settings.password_env)
    assert sync_view(postgres) == sync_view(sqlite)
    again = import_sqlite_state(state_dir, settings)
    assert again.already_there and again.rows == 8
    assert sync_view(postgres) == sync_view(sqlite)
    # A replica at work holds the inbox: the import is refused at once, not after a wait.
    assert [event.event_id for event in postgres.unprocessed_events("stripe", 10)] == ["evt_2"]
    with pytest.raises(StateImportError, match="in use by another beanbill"):
        import_sqlite_state(state_dir, settings)
    postgres.mark_processed("stripe", {"evt_2": "posted"})
    postgres.record_attempt("INV-2026-000003", "stripe", None)  # PostgreSQL moved on
    with pytest.raises(StateImportError, match="never overwritten"):
        import_sqlite_state(state_dir, settings)
    assert len(postgres.records()) == 3
    with pytest.raises(StateImportError, match=r"\[state\] url is not set"):
        import_sqlite_state(state_dir, StateSettings())


def test_an_import_is_refused_while_a_number_is_assigned_and_not_issued(
    settings: StateSettings, tmp_path: Path
) -> None:
    state_dir = tmp_path / "state"
    filled_sqlite_state(state_dir)
    InvoiceNumbers(state_dir).assign("INV", "invoice:fr-post:2026-10", date(2026, 11, 2))
    with pytest.raises(StateImportError, match="assigned and not issued") as refused:
        import_sqlite_state(state_dir, settings)
    # [state] url is set (the import needs it): the message says how to reach SQLite again.
    assert "take [state] url out of beanbill.toml, run `beanbill invoice`" in str(refused.value)
    postgres = PostgresSyncState(settings.url or "", settings.password_env)
    assert postgres.records() == []  # nothing copied


def test_an_import_is_refused_while_a_server_on_sqlite_holds_the_inbox(
    settings: StateSettings, tmp_path: Path
) -> None:
    """A `serve` still running on the SQLite file would keep webhooks the copy misses."""
    state_dir = tmp_path / "state"
    filled_sqlite_state(state_dir)
    with (state_dir / WRITER_LOCK_FILE).open("a") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)  # as the writer holds it
        with pytest.raises(StateImportError, match="a `beanbill serve` is running"):
            import_sqlite_state(state_dir, settings)
    postgres = PostgresSyncState(settings.url or "", settings.password_env)
    assert postgres.records() == []  # nothing copied
    assert import_sqlite_state(state_dir, settings).rows == 8  # once it has stopped


def test_an_unreadable_sqlite_state_is_refused_with_its_fix_before_anything_is_copied(
    settings: StateSettings, tmp_path: Path
) -> None:
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "sync.sqlite").write_bytes(b"this is not a database" * 100)
    with pytest.raises(StateImportError, match=r"sync\.sqlite cannot be read .*restore it"):
        import_sqlite_state(damaged, settings)
    postgres = PostgresSyncState(settings.url or "", settings.password_env)
    assert postgres.records() == []  # nothing copied

    state_dir = tmp_path / "state"
    sqlite = filled_sqlite_state(state_dir)
    numbering = state_dir / "invoices.sqlite"
    numbering.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StateImportError, match=r"invoices\.sqlite cannot be read .*aside"):
        import_sqlite_state(state_dir, settings)
    assert postgres.records() == []
    numbering.rename(state_dir / "invoices.sqlite.damaged")  # the fix it gives
    assert import_sqlite_state(state_dir, settings).rows == 8
    assert sync_view(postgres) == sync_view(sqlite)


# --- recovery: each message gives the fix for the store the workspace uses ----------------


def issued_workspace(root: Path, state: StateSettings) -> Workspace:
    """Two organizations' October issued (INV-2026-000001 and 000002), the state where
    ``state`` says: SQLite files in the workspace, or the database of its URL."""
    configured = copy.deepcopy(SETTINGS)
    if state.url is not None:
        configured["state"] = {"url": state.url, "password_env": state.password_env}
    orgs = [("a-org", 10), ("b-org", 5)]
    workspace = write_workspace(
        root / "ws", configured, SMALL_CATALOG, [customer(org) for org, _ in orgs]
    )
    records = [record for org, hours in orgs for record in october_usage(org, hours)]
    ingest(workspace, [write_jsonl(root / "usage.jsonl", records)])
    rate_months(workspace, [OCTOBER])
    post(workspace, OCTOBER, date(2026, 11, 2))
    assert issue(workspace, OCTOBER, ISSUE_DAY).issued == ("INV-2026-000001", "INV-2026-000002")
    return workspace


def forget_number(workspace: Workspace, number: str) -> None:
    """Make the numbering state older than the ledger (an old copy put back, say)."""
    state = workspace.settings.state
    if state.url is None:
        path = workspace.state_dir / "invoices.sqlite"
        with contextlib.closing(sqlite3.connect(path)) as connection, connection:
            connection.execute("DELETE FROM assigned WHERE number = ?", (number,))
        return
    with psycopg.connect(state.url, password=PASSWORD, autocommit=True) as connection:
        connection.execute("DELETE FROM assigned WHERE number = %s", (number,))


def follow(advice: str, workspace: Workspace) -> None:
    """Do what ``rebuild_advice`` says, as a user would from its words."""
    state = workspace.settings.state
    if state.url is None:
        moved = re.fullmatch(
            r"move (\S+) aside and run again: it is rebuilt from the ledger", advice
        )
        assert moved is not None and Path(moved[1]) == workspace.state_dir / "invoices.sqlite"
        Path(moved[1]).rename(workspace.state_dir / "invoices.sqlite.old")
        return
    assert "sqlite" not in advice and "[state] url" in advice
    saved = re.search(r"pg_dump ((?:--table=\w+ ?)+)", advice)
    emptied = re.search(r"TRUNCATE [\w, ]+\w", advice)
    assert saved is not None and emptied is not None
    pg_dump = binaries()
    assert pg_dump is not None
    dump = subprocess.run(
        [str(pg_dump / "pg_dump"), *saved[1].split(), "--data-only", f"--dbname={state.url}"],
        capture_output=True, text=True, check=True, timeout=SCRIPT_SECONDS,
        env={**os.environ, "PGPASSWORD": PASSWORD},
    )  # fmt: skip
    assert "INV-2026-000001" in dump.stdout  # saved before it is emptied
    with psycopg.connect(state.url, password=PASSWORD, autocommit=True) as connection:
        connection.execute(emptied[0])


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_numbering_older_than_the_ledger_is_rebuilt_by_the_fix_for_its_store(
    backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fix named for a stale numbering state is the one for where it lives: the SQLite
    file moved aside, or on PostgreSQL its tables saved and emptied (never the SQLite file
    when ``[state] url`` is set); done, the next run rebuilds it from the ledger."""
    with backend_settings(backend, monkeypatch) as state:
        workspace = issued_workspace(tmp_path, state)
        forget_number(workspace, "INV-2026-000002")
        books = load_books(workspace.ledger_path, "EUR")
        with pytest.raises(InvoicingError, match="lacks 1 number") as refused:
            numbering_state(workspace, books)
        assert rebuild_advice(workspace) in str(refused.value)
        first = load_document(workspace.invoices_dir / "INV-2026-000001.json")
        other = load_document(workspace.invoices_dir / "INV-2026-000002.json")
        with pytest.raises(InvoicingError, match="never overwritten") as overwritten:
            write_documents(workspace, replace(other, number=first.number))
        assert rebuild_advice(workspace) in str(overwritten.value)
        follow(rebuild_advice(workspace), workspace)
        rebuilt = numbering_state(workspace, books).all()
        assert [(a.number, a.issued) for a in rebuilt] == [
            ("INV-2026-000001", True),
            ("INV-2026-000002", True),
        ]
        assert issue(workspace, OCTOBER, ISSUE_DAY).issued == ()  # nothing issued twice

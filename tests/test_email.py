"""The e-mail target against a real SMTP server (aiosmtpd on 127.0.0.1, beanbill.smtp_peer):
messages parsed back, attachments byte for byte, one message per document across reruns,
busy and refusing servers, STARTTLS and AUTH, a kill -9 mid-batch, a resend on request."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

import facturx
import pytest
from click.testing import CliRunner
from pypdf import PdfReader

from beanbill.cli import main
from beanbill.connectors.email import EmailConnector, checked_recipients, message_id
from beanbill.exits import EXIT_ATTENTION, EXIT_ERROR, EXIT_OK
from beanbill.ledger.invoicing.documents import DocumentType, load_document
from beanbill.ledger.invoicing.issue import issue
from beanbill.ledger.post import post, record_credit
from beanbill.rating.ingest import ingest
from beanbill.rating.rate import rate_months
from beanbill.rating.workspace import Workspace
from beanbill.smtp_peer import SmtpPeer, running_smtp
from beanbill.sync.push import issued_documents
from beanbill.sync.retry import PermanentError
from beanbill.sync.state import PushStatus, SqliteSyncState
from beanbill.sync_commands import run_push
from beanbill.targets import delivery_targets
from tests.einvoice_validation import validate_cii
from tests.support import BEANBILL, customer, october_usage, write_jsonl
from tests.test_tryton import ISSUE_DAY, OCTOBER, october_issued

MakeWorkspace = Callable[..., Workspace]
SENDER = "billing@nimbus.example"
FINANCE = "finance@nimbus.example"


@pytest.fixture
def smtp() -> Iterator[SmtpPeer]:
    with running_smtp() as peer:
        yield peer


def email_settings(peer: SmtpPeer, **extra: Any) -> dict[str, Any]:
    return {
        "host": peer.host,
        "port": peer.port,
        "security": "none",
        "sender": SENDER,
        "bcc": [FINANCE],
        "timeout_seconds": 5,
        **extra,
    }


def mailed(
    make_workspace: MakeWorkspace, tmp_path: Path, peer: SmtpPeer, name: str = "ws", **extra: Any
) -> Workspace:
    sync = {"email": email_settings(peer, **extra)}
    return october_issued(make_workspace, tmp_path, sync, name=name)


def by_document(peer: SmtpPeer) -> Counter[str]:
    return Counter(str(r.parsed()["X-Beanbill-Document"]) for r in peer.received)


def test_each_document_is_one_message_with_its_issued_files_and_reruns_send_nothing(
    make_workspace: MakeWorkspace, tmp_path: Path, smtp: SmtpPeer
) -> None:
    workspace = mailed(make_workspace, tmp_path, smtp)
    documents = issued_documents(workspace)
    assert run_push(workspace).synced == [d.number for d in documents]
    run_push(workspace)
    run_push(workspace)
    assert by_document(smtp) == Counter({d.number: 1 for d in documents})
    customers = workspace.customers.by_id()
    for received in smtp.received:
        message = received.parsed()
        number = str(message["X-Beanbill-Document"])
        document = load_document(workspace.invoices_dir / f"{number}.json")
        billing = customers[document.buyer_reference or ""].email
        assert received.recipients == (billing, FINANCE)  # BCC: in the envelope only
        assert message["To"] == billing and message["Bcc"] is None
        assert message["From"].addresses[0].addr_spec == SENDER
        assert message["Message-ID"] == message_id(
            workspace.settings.sync.workspace_id_of(workspace.settings.seller), document, SENDER
        )
        attachments = {a.get_filename(): a.get_content() for a in message.iter_attachments()}
        assert attachments == {
            f"{number}.pdf": (workspace.invoices_dir / f"{number}.pdf").read_bytes(),
            f"{number}.ubl.xml": (workspace.invoices_dir / f"{number}.ubl.xml").read_bytes(),
        }
        text = message.get_body(("plain",)).get_content()
        html = message.get_body(("html",)).get_content()
        assert number in text and number in html and document.buyer.name in text
        assert document.due_date is not None and document.due_date.isoformat() in text
    # The PDF's embedded Factur-X extracts from the message and is a valid e-invoice.
    first = smtp.received[0].parsed()
    pdf = next(
        a.get_content() for a in first.iter_attachments() if a.get_filename().endswith("pdf")
    )
    assert PdfReader(io.BytesIO(pdf)).pdf_header.startswith("%PDF-")
    _, xml = facturx.get_facturx_xml_from_pdf(io.BytesIO(pdf), check_xsd=True)
    assert validate_cii(xml, french_seller=True) == []
    state = SqliteSyncState(workspace.state_dir)
    assert {r.status for r in state.records("email")} == {PushStatus.SYNCED}


def test_a_busy_server_is_retried_and_a_refusal_is_a_dead_letter_with_its_text(
    make_workspace: MakeWorkspace, tmp_path: Path, smtp: SmtpPeer
) -> None:
    workspace = mailed(make_workspace, tmp_path, smtp)
    numbers = [d.number for d in issued_documents(workspace)]
    smtp.answer_data("451 4.3.0 Mail server temporarily rejected message", "421 4.7.0 Try later")
    refused = customer("fr-small").get("email") or "billing@fr-small.example"
    smtp.refuse(refused, "550 5.1.1 <billing@fr-small.example>: Recipient address rejected")
    summary = run_push(workspace)
    state = SqliteSyncState(workspace.state_dir)
    dead = {document: reason for document, _, reason in summary.dead}
    assert len(dead) == 1
    (number, reason) = next(iter(dead.items()))
    assert "550 5.1.1" in reason and "Recipient address rejected" in reason
    assert by_document(smtp) == Counter({n: 1 for n in numbers})
    (copy,) = [r for r in smtp.received if r.parsed()["X-Beanbill-Document"] == number]
    assert copy.recipients == (FINANCE,)  # the customer got nothing: not delivered
    assert sum(r.attempts for r in state.records("email")) >= len(numbers) + 2
    record = state.get(number, "email")
    assert record is not None and record.status is PushStatus.DEAD
    assert record.remote_ids["message_id"].startswith(f"<{number}.")  # known before sending
    # Once the address is fixed, `sync retry` re-queues it and the next push sends it once.
    smtp.clear()
    assert state.requeue_dead("email") == 1
    run_push(workspace)
    assert by_document(smtp) == Counter({number: 1})


def test_a_refused_address_among_accepted_ones_is_recorded_and_never_resent(
    make_workspace: MakeWorkspace, tmp_path: Path, smtp: SmtpPeer
) -> None:
    workspace = mailed(make_workspace, tmp_path, smtp)
    smtp.refuse(FINANCE, "550 5.7.1 finance mailbox full")
    summary = run_push(workspace)
    assert not summary.dead
    state = SqliteSyncState(workspace.state_dir)
    records = state.records("email")
    assert all("550 5.7.1" in r.remote_ids["refused"] for r in records)
    run_push(workspace)
    assert len(smtp.received) == len(records)


def test_starttls_and_auth_with_the_password_from_the_environment(
    make_workspace: MakeWorkspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    certificate, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(certificate)],
        check=True, capture_output=True,
    )  # fmt: skip
    monkeypatch.setenv("SMTP_PASSWORD", "s3cret-pass")
    with running_smtp(certificate=(certificate, key), password="s3cret-pass") as peer:
        tls = {"security": "starttls", "user": "beanbill", "ca_file": str(certificate)}
        workspace = mailed(make_workspace, tmp_path, peer, **tls)
        summary = run_push(workspace)
        assert summary.synced and not summary.dead and not summary.unstarted
        assert peer.handler.logins and set(peer.handler.logins) == {"beanbill"}
        assert len(peer.received) == len(summary.synced)
        # A wrong password: the target does not start, nothing is sent, the others go on.
        monkeypatch.setenv("SMTP_PASSWORD", "wrong")
        peer.clear()
        document = issued_documents(workspace)[0]
        SqliteSyncState(workspace.state_dir).requeue_dead()
        connector = delivery_targets(workspace, SqliteSyncState(workspace.state_dir))[0]
        with pytest.raises(PermanentError, match="535"):
            connector.check()
        assert peer.received == [] and document.number
    # No STARTTLS offered while it is required: refused, never sent in clear.
    with running_smtp() as plain:
        workspace = mailed(make_workspace, tmp_path, plain, security="starttls", name="plain")
        result = CliRunner().invoke(main, ["sync", "push", "-w", str(workspace.root)])
        assert result.exit_code == EXIT_ERROR
        assert "offers no STARTTLS" in result.output and "Traceback" not in result.output
        assert plain.received == []


def test_a_missing_password_or_a_malformed_address_is_a_clear_error_before_sending(
    make_workspace: MakeWorkspace, tmp_path: Path, smtp: SmtpPeer
) -> None:
    workspace = mailed(make_workspace, tmp_path, smtp, user="beanbill")
    os.environ.pop("SMTP_PASSWORD", None)
    result = CliRunner().invoke(main, ["sync", "push", "-w", str(workspace.root)])
    assert result.exit_code == EXIT_ERROR and "SMTP_PASSWORD is not set" in result.output
    customers = (workspace.root / "customers.toml").read_text()
    broken = customers.replace("billing@fr-small.example", "billing@fr-small")
    (workspace.root / "customers.toml").write_text(broken)
    result = CliRunner().invoke(main, ["check", "-w", str(workspace.root)])
    assert result.exit_code == EXIT_ERROR
    assert "email" in result.output and "billing@fr-small" in result.output
    assert "Traceback" not in result.output and smtp.received == []
    assert checked_recipients(["Billing@Bücher.example"]) == ("Billing@xn--bcher-kva.example",)
    for hostile in ["", "a@b.example\r\nBcc: x@evil.example", "a b@c.example", "a@-x-.example"]:
        with pytest.raises(PermanentError, match="address"):
            checked_recipients([hostile] if hostile else [])


def test_customer_text_cannot_add_headers_or_markup(
    make_workspace: MakeWorkspace, tmp_path: Path, smtp: SmtpPeer
) -> None:
    hostile = 'Evil "Corp" <x@evil.example>, Bcc: y@evil.example <script>alert(1)</script>'
    workspace = make_workspace(
        customers=[
            customer(
                "acme", name=hostile, billing_emails=["a@acme.example", "jürgen@bücher.example"]
            )
        ],
        sync={"email": email_settings(smtp, sender_name='Nimbus "Billing", Inc.')},
    )
    ingest(workspace, [write_jsonl(tmp_path / "u.jsonl", october_usage("acme", 5))])
    rate_months(workspace, [OCTOBER])
    post(workspace, OCTOBER, date(2026, 11, 2))
    issue(workspace, OCTOBER, ISSUE_DAY)
    run_push(workspace)
    (received,) = smtp.received
    assert received.recipients == ("a@acme.example", "jürgen@bücher.example", FINANCE)
    message = received.parsed()
    assert [a.addr_spec for a in message["To"].addresses] == [
        "a@acme.example",
        "jürgen@bücher.example",
    ]
    assert message["From"].addresses[0].display_name == 'Nimbus "Billing", Inc.'
    assert message["Bcc"] is None
    html = message.get_body(("html",)).get_content()
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "evil" not in str(message["To"]) + str(message["From"]) + str(message["Subject"])


def test_prepayment_invoices_and_credit_notes_are_sent_and_a_payment_link_is_shown(
    make_workspace: MakeWorkspace, tmp_path: Path, smtp: SmtpPeer
) -> None:
    from beanbill.ledger.invoicing.corrections import credit_note

    workspace = mailed(make_workspace, tmp_path, smtp)
    state = SqliteSyncState(workspace.state_dir)
    invoice = next(d for d in issued_documents(workspace) if d.buyer_reference == "fr-post")
    link = "https://invoice.stripe.com/i/acct_1/test_abc?s=ap"
    state.record_attempt(invoice.number, "stripe", None)  # as the Stripe target leaves it
    state.mark_synced(invoice.number, "stripe", {"invoice": "in_1", "hosted_invoice_url": link})
    run_push(workspace)
    note, _ = credit_note(workspace, invoice.number, date(2026, 11, 7), "Wrong address")
    run_push(workspace)
    kinds = {}
    for received in smtp.received:
        message = received.parsed()
        kinds[str(message["X-Beanbill-Document"])] = message
    assert "Credit note" in str(kinds[note]["Subject"]) and invoice.number in str(
        kinds[note]["Subject"]
    )
    paying = kinds[invoice.number]
    assert link in paying.get_body(("plain",)).get_content()
    assert f'href="{link}"' in paying.get_body(("html",)).get_content()


def test_a_prepayment_invoice_is_sent_though_processors_never_get_it(
    make_workspace: MakeWorkspace, smtp: SmtpPeer
) -> None:
    workspace = make_workspace(
        sync={"email": email_settings(smtp)},
        ledger={"credit_purchase_account": "Assets:Bank:Operating"},
    )
    record_credit(workspace, "acme", "purchase", "100.00", date(2026, 10, 1), None, 1, "pack")
    assert issued_documents(workspace) == []  # what processors and ERPs are pushed
    assert run_push(workspace).synced == ["INV-2026-000001"]
    (received,) = smtp.received
    message = received.parsed()
    number = str(message["X-Beanbill-Document"])
    assert load_document(workspace.invoices_dir / f"{number}.json").type is (
        DocumentType.PREPAYMENT_INVOICE
    )
    assert "It is paid" in message.get_body(("plain",)).get_content()
    assert "due" not in str(message["Subject"])


def test_issued_since_leaves_the_history_unsent(
    make_workspace: MakeWorkspace, tmp_path: Path, smtp: SmtpPeer
) -> None:
    workspace = mailed(make_workspace, tmp_path, smtp, issued_since="2026-11-06")
    summary = run_push(workspace)
    assert summary.synced == [] and smtp.received == []
    result = CliRunner().invoke(main, ["sync", "status", "-w", str(workspace.root)])
    assert result.exit_code == EXIT_OK and "to push" not in result.output


def test_invoice_send_sends_again_on_request_and_records_it_beside_the_push(
    make_workspace: MakeWorkspace, tmp_path: Path, smtp: SmtpPeer
) -> None:
    workspace = mailed(make_workspace, tmp_path, smtp)
    run_push(workspace)
    number = issued_documents(workspace)[0].number
    state = SqliteSyncState(workspace.state_dir)
    before = state.get(number, "email")
    for _ in range(2):
        result = CliRunner().invoke(main, ["invoice", "send", number, "-w", str(workspace.root)])
        assert result.exit_code == EXIT_OK, result.output
    assert state.get(number, "email") == before
    deliveries = state.deliveries(number)
    assert [d.sequence for d in deliveries] == [1, 2]
    resent = [r.parsed() for r in smtp.received if r.parsed()["X-Beanbill-Document"] == number]
    ids = [str(m["Message-ID"]) for m in resent]
    assert len(set(ids)) == 3 and before is not None
    assert all(str(m["References"]) == before.remote_ids["message_id"] for m in resent[1:])
    result = CliRunner().invoke(main, ["invoice", "send", "../x", "-w", str(workspace.root)])
    assert result.exit_code == EXIT_ERROR and "Traceback" not in result.output


def test_kill_9_mid_batch_then_rerun_sends_each_document_once_or_at_worst_twice_same_id(
    make_workspace: MakeWorkspace, tmp_path: Path
) -> None:
    outbox = tmp_path / "outbox"
    with running_smtp(outbox=outbox) as peer:
        workspace = mailed(make_workspace, tmp_path, peer)
        numbers = [d.number for d in issued_documents(workspace)]
        peer.handler.delay_seconds = 0.4  # slow enough to be killed between messages
        environment = {**os.environ, "PYTHONUNBUFFERED": "1"}
        push = subprocess.Popen(
            [BEANBILL, "sync", "push", "-w", str(workspace.root)],
            env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while len(peer.received) < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        push.send_signal(signal.SIGKILL)
        push.wait()
        killed_after = len(peer.received)
        assert 1 <= killed_after < len(numbers)
        state = SqliteSyncState(workspace.state_dir)
        pending = [r for r in state.records("email") if r.status is PushStatus.PENDING]
        assert all(r.remote_ids.get("message_id") for r in pending)  # recorded before sending
        peer.handler.delay_seconds = 0.0
        rerun = subprocess.run([BEANBILL, "sync", "push", "-w", str(workspace.root)])
        assert rerun.returncode == EXIT_OK
        counts = by_document(peer)
        assert set(counts) == set(numbers)
        twice = [n for n, c in counts.items() if c > 1]
        assert all(c <= 2 for c in counts.values())
        assert len(twice) <= workspace.settings.sync.concurrency
        for number in twice:  # a resend carries the same Message-ID
            ids = {r.message_id for r in peer.received if f"<{number}." in r.message_id}
            assert len(ids) == 1
        assert sorted(p.name for p in outbox.iterdir())[0] == "000001.eml"


def test_sync_status_shows_the_email_target_and_exits_1_on_a_dead_letter(
    make_workspace: MakeWorkspace, tmp_path: Path, smtp: SmtpPeer
) -> None:
    workspace = mailed(make_workspace, tmp_path, smtp)
    smtp.answer_data(*["554 5.7.1 rejected by policy"] * 10)
    run_push(workspace)
    result = CliRunner().invoke(main, ["sync", "status", "-w", str(workspace.root)])
    assert result.exit_code == EXIT_ATTENTION
    assert "email" in result.output and "554 5.7.1 rejected by policy" in result.output


def test_the_connector_is_a_document_target_only(
    make_workspace: MakeWorkspace, tmp_path: Path, smtp: SmtpPeer
) -> None:
    workspace = mailed(make_workspace, tmp_path, smtp)
    (connector,) = delivery_targets(workspace, SqliteSyncState(workspace.state_dir))
    assert isinstance(connector, EmailConnector) and connector.delivers_prepayments
    assert not hasattr(connector, "parse_webhook")  # `serve` never routes webhooks to it

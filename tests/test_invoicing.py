"""Invoices derived from the ledger: every mode, central invoicing, credit notes, crashes."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from datetime import date
from pathlib import Path

import pytest
from beancount import loader

from beanbill.ledger.books import load_books
from beanbill.ledger.invoicing import InvoicingError
from beanbill.ledger.invoicing.corrections import credit_note
from beanbill.ledger.invoicing.due import issued_keys
from beanbill.ledger.invoicing.issue import issue, preview
from beanbill.ledger.invoicing.numbering import InvoiceNumbers
from beanbill.ledger.invoicing.render import money
from beanbill.ledger.post import balance, post, record_credit
from beanbill.rating.ingest import ingest
from beanbill.rating.periods import Month
from beanbill.rating.rate import rate_months
from beanbill.rating.workspace import Workspace
from tests.einvoice_validation import validate_cii, validate_ubl
from tests.support import BEANBILL, customer, october_usage, write_jsonl

OCTOBER = Month(2026, 10)
ISSUE_DAY = date(2026, 11, 5)


@pytest.fixture
def books(make_workspace: Callable[..., Workspace], tmp_path: Path) -> Workspace:
    workspace = make_workspace(
        customers=[
            customer("fr-post", billing_mode="postpaid", vat_id="FR44732829320", siren="732829320",
                     addons=[{"addon": "backup", "start": date(2026, 1, 1)}]),
            customer("team-a", billing_mode="postpaid", parent="fr-post"),
            customer("de-pre", billing_mode="prepaid", country="DE", vat_id="DE123456788"),
            customer("us-prov", billing_mode="provisioned", country="US"),
        ],
        # VAT on credit at consumption: these tests are about consumption invoices and
        # their numbers; prepayment invoices have their own (tests/test_credits_vat.py).
        invoicing={"credits_vat": "at_consumption"},
    )  # fmt: skip
    records = [
        *october_usage("fr-post", 10),
        *october_usage("team-a", 3, 6),
        *october_usage("de-pre", 20),
        *october_usage("us-prov", 8),
    ]
    ingest(workspace, [write_jsonl(tmp_path / "u.jsonl", records)])
    rate_months(workspace, [OCTOBER])
    record_credit(workspace, "de-pre", "purchase", "1.00", date(2026, 10, 1), None, 100, "de-1")
    record_credit(workspace, "us-prov", "purchase", "0.50", date(2026, 10, 1), None, 100, "us-1")
    post(workspace, OCTOBER, date(2026, 11, 2))
    return workspace


def receivable(workspace: Workspace, org: str) -> int:
    return balance(workspace, org).receivable_minor


def test_every_mode_is_invoiced_from_the_ledger_and_validates(books: Workspace) -> None:
    summary = issue(books, OCTOBER, ISSUE_DAY)
    assert summary.issued == ("INV-2026-000001", "INV-2026-000002", "INV-2026-000003")
    _, errors, _ = loader.load_file(str(books.ledger_path))
    assert errors == []
    for number in summary.issued:
        folder = books.invoices_dir
        assert validate_cii((folder / f"{number}.cii.xml").read_bytes(), french_seller=True) == []
        assert validate_ubl((folder / f"{number}.ubl.xml").read_bytes(), french_seller=True) == []
        assert (folder / f"{number}.pdf").read_bytes().startswith(b"%PDF")
    keys = issued_keys(load_books(books.ledger_path, "EUR"))
    assert sorted(keys) == [
        "invoice:de-pre:2026-10",
        "invoice:fr-post:2026-10",
        "invoice:us-prov:2026-10",
    ]
    for org in ("fr-post", "de-pre"):
        assert balance(books, org).unbilled_minor == 0  # all unbilled consumption invoiced
    assert receivable(books, "team-a") == 0  # invoiced centrally, through its parent
    html = (books.invoices_dir / f"{keys['invoice:fr-post:2026-10']}.html").read_text()
    assert "team-a Ltd" in html and "Subtotal team-a Ltd" in html and "Backup" in html
    reverse = (books.invoices_dir / f"{keys['invoice:de-pre:2026-10']}.html").read_text()
    assert "Reverse charge" in reverse and "Prepaid credits applied" in reverse
    assert "art. 196" in reverse  # the legal basis is cited
    provisioned = (books.invoices_dir / f"{keys['invoice:us-prov:2026-10']}.html").read_text()
    assert "Credit provision for November 2026" in provisioned
    assert "Regularization of over-consumption in October 2026" in provisioned
    assert "Not subject to VAT" in provisioned and "art. 259-1" in provisioned
    assert balance(books, "us-prov").credits_minor > 0  # provision for November, over-use settled


def test_issuing_twice_issues_nothing_and_drafts_write_nothing(books: Workspace) -> None:
    drafts = preview(books, OCTOBER, ISSUE_DAY)
    assert [d.number.startswith("DRAFT-") for d in drafts] == [True, True, True]
    assert not books.invoices_dir.exists() and InvoiceNumbers(books.state_dir).all() == []
    first = issue(books, OCTOBER, ISSUE_DAY)
    before = {p: p.read_bytes() for p in books.root.rglob("*.beancount")}
    assert issue(books, OCTOBER, date(2026, 11, 6)).issued == ()
    assert {p: p.read_bytes() for p in books.root.rglob("*.beancount")} == before
    keys = issued_keys(load_books(books.ledger_path, "EUR"))
    for draft in drafts:
        number = keys[f"invoice:{draft.buyer_reference}:2026-10"]
        html = (books.invoices_dir / f"{number}.html").read_text()
        assert f'Total excl. VAT</td><td class="num">{money(draft.net_minor, "EUR")}' in html
    assert len(first.issued) == 3


def test_a_credit_note_cancels_and_the_period_is_invoiced_again(books: Workspace) -> None:
    issue(books, OCTOBER, ISSUE_DAY)
    keys = issued_keys(load_books(books.ledger_path, "EUR"))
    number = keys["invoice:fr-post:2026-10"]
    owed = receivable(books, "fr-post")
    assert owed > 0
    credit_number, pdf = credit_note(books, number, date(2026, 11, 10), "Wrong billing address")
    assert credit_number == "CN-2026-000001" and pdf.exists()
    cii = (books.invoices_dir / f"{credit_number}.cii.xml").read_bytes()
    assert b"<rsm:ExchangedDocument>" in cii and b">381<" in cii and number.encode() in cii
    assert validate_cii(cii, french_seller=True) == []
    assert receivable(books, "fr-post") == 0
    with pytest.raises(InvoicingError, match="already cancelled"):
        credit_note(books, number, date(2026, 11, 10), "Wrong billing address")
    again = issue(books, OCTOBER, date(2026, 11, 11))
    assert again.issued == ("INV-2026-000004",)
    assert receivable(books, "fr-post") == owed
    assert "invoice:fr-post:2026-10:r2" in issued_keys(load_books(books.ledger_path, "EUR"))


@pytest.mark.parametrize("step", ["assign", "render", "ledger"])
def test_a_crash_at_any_step_neither_skips_nor_reuses_a_number(books: Workspace, step: str) -> None:
    command = [
        BEANBILL,
        "invoice",
        "-w",
        str(books.root),
        "--period",
        "2026-10",
        "--date",
        "2026-11-05",
    ]
    crashed = subprocess.run(
        command, env={**os.environ, "BEANBILL_CRASH_AFTER": step}, capture_output=True
    )
    assert crashed.returncode == 86
    _, errors, _ = loader.load_file(str(books.ledger_path))
    assert errors == []
    assert [a.issued for a in InvoiceNumbers(books.state_dir).all()] == [False, False, False]
    finished = subprocess.run(command, capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr
    assigned = InvoiceNumbers(books.state_dir).all()
    assert [a.value for a in assigned] == [1, 2, 3] and all(a.issued for a in assigned)
    keys = issued_keys(load_books(books.ledger_path, "EUR"))
    assert sorted(keys.values()) == [a.number for a in assigned]
    assert {a.issue_date for a in assigned} == {ISSUE_DAY}


def test_an_invoice_that_its_rated_detail_no_longer_explains_is_refused(books: Workspace) -> None:
    lines = books.rated_dir / "month=2026-10" / "lines.parquet"
    import duckdb

    duckdb.execute(
        f"COPY (SELECT * REPLACE (amount_atto + 1 AS amount_atto) FROM '{lines}') "
        f"TO '{lines}.tmp' (FORMAT parquet)"
    )
    os.replace(f"{lines}.tmp", lines)
    summary = issue(books, OCTOBER, ISSUE_DAY)  # refused alone: the others are issued
    refused = dict(summary.refused)
    assert sorted(refused) == ["invoice:de-pre:2026-10", "invoice:fr-post:2026-10"]
    assert all("no longer explains the posting" in reason for reason in refused.values())
    numbered = [a.document_key for a in InvoiceNumbers(books.state_dir).all()]
    assert numbered == ["invoice:us-prov:2026-10"]  # no number waits on a broken invoice


def test_coupons_discount_the_invoice_and_the_revenue(
    make_workspace: Callable[..., Workspace], tmp_path: Path
) -> None:
    coupons = [
        {"id": "WELCOME10", "percent": "10", "valid_from": date(2026, 10, 1),
         "valid_to": date(2026, 12, 31)},
        {"id": "NET2", "amount": "0.02", "family": "Network"},
        {"id": "EXPIRED", "percent": "50", "valid_to": date(2026, 9, 30)},
    ]  # fmt: skip
    workspace = make_workspace(customers=[customer("fr-post", coupons=coupons, siren="732829320")])
    ingest(workspace, [write_jsonl(tmp_path / "u.jsonl", october_usage("fr-post", 10))])
    rate_months(workspace, [OCTOBER])
    post(workspace, OCTOBER, date(2026, 11, 2))
    [draft] = preview(workspace, OCTOBER, ISSUE_DAY)
    discounts = [line for line in draft.lines if line.description.startswith("Discount")]
    before = sum(line.net_minor for line in draft.lines if line not in discounts)
    assert [line.net_minor for line in discounts] == [-round(before / 10), -2]
    assert all(line.quantity == -1 and line.unit_price > 0 for line in discounts)  # BR-27
    [number] = issue(workspace, OCTOBER, ISSUE_DAY).issued
    assert validate_cii((workspace.invoices_dir / f"{number}.cii.xml").read_bytes(), True) == []
    assert validate_ubl((workspace.invoices_dir / f"{number}.ubl.xml").read_bytes(), True) == []
    books = load_books(workspace.ledger_path, "EUR")
    assert books.balances(["Income:Discounts"]) == {
        "Income:Discounts": -sum(line.net_minor for line in discounts)
    }
    assert receivable(workspace, "fr-post") == draft.due_minor

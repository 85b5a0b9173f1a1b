"""Credits and VAT in the books: prepayment invoices, grants as price reductions, OSS, and
the minimum invoice amount — through the real commands, ledger checked by Beancount.

Amounts are whole: 1.00 EUR per GB of egress, so each expectation is a sum one can check
by hand (French seller, 20 % VAT).
"""

from __future__ import annotations

import os
import subprocess
import tomllib
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from beancount import loader

from beanbill.examples import write_toml
from beanbill.ledger.accounts import DISCOUNTS, PROMOTIONS, VAT_OUTPUT
from beanbill.ledger.books import load_books
from beanbill.ledger.invoicing import InvoicingError
from beanbill.ledger.invoicing.corrections import credit_note
from beanbill.ledger.invoicing.documents import DocumentType, load_document
from beanbill.ledger.invoicing.due import issued_keys
from beanbill.ledger.invoicing.issue import issue, preview
from beanbill.ledger.post import post, record_credit
from beanbill.rating.ingest import ingest
from beanbill.rating.periods import Month
from beanbill.rating.rate import rate_months
from beanbill.rating.workspace import SETTINGS_FILE, Workspace
from tests.einvoice_validation import validate_cii, validate_ubl
from tests.support import BEANBILL, customer, egress_meter, write_jsonl

OCTOBER = Month(2026, 10)
ISSUE_DAY = date(2026, 11, 5)
PURCHASE_ACCOUNT = "Assets:Bank:Operating"
CATALOG: dict[str, Any] = {"meter": [egress_meter([{"effective": date(2026, 1, 1), "price": "1"}])]}


def egress(org: str, gigabytes: str, day: int = 5) -> dict[str, str]:
    return {"id": f"{org}-{day}-{gigabytes}", "org": org, "resource": f"{org}/lb",
            "meter": "egress", "at": f"2026-10-{day:02d}T12:00:00Z",
            "quantity": gigabytes}  # fmt: skip


def balances(workspace: Workspace, *accounts: str) -> list[int]:
    books = load_books(workspace.ledger_path, "EUR")
    found = books.balances(accounts)
    return [found[account] for account in accounts]


@pytest.fixture
def workspace(make_workspace: Callable[..., Workspace], tmp_path: Path) -> Callable[..., Workspace]:
    def make(
        usage: list[dict[str, str]], invoicing: dict[str, Any] | None = None, **extra: Any
    ) -> Workspace:
        made = make_workspace(
            catalog=CATALOG,
            customers=[customer("acme", **extra)],
            ledger={"credit_purchase_account": PURCHASE_ACCOUNT},
            invoicing=invoicing,
        )
        ingest(made, [write_jsonl(tmp_path / "usage.jsonl", usage)])
        rate_months(made, [OCTOBER])
        return made

    return make


def test_a_purchase_issues_a_prepayment_invoice_and_consumption_deducts_it(
    workspace: Callable[..., Workspace],
) -> None:
    books = workspace([egress("acme", "150")])
    _, written = record_credit(
        books, "acme", "purchase", "100.00", date(2026, 10, 1), None, 1, "pack"
    )
    assert written
    prepayment = load_document(books.invoices_dir / "INV-2026-000001.json")
    assert prepayment.type is DocumentType.PREPAYMENT_INVOICE
    assert (prepayment.net_minor, prepayment.tax_minor, prepayment.due_minor) == (10000, 2000, 0)
    for suffix in ("pdf", "cii.xml", "ubl.xml"):
        assert (books.invoices_dir / f"INV-2026-000001.{suffix}").stat().st_size > 0
    cii = (books.invoices_dir / "INV-2026-000001.cii.xml").read_bytes()
    assert validate_cii(cii, french_seller=True) == []
    ubl = (books.invoices_dir / "INV-2026-000001.ubl.xml").read_bytes()
    assert validate_ubl(ubl, french_seller=True) == []
    assert balances(books, PURCHASE_ACCOUNT, VAT_OUTPUT) == [12000, -2000]  # paid with VAT
    assert (
        record_credit(books, "acme", "purchase", "100.00", date(2026, 10, 1), None, 1, "pack")[1]
        is False
    )  # the same purchase twice is recorded once

    post(books, OCTOBER, date(2026, 11, 2))
    summary = issue(books, OCTOBER, ISSUE_DAY)
    [number] = summary.issued
    document = load_document(books.invoices_dir / f"{number}.json")
    assert (document.net_minor, document.tax_minor) == (15000, 3000)  # VAT on all 150 consumed
    assert (document.paid_minor, document.prepaid_vat_minor) == (12000, 2000)
    assert document.prepayment_numbers == ("INV-2026-000001",)
    assert document.due_minor == 6000  # 180 − 120 paid in advance
    assert (
        validate_cii((books.invoices_dir / f"{number}.cii.xml").read_bytes(), french_seller=True)
        == []
    )
    # VAT booked once: 20 at purchase, 10 more at consumption = 20 % of 150.
    assert balances(books, VAT_OUTPUT, "Assets:Receivable:Acme") == [-3000, 6000]
    assert loader.load_file(str(books.ledger_path))[1] == []


def test_granted_credit_is_a_price_reduction_in_the_books_and_on_the_invoice(
    workspace: Callable[..., Workspace],
) -> None:
    books = workspace([egress("acme", "100")])
    record_credit(books, "acme", "grant", "25.00", date(2026, 10, 1), None, 1, "welcome")
    assert not (books.invoices_dir / "INV-2026-000001.json").exists()  # a gift: no invoice
    post(books, OCTOBER, date(2026, 11, 2))
    [number] = issue(books, OCTOBER, ISSUE_DAY).issued
    document = load_document(books.invoices_dir / f"{number}.json")
    assert document.vat_breakdown()[0].base_minor == 7500  # VAT on what is paid for
    assert (document.tax_minor, document.due_minor) == (1500, 9000)
    # Revenue 100 less a 25 reduction; the promotion costs nothing once used.
    assert balances(books, "Income:Usage:Network", DISCOUNTS, PROMOTIONS, VAT_OUTPUT) == [
        -10000,
        2500,
        0,
        -1500,
    ]
    assert (
        validate_cii((books.invoices_dir / f"{number}.cii.xml").read_bytes(), french_seller=True)
        == []
    )
    assert (
        validate_ubl((books.invoices_dir / f"{number}.ubl.xml").read_bytes(), french_seller=True)
        == []
    )


def test_vat_at_consumption_keeps_credit_a_voucher_taxed_when_used(
    workspace: Callable[..., Workspace],
) -> None:
    books = workspace([egress("acme", "150")], invoicing={"credits_vat": "at_consumption"})
    record_credit(books, "acme", "purchase", "100.00", date(2026, 10, 1), None, 1, "pack")
    assert balances(books, PURCHASE_ACCOUNT, VAT_OUTPUT) == [10000, 0]  # no VAT when sold
    post(books, OCTOBER, date(2026, 11, 2))
    [number] = issue(books, OCTOBER, ISSUE_DAY).issued
    assert number == "INV-2026-000001"  # no prepayment invoice took a number
    document = load_document(books.invoices_dir / f"{number}.json")
    assert (document.tax_minor, document.paid_minor, document.due_minor) == (3000, 10000, 8000)
    assert balances(books, VAT_OUTPUT) == [-3000]


def test_oss_books_a_consumers_vat_in_their_countrys_account(
    workspace: Callable[..., Workspace],
) -> None:
    books = workspace([egress("acme", "100")], invoicing={"oss": True}, country="DE")
    post(books, OCTOBER, date(2026, 11, 2))
    [number] = issue(books, OCTOBER, ISSUE_DAY).issued
    document = load_document(books.invoices_dir / f"{number}.json")
    assert document.tax_minor == 1900  # German standard rate
    assert balances(books, "Liabilities:VAT:OSS:DE", VAT_OUTPUT) == [-1900, 0]
    assert loader.load_file(str(books.ledger_path))[1] == []
    # EN16931 rules only: the French CTC rules (BR-FR-16 allows French rates only) are
    # for invoices in the French B2B e-invoicing scope; a sale to a consumer is e-reported,
    # not e-invoiced, and is charged the consumer's country's VAT.
    cii = (books.invoices_dir / f"{number}.cii.xml").read_bytes()
    assert validate_cii(cii, french_seller=False) == []


def test_a_prepayment_killed_at_any_step_is_finished_under_its_number(
    workspace: Callable[..., Workspace],
) -> None:
    books = workspace([egress("acme", "1")])
    command = [BEANBILL, "credits", "buy", "-w", str(books.root), "acme", "100.00",
               "--date", "2026-10-01", "--id", "pack"]  # fmt: skip
    for step in ("prepayment-assign", "prepayment-render", "prepayment-ledger"):
        crashed = subprocess.run(
            command, env={**os.environ, "BEANBILL_CRASH_AFTER": step}, capture_output=True
        )
        assert crashed.returncode in (0, 86)
    finished = subprocess.run(command, capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr
    ledger = load_books(books.ledger_path, "EUR")
    lot = ledger.lots()["pack"]
    assert (lot.amount_minor, lot.vat_minor, lot.invoice_number) == (10000, 2000, "INV-2026-000001")
    assert balances(books, PURCHASE_ACCOUNT) == [12000]  # once
    (books.state_dir / "invoices.sqlite").unlink()  # lost numbering state: rebuilt
    record_credit(books, "acme", "purchase", "5.00", date(2026, 10, 2), None, 1, "more")
    assert load_books(books.ledger_path, "EUR").lots()["more"].invoice_number == "INV-2026-000002"


def test_an_amount_below_the_minimum_is_carried_to_the_next_invoice(
    workspace: Callable[..., Workspace],
) -> None:
    """Daily invoices, minimum 5.00: 1.00 + 0.20 VAT on the 5th waits; the 6th (also 1.20)
    waits with it; the 7th's 4.00 brings the total over the minimum: one invoice of 3 days."""
    usage = [egress("acme", "1", 5), egress("acme", "1", 6), egress("acme", "4", 7)]
    books = workspace(usage, invoicing={"minimum_amount": "5.00"}, billing_period="daily")
    post(books, OCTOBER, date(2026, 11, 2))
    summary = issue(books, Month(2026, 10), date(2026, 10, 31))
    [number] = summary.issued
    document = load_document(books.invoices_dir / f"{number}.json")
    assert (document.net_minor, document.carried_minor) == (600, 200)
    assert document.period_start == date(2026, 10, 5)
    carried = [line.description for line in document.lines if "carried from" in line.description]
    assert [text.rsplit(" ", 1)[-1] for text in carried] == ["2026-10-05", "2026-10-06"]
    keys = issued_keys(load_books(books.ledger_path, "EUR"))
    assert {key for key, issued in keys.items() if issued == number} == {
        "invoice:acme:2026-10-05",
        "invoice:acme:2026-10-06",
        "invoice:acme:2026-10-07",
    }
    assert issue(books, Month(2026, 10), date(2026, 10, 31)).issued == ()  # nothing twice
    credit_note(books, number, date(2026, 10, 31), "Wrong customer address")
    again = issue(books, Month(2026, 10), date(2026, 10, 31))
    assert len(again.issued) == 1  # the three periods are due again, together


def test_an_amount_below_the_minimum_with_nothing_after_it_is_held(
    workspace: Callable[..., Workspace],
) -> None:
    books = workspace([egress("acme", "1")], invoicing={"minimum_amount": "5.00"})
    post(books, OCTOBER, date(2026, 11, 2))
    summary = issue(books, OCTOBER, ISSUE_DAY)
    assert summary.issued == () and summary.held == (("invoice:acme:2026-10", 120),)


def test_a_prepayment_invoice_or_a_credit_note_cannot_be_cancelled_by_a_credit_note(
    workspace: Callable[..., Workspace],
) -> None:
    books = workspace([egress("acme", "150")])
    record_credit(books, "acme", "purchase", "100.00", date(2026, 10, 1), None, 1, "pack")
    with pytest.raises(InvoicingError, match="prepayment invoice of a credit purchase"):
        credit_note(books, "INV-2026-000001", ISSUE_DAY, "Refund asked")
    post(books, OCTOBER, date(2026, 11, 2))
    [number] = issue(books, OCTOBER, ISSUE_DAY).issued
    note, _ = credit_note(books, number, ISSUE_DAY, "Wrong customer address")
    with pytest.raises(InvoicingError, match="is a credit note"):
        credit_note(books, note, ISSUE_DAY, "Again")
    # the credit note gives the VAT back as the invoice booked it: 10.00, not 30.00
    assert balances(books, VAT_OUTPUT) == [-2000]


def test_show_says_what_an_issued_document_says(workspace: Callable[..., Workspace]) -> None:
    books = workspace([egress("acme", "1")])
    record_credit(books, "acme", "purchase", "100.00", date(2026, 10, 1), None, 1, "pack")
    command = [BEANBILL, "invoice", "show", "-w", str(books.root)]
    shown = subprocess.run([*command, "INV-2026-000001"], capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr
    assert "INV-2026-000001: prepayment invoice for acme Ltd" in shown.stdout
    assert "VAT S 20 %: 20.00 EUR on 100.00 EUR" in shown.stdout
    assert "paid in advance 120.00 EUR" in shown.stdout and "total to pay 0.00 EUR" in shown.stdout
    for hostile in ("../beanbill", "INV-2026-000009", "INV-2026-000001.json"):
        refused = subprocess.run([*command, hostile], capture_output=True, text=True)
        assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr


def test_oss_enabled_after_posting_opens_its_accounts_when_invoicing(
    workspace: Callable[..., Workspace],
) -> None:
    books = workspace([egress("acme", "100")], invoicing={"oss": False}, country="DE")
    post(books, OCTOBER, date(2026, 11, 2))
    settings = tomllib.loads((books.root / SETTINGS_FILE).read_text())
    settings["invoicing"]["oss"] = True  # the seller registers for the OSS before invoicing
    write_toml(books.root / SETTINGS_FILE, settings)
    [number] = issue(Workspace.load(books.root), OCTOBER, ISSUE_DAY).issued
    assert balances(books, "Liabilities:VAT:OSS:DE") == [-1900]
    assert loader.load_file(str(books.ledger_path))[1] == []
    assert load_document(books.invoices_dir / f"{number}.json").tax_minor == 1900


def test_drafts_show_periods_below_the_minimum_where_they_will_be_billed(
    workspace: Callable[..., Workspace],
) -> None:
    usage = [egress("acme", "1", 5), egress("acme", "4", 6)]
    books = workspace(usage, invoicing={"minimum_amount": "5.00"}, billing_period="daily")
    post(books, OCTOBER, date(2026, 11, 2))
    [draft] = preview(books, OCTOBER, date(2026, 10, 31))
    assert (draft.net_minor, draft.carried_minor) == (500, 100)
    assert not books.invoices_dir.exists()  # a draft writes nothing

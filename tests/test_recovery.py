"""Recovery never destroys: lost or stale state is rebuilt from the ledger or refused with
the fix, issued documents are write-once, a missing file blocks only its own document."""

from __future__ import annotations

import os
import sqlite3
import subprocess
from collections.abc import Callable
from dataclasses import replace
from datetime import date
from pathlib import Path

import pytest
from beancount import loader

from beanbill.ledger.books import load_books
from beanbill.ledger.invoicing import InvoicingError
from beanbill.ledger.invoicing.corrections import credit_note
from beanbill.ledger.invoicing.documents import load_document
from beanbill.ledger.invoicing.files import write_documents
from beanbill.ledger.invoicing.issue import issue
from beanbill.ledger.invoicing.numbering import InvoiceNumbers
from beanbill.ledger.invoicing.reprint import render_issued
from beanbill.ledger.post import balance, post
from beanbill.rating.errors import WorkspaceError
from beanbill.rating.ingest import ingest
from beanbill.rating.periods import Month
from beanbill.rating.rate import rate_months
from beanbill.rating.workspace import Workspace
from beanbill.sync.push import issued_snapshots, one_push_at_a_time
from tests.support import BEANBILL, customer, october_usage, write_jsonl

OCTOBER = Month(2026, 10)
ISSUE_DAY = date(2026, 11, 5)


@pytest.fixture
def issued(make_workspace: Callable[..., Workspace], tmp_path: Path) -> Workspace:
    """Three organizations, October posted and invoiced: INV-2026-000001 … 000003."""
    workspace = make_workspace(customers=[customer(org) for org in ("a-org", "b-org", "c-org")])
    records = [*october_usage("a-org", 10), *october_usage("b-org", 5), *october_usage("c-org", 2)]
    ingest(workspace, [write_jsonl(tmp_path / "u.jsonl", records)])
    rate_months(workspace, [OCTOBER])
    post(workspace, OCTOBER, date(2026, 11, 2))
    assert issue(workspace, OCTOBER, ISSUE_DAY).issued == tuple(
        f"INV-2026-00000{n}" for n in (1, 2, 3)
    )
    return workspace


def files_of(workspace: Workspace) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(workspace.invoices_dir.iterdir())}


def numbering_files(workspace: Workspace) -> list[Path]:
    return sorted(workspace.state_dir.glob("invoices.sqlite*"))


def test_a_lost_numbering_state_is_rebuilt_from_the_ledger_and_no_number_is_reused(
    issued: Workspace,
) -> None:
    before = files_of(issued)
    for path in numbering_files(issued):
        path.unlink()
    assert issue(issued, OCTOBER, ISSUE_DAY).issued == ()  # nothing due: all issued
    assert files_of(issued) == before
    rebuilt = InvoiceNumbers(issued.state_dir).all()
    assert [(a.number, a.issued, a.issue_date) for a in rebuilt] == [
        (f"INV-2026-00000{n}", True, ISSUE_DAY) for n in (1, 2, 3)
    ]
    number, _ = credit_note(issued, "INV-2026-000002", ISSUE_DAY, "Wrong billing address")
    assert number == "CN-2026-000001"
    assert issue(issued, OCTOBER, ISSUE_DAY).issued == ("INV-2026-000004",)  # not 000001
    assert {k: v for k, v in files_of(issued).items() if k in before} == before
    assert loader.load_file(str(issued.ledger_path))[1] == []


def test_a_stale_or_unreadable_numbering_state_is_refused_with_the_fix(
    issued: Workspace,
) -> None:
    state = issued.state_dir / "invoices.sqlite"
    for path in numbering_files(issued):
        path.unlink()
    with sqlite3.connect(state) as connection:  # an old, empty copy put back
        connection.executescript(
            "CREATE TABLE series (name TEXT PRIMARY KEY, next_value INTEGER NOT NULL);"
        )
    with pytest.raises(InvoicingError, match="lacks 3 number"):
        issue(issued, OCTOBER, ISSUE_DAY)
    state.unlink()
    state.write_bytes(b"this is not a database" * 100)
    with pytest.raises(InvoicingError, match="move it aside"):
        credit_note(issued, "INV-2026-000001", ISSUE_DAY, "Wrong billing address")
    state.unlink()
    assert issue(issued, OCTOBER, ISSUE_DAY).issued == ()


def test_issued_documents_are_write_once(issued: Workspace) -> None:
    before = files_of(issued)
    first = load_document(issued.invoices_dir / "INV-2026-000001.json")
    other = load_document(issued.invoices_dir / "INV-2026-000002.json")
    with pytest.raises(InvoicingError, match="never overwritten"):
        write_documents(issued, replace(other, number=first.number))
    (issued.invoices_dir / "INV-2026-000003.json").unlink()
    with pytest.raises(InvoicingError, match="exist without their snapshot"):
        write_documents(issued, replace(other, number="INV-2026-000003"))
    assert files_of(issued) == {k: v for k, v in before.items() if k != "INV-2026-000003.json"}


def test_a_deleted_file_blocks_only_its_document_and_render_writes_it_again(
    issued: Workspace,
) -> None:
    folder = issued.invoices_dir
    pdf = (folder / "INV-2026-000001.pdf").read_bytes()
    (folder / "INV-2026-000001.pdf").unlink()
    snapshot = (folder / "INV-2026-000002.json").read_bytes()
    (folder / "INV-2026-000002.json").unlink()
    books = load_books(issued.ledger_path, "EUR")  # loads: the missing PDF is its own problem
    assert len(books.missing_documents) == 1
    assert balance(issued, "a-org").receivable_minor > 0
    post(issued, OCTOBER, date(2026, 11, 2))
    documents, unreadable = issued_snapshots(issued)
    assert [d.number for d in documents] == ["INV-2026-000001", "INV-2026-000003"]
    assert [number for number, _ in unreadable] == ["INV-2026-000002"]
    assert render_issued(issued, "INV-2026-000001") == [folder / "INV-2026-000001.pdf"]
    assert (folder / "INV-2026-000001.pdf").read_bytes()[:8] == pdf[:8]
    assert render_issued(issued, "INV-2026-000002") == [folder / "INV-2026-000002.json"]
    assert (folder / "INV-2026-000002.json").read_bytes() == snapshot  # derived again, same
    assert render_issued(issued, "INV-2026-000002") == []
    assert loader.load_file(str(issued.ledger_path))[1] == []


@pytest.mark.parametrize("step", ["credit-assign", "credit-render", "credit-ledger"])
def test_a_credit_note_killed_at_any_step_is_finished_under_its_number(
    issued: Workspace, step: str
) -> None:
    command = [BEANBILL, "invoice", "credit", "-w", str(issued.root), "INV-2026-000001",
               "--reason", "Wrong billing address"]  # fmt: skip
    crashed = subprocess.run(
        command, env={**os.environ, "BEANBILL_CRASH_AFTER": step}, capture_output=True
    )
    assert crashed.returncode == 86
    finished = subprocess.run(command, capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr
    assert "CN-2026-000001" in finished.stdout
    notes = [a for a in InvoiceNumbers(issued.state_dir).all() if a.number.startswith("CN")]
    assert [(a.number, a.issued) for a in notes] == [("CN-2026-000001", True)]
    assert "CN-2026-000001" in [d.number for d in issued_snapshots(issued)[0]]
    again = subprocess.run(command, capture_output=True, text=True)
    assert again.returncode == 2 and "already cancelled" in again.stderr
    assert loader.load_file(str(issued.ledger_path))[1] == []


def test_one_push_at_a_time(issued: Workspace) -> None:
    refused = pytest.raises(WorkspaceError, match="another beanbill sync push is running")
    with one_push_at_a_time(issued), refused, one_push_at_a_time(issued):
        pass

"""The safe writer: round trip, idempotency, conflicts, injection, crashes, plugin."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import pytest
from beancount import loader
from beancount.core import data

from beanbill.examples import example_ledger_text
from beanbill.ledger.entries import Document, Open, Posting, Transaction
from beanbill.ledger.text import LedgerTextError
from beanbill.ledger.writer import LedgerConflictError, LedgerWriter
from tests.support import BEAN_CHECK, beancount_snapshot

HOSTILE = [
    'Evil" \n2026-01-01 open Assets:Stolen EUR',
    'Quote " and backslash \\ and ; semicolon',
    '\\" ^link #tag',
    "Ünïcödé ☁ 雲",
    '"""',
    "trailing backslash \\",
]


def main_file(tmp_path: Path) -> Path:
    path = tmp_path / "ledger.beancount"
    path.write_text(example_ledger_text())
    return path


def usage(org: str, amount_minor: int, narration: str = "Usage 2026-10") -> Transaction:
    return Transaction(
        date=date(2026, 10, 31),
        txn_id=f"usage:{org}:2026-10",
        narration=narration,
        postings=(
            Posting("Income:Usage:Compute", -amount_minor, "EUR"),
            Posting("Assets:Bank:Operating", amount_minor, "EUR"),
        ),
        links=(f"usage-{org}-2026-10",),
        meta=(("org", org),),
    )


def load_clean(path: Path) -> list[object]:
    entries, errors, _ = loader.load_file(str(path))
    assert errors == [], [error.message for error in errors]
    return list(entries)


def test_append_round_trips_includes_and_loads(tmp_path: Path) -> None:
    path = main_file(tmp_path)
    result = LedgerWriter(path).append(
        "books/2026-10/usage.beancount", [usage("a", 1234), usage("b", 1)]
    )
    assert (result.written, result.unchanged) == (2, 0)
    assert 'include "books/2026-10/usage.beancount"' in path.read_text()
    entries = load_clean(path)
    amounts = sorted(str(p.units) for e in entries if hasattr(e, "postings") for p in e.postings)
    assert "12.34 EUR" in amounts and "-0.01 EUR" in amounts


def test_writing_the_same_thing_twice_changes_no_byte(tmp_path: Path) -> None:
    path = main_file(tmp_path)
    writer = LedgerWriter(path)
    writer.append("books/2026-10/usage.beancount", [usage("a", 1234)])
    before = beancount_snapshot(tmp_path)
    result = writer.append("books/2026-10/usage.beancount", [usage("a", 1234)])
    assert (result.written, result.unchanged) == (0, 1)
    assert beancount_snapshot(tmp_path) == before


def test_same_txn_id_with_other_content_is_a_hard_error_naming_both(tmp_path: Path) -> None:
    path = main_file(tmp_path)
    writer = LedgerWriter(path)
    writer.append("books/2026-10/usage.beancount", [usage("a", 1234)])
    before = beancount_snapshot(tmp_path)
    with pytest.raises(LedgerConflictError) as raised:
        writer.append("books/2026-10/usage.beancount", [usage("a", 1235)])
    message = str(raised.value)
    assert "usage:a:2026-10" in message and "usage.beancount:" in message
    assert "12.34 EUR" in message and "12.35 EUR" in message
    assert beancount_snapshot(tmp_path) == before


def test_new_wording_of_a_written_fact_keeps_the_old_text(tmp_path: Path) -> None:
    """A later version names the customer as payee and links the invoice's story: what an
    earlier version wrote stays byte-identical, and re-running changes nothing."""
    path = main_file(tmp_path)
    writer = LedgerWriter(path)
    writer.append("books/2026-10/usage.beancount", [usage("a", 1234)])
    before = beancount_snapshot(tmp_path)
    reworded = usage("a", 1234, narration="Usage October 2026 — A GmbH")._replace(
        payee="A GmbH", links=("usage-a-2026-10", "billing-a-2026-10")
    )
    result = writer.append("books/2026-10/usage.beancount", [reworded])
    assert (result.written, result.unchanged) == (0, 1)
    assert beancount_snapshot(tmp_path) == before


@pytest.mark.parametrize(
    "change",
    [
        {"meta": (("org", "b"),)},
        {"date": date(2026, 10, 30)},
        {"postings": (Posting("Income:Usage:Compute", -1, "EUR"),
                      Posting("Assets:Bank:Operating", 1, "EUR"))},
    ],
)  # fmt: skip
def test_a_changed_fact_in_new_words_is_still_a_conflict(
    tmp_path: Path, change: dict[str, object]
) -> None:
    path = main_file(tmp_path)
    writer = LedgerWriter(path)
    writer.append("books/2026-10/usage.beancount", [usage("a", 1234)])
    changed = usage("a", 1234)._replace(payee="A GmbH", **change)
    with pytest.raises(LedgerConflictError):
        writer.append("books/2026-10/usage.beancount", [changed])


def test_one_document_entry_with_its_files_in_metadata(tmp_path: Path) -> None:
    path = main_file(tmp_path)
    writer = LedgerWriter(path)
    (tmp_path / "books" / "2026-11").mkdir(parents=True)
    (tmp_path / "books" / "2026-11" / "F-1.pdf").write_bytes(b"%PDF-1.7")
    old = Document(
        date(2026, 11, 1), "Assets:Bank:Operating", "F-1.pdf", "document:F-1:pdf", ("invoice-F-1",)
    )
    writer.append("books/2026-11/invoices.beancount", [old])
    before = beancount_snapshot(tmp_path)
    new = old._replace(links=("invoice-F-1", "billing-a-2026-10"), meta=(("cii", "F-1.cii.xml"),))
    assert writer.append("books/2026-11/invoices.beancount", [new]).unchanged == 1
    assert beancount_snapshot(tmp_path) == before
    moved = new._replace(path="F-2.pdf")
    with pytest.raises(LedgerConflictError):
        writer.append("books/2026-11/invoices.beancount", [moved])
    fresh = new._replace(txn_id="document:F-3:pdf", path="F-1.pdf")
    writer.append("books/2026-11/invoices.beancount", [fresh])
    documents = [e for e in load_clean(path) if isinstance(e, data.Document)]
    assert [d.meta.get("cii") for d in documents] == [None, "F-1.cii.xml"]


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_text_stays_inside_its_string(tmp_path: Path, text: str) -> None:
    path = main_file(tmp_path)
    writer = LedgerWriter(path)
    if "\n" in text:
        with pytest.raises(LedgerTextError):
            writer.append("books/2026-10/usage.beancount", [usage("a", 100, narration=text)])
        return
    opening = Open(date(2000, 1, 1), "Assets:Receivable:A", "EUR", (("org-name", text),))
    writer.append("books/accounts.beancount", [opening])
    writer.append("books/2026-10/usage.beancount", [usage("a", 100, narration=text)])
    writer.append(
        "books/2026-11/usage.beancount",
        [usage("b", 100)._replace(payee=text, date=date(2026, 11, 30))],
    )
    entries = load_clean(path)
    assert [e.narration for e in entries if hasattr(e, "narration")] == [text, "Usage 2026-10"]
    assert [e.payee for e in entries if hasattr(e, "payee")] == [None, text]
    assert [
        e.meta["org-name"] for e in entries if getattr(e, "account", "") == "Assets:Receivable:A"
    ] == [text]
    assert not any(getattr(e, "account", "") == "Assets:Stolen" for e in entries)


def test_unbalanced_or_oddly_named_writes_are_refused(tmp_path: Path) -> None:
    path = main_file(tmp_path)
    writer = LedgerWriter(path)
    broken = usage("a", 100)._replace(postings=(Posting("Income:Usage:Compute", -100, "EUR"),))
    with pytest.raises(LedgerTextError, match="sum to -100"):
        writer.append("books/2026-10/usage.beancount", [broken])
    with pytest.raises(Exception, match="not a generated ledger file path"):
        writer.append('books/x" \ninclude "/etc/passwd.beancount', [usage("a", 1)])


def test_plugin_catches_a_hand_made_duplicate(tmp_path: Path) -> None:
    path = main_file(tmp_path)
    LedgerWriter(path).append("books/2026-10/usage.beancount", [usage("a", 100)])
    generated = tmp_path / "books" / "2026-10" / "usage.beancount"
    generated.write_text(generated.read_text() + "\n" + generated.read_text().split("\n", 1)[1])
    _, errors, _ = loader.load_file(str(path))
    assert any("used twice" in error.message for error in errors)
    check = subprocess.run([BEAN_CHECK, str(path)], capture_output=True, text=True)
    assert check.returncode != 0 and "used twice" in check.stdout + check.stderr


def test_plugin_refuses_interpolated_amounts_in_generated_entries(tmp_path: Path) -> None:
    path = main_file(tmp_path)
    with path.open("a") as handle:
        handle.write(
            '\n2026-10-31 * "hand-made"\n  txn-id: "usage:x:2026-10"\n'
            "  Assets:Bank:Operating  1.00 EUR\n  Income:Usage:Compute\n"
        )
    _, errors, _ = loader.load_file(str(path))
    assert any("left for Beancount to interpolate" in error.message for error in errors)


WRITER_SCRIPT = """
import sys
from datetime import date
from pathlib import Path
from beanbill.ledger.entries import Posting, Transaction
from beanbill.ledger.writer import LedgerWriter
writer = LedgerWriter(Path(sys.argv[1]))
for batch in range(150):
    entries = [
        Transaction(date(2026, 10, 31), f"usage:org-{batch}-{i}:2026-10", "Usage",
                    (Posting("Income:Usage:Compute", -(batch * 1000 + i + 1), "EUR"),
                     Posting("Assets:Bank:Operating", batch * 1000 + i + 1, "EUR")))
        for i in range(100)
    ]
    writer.append(f"books/2026-10/part-{batch % 3}.beancount", entries)
"""


def test_killed_writers_leave_a_loadable_ledger_and_a_rerun_completes(tmp_path: Path) -> None:
    reference_dir, crashed_dir = tmp_path / "reference", tmp_path / "crashed"
    for folder in (reference_dir, crashed_dir):
        folder.mkdir()
        main_file(folder)
    command = [sys.executable, "-c", WRITER_SCRIPT]
    subprocess.run([*command, str(reference_dir / "ledger.beancount")], check=True)
    counts = []
    for delay_seconds in (0.4, 0.5, 0.6, 0.7, 0.8):
        process = subprocess.Popen([*command, str(crashed_dir / "ledger.beancount")])
        time.sleep(delay_seconds)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        entries = load_clean(crashed_dir / "ledger.beancount")
        counts.append(sum(1 for e in entries if hasattr(e, "postings")))
    assert any(0 < count < 150 * 100 for count in counts), counts  # some kills landed mid-run
    subprocess.run([*command, str(crashed_dir / "ledger.beancount")], check=True)
    entries = load_clean(crashed_dir / "ledger.beancount")
    assert sum(1 for e in entries if hasattr(e, "postings")) == 150 * 100
    assert beancount_snapshot(crashed_dir) == beancount_snapshot(reference_dir)

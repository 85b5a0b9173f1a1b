"""How beanbill loads its books: commands about to append never touch Beancount's pickle
cache; the checks read it when valid and leave it valid for ``bean-check`` and Fava."""

from __future__ import annotations

import gc
import os
import subprocess
from datetime import date
from pathlib import Path

import pytest
from beancount import loader

from beanbill.examples import example_ledger_text
from beanbill.ledger import books
from beanbill.ledger.books import (
    cache_is_valid,
    cache_path,
    collector_paused,
    ledger_errors,
    load_books,
    load_through_cache,
)
from beanbill.ledger.entries import Posting, Transaction
from beanbill.ledger.writer import LedgerWriter
from beanbill.stripe_peer import API_KEY
from tests.support import BEAN_CHECK, BEANBILL, Issued


def usage(org: str, amount_minor: int) -> Transaction:
    return Transaction(
        date=date(2026, 10, 31),
        txn_id=f"usage:{org}:2026-10",
        narration=f"Usage 2026-10 {org}",
        postings=(
            Posting("Income:Usage:Compute", -amount_minor, "EUR"),
            Posting("Assets:Bank:Operating", amount_minor, "EUR"),
        ),
        links=(f"usage-{org}-2026-10",),
        meta=(("org", org),),
    )


@pytest.fixture
def ledger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A small ledger of the example main file and one generated file."""
    monkeypatch.delenv(books.CACHE_DISABLED_VARIABLE, raising=False)
    monkeypatch.delenv(books.CACHE_FILENAME_VARIABLE, raising=False)
    path = tmp_path / "ledger.beancount"
    path.write_text(example_ledger_text())
    LedgerWriter(path).append("books/2026-10/usage.beancount", [usage("acme", 1234)])
    return path


def txn_ids(result: books.LoaderResult) -> set[str]:
    return {str(entry.meta["txn-id"]) for entry in result[0] if "txn-id" in entry.meta}


def caches(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir() if "picklecache" in path.name)


def test_loading_books_does_not_create_the_cache(ledger: Path) -> None:
    books_loaded = load_books(ledger, "EUR")
    assert "usage:acme:2026-10" in books_loaded.txn_ids()
    assert cache_path(ledger) == ledger.with_name(".ledger.beancount.picklecache")
    assert caches(ledger.parent) == []


def test_loading_books_leaves_a_valid_cache_as_it_is(ledger: Path) -> None:
    assert ledger_errors(ledger) == []
    cache = cache_path(ledger)
    assert cache is not None
    before = cache.stat()
    load_books(ledger, "EUR")
    after = cache.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_the_check_leaves_a_cache_that_bean_checks_loader_hits(ledger: Path) -> None:
    """``bean-check`` calls ``loader.load_file``: on a hit it reads the cache and leaves
    it; on a miss it deletes it (and, for a load this small, writes none back)."""
    assert ledger_errors(ledger) == []
    cache = cache_path(ledger)
    assert cache is not None and cache_is_valid(ledger)
    before = cache.stat()
    entries, errors, _ = loader.load_file(str(ledger))
    assert errors == []
    assert cache.exists() and cache.stat().st_ino == before.st_ino
    assert txn_ids((entries, errors, {})) == {"usage:acme:2026-10"}


def test_an_append_makes_the_cache_stale_and_the_next_check_writes_it_again(
    ledger: Path,
) -> None:
    assert ledger_errors(ledger) == []
    LedgerWriter(ledger).append("books/2026-10/usage.beancount", [usage("beta", 99)])
    assert not cache_is_valid(ledger)
    result = load_through_cache(ledger)
    assert txn_ids(result) == {"usage:acme:2026-10", "usage:beta:2026-10"}
    assert cache_is_valid(ledger)


def test_a_valid_cache_is_read_not_the_text(ledger: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert ledger_errors(ledger) == []

    def no_text_load(main_path: Path) -> books.LoaderResult:
        raise AssertionError("loaded from the text although the cache is valid")

    monkeypatch.setattr(books, "_load_as_checked", no_text_load)
    assert txn_ids(load_through_cache(ledger)) == {"usage:acme:2026-10"}


def test_no_cache_is_written_when_a_file_changes_while_loading(
    ledger: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer appending during the load (as ``serve`` may while Fava reloads) would
    leave a cache that looks valid but lacks its entry: none is written."""
    real_load = books._load_as_checked

    def load_then_append(main_path: Path) -> books.LoaderResult:
        result = real_load(main_path)
        LedgerWriter(main_path).append("books/2026-10/usage.beancount", [usage("late", 5)])
        return result

    monkeypatch.setattr(books, "_load_as_checked", load_then_append)
    assert "usage:late:2026-10" not in txn_ids(load_through_cache(ledger))
    assert caches(ledger.parent) == []  # neither a cache nor its temporary file
    monkeypatch.setattr(books, "_load_as_checked", real_load)
    assert "usage:late:2026-10" in txn_ids(load_through_cache(ledger))
    assert cache_is_valid(ledger)


def test_a_corrupt_cache_is_a_miss_and_is_replaced(ledger: Path) -> None:
    cache = cache_path(ledger)
    assert cache is not None
    cache.write_bytes(b"not a pickle")
    assert ledger_errors(ledger) == []
    assert cache_is_valid(ledger)


def test_the_halves_of_caches_left_by_dead_processes_are_removed(ledger: Path) -> None:
    dead = next(pid for pid in range(4_000_000, 4_100_000) if not _alive(pid))
    left = ledger.with_name(f".ledger.beancount.picklecache.{dead}-0a1b2c3d.tmp")
    mine = ledger.with_name(f".ledger.beancount.picklecache.{os.getpid()}-0a1b2c3d.tmp")
    left.write_bytes(b"half")
    mine.write_bytes(b"in progress")
    assert ledger_errors(ledger) == []
    assert not left.exists() and mine.exists()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def test_beancounts_switch_turns_the_cache_off(
    ledger: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(books.CACHE_DISABLED_VARIABLE, "1")
    assert cache_path(ledger) is None
    assert ledger_errors(ledger) == []
    assert caches(ledger.parent) == []


def test_the_collector_is_paused_while_loading_and_left_as_found(ledger: Path) -> None:
    assert gc.isenabled()
    with collector_paused():
        assert not gc.isenabled()
        with collector_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.disable()
    try:
        load_books(ledger, "EUR")
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_the_nightly_run_leaves_a_cache_that_bean_check_hits(issued: Issued) -> None:
    """``beanbill run`` ends with the check after its last append: the accountant's first
    ``bean-check`` or ``beanbill fava`` of the morning reads the cache."""
    workspace = issued()
    command = [BEANBILL, "run", "-w", str(workspace.root), "-p", "2026-10", "--as-of", "2026-11-05"]
    environment = {**os.environ, "STRIPE_SECRET_KEY": API_KEY}
    environment.pop(books.CACHE_DISABLED_VARIABLE, None)
    result = subprocess.run(command, env=environment, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "bean-check: no errors" in result.stdout
    cache = cache_path(workspace.ledger_path)
    assert cache is not None and cache_is_valid(workspace.ledger_path)
    before = cache.stat()
    checked = subprocess.run([BEAN_CHECK, str(workspace.ledger_path)], env=environment)
    assert checked.returncode == 0
    assert cache.stat().st_ino == before.st_ino  # a hit; a miss would have replaced it

"""``beanbill fava``: Fava in-process, loading through Beancount's cache, reloading after
an append, read-only on 127.0.0.1; other ledgers in the process load as Fava loads them."""

from __future__ import annotations

import gc
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from fava.core import FavaLedger

from beanbill.cli import main
from beanbill.examples import example_ledger_text
from beanbill.exits import EXIT_ERROR
from beanbill.fava_server import fava_application
from beanbill.ledger import books
from beanbill.ledger.books import cache_is_valid, cache_path
from beanbill.ledger.entries import Posting, Transaction
from beanbill.ledger.writer import LedgerWriter
from beanbill.ports import free_port
from beanbill.rating.workspace import Workspace
from tests.support import BEANBILL

STARTUP_SECONDS = 60
RELOAD_SECONDS = 20


@pytest.fixture(autouse=True)
def unfrozen(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The server freezes what it loaded out of the collector's sight; a test process
    lives on, so whatever got frozen is handed back to the collector afterwards."""
    monkeypatch.delenv(books.CACHE_DISABLED_VARIABLE, raising=False)
    monkeypatch.delenv(books.CACHE_FILENAME_VARIABLE, raising=False)
    yield
    gc.unfreeze()


def usage(org: str, amount_minor: int) -> Transaction:
    return Transaction(
        date=date(2026, 10, 31),
        txn_id=f"usage:{org}:2026-10",
        narration=f"Usage October 2026 {org}",
        postings=(
            Posting("Income:Usage:Compute", -amount_minor, "EUR"),
            Posting("Assets:Bank:Operating", amount_minor, "EUR"),
        ),
        links=(f"usage-{org}-2026-10",),
        meta=(("org", org),),
    )


def small_ledger(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "ledger.beancount"
    path.write_text(example_ledger_text())
    LedgerWriter(path).append("books/2026-10/usage.beancount", [usage("acme", 1234)])
    return path


def links(client: Any, slug: str) -> str:
    """The links of the loaded entries (every page carries them in its ledger data)."""
    response = client.get(f"/{slug}/income_statement/")
    assert response.status_code == 200
    page = str(response.get_data(as_text=True))
    return page[page.index('"links":') :].split("]", 1)[0]


def first_page(client: Any) -> str:
    """Fava's first page (``/`` redirects to the income statement); returns the slug."""
    response = client.get("/", follow_redirects=True)
    assert response.status_code == 200
    assert "/income_statement/" in response.request.path
    return str(response.request.path.split("/")[1])


def test_fava_loads_through_the_cache_and_leaves_it_warm(tmp_path: Path) -> None:
    ledger = small_ledger(tmp_path / "ws")
    client = fava_application(ledger).test_client()
    slug = first_page(client)
    assert "usage-acme-2026-10" in links(client, slug)
    assert cache_is_valid(ledger)  # a miss: loaded from the text, the cache written


def test_a_second_start_reads_the_cache_not_the_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = small_ledger(tmp_path / "ws")
    assert books.ledger_errors(ledger) == []  # what `beanbill run` ends with

    def no_text_load(main_path: Path) -> books.LoaderResult:
        raise AssertionError("loaded from the text although the cache is valid")

    monkeypatch.setattr(books, "_load_as_checked", no_text_load)
    client = fava_application(ledger).test_client()
    assert "usage-acme-2026-10" in links(client, first_page(client))


def test_an_append_is_shown_after_fava_reloads_and_the_cache_follows(tmp_path: Path) -> None:
    """Fava's file watcher notices beanbill's append; the reload must not be served
    from the cache (stale by then), and leaves a cache that holds the new entry."""
    ledger = small_ledger(tmp_path / "ws")
    client = fava_application(ledger).test_client()
    slug = first_page(client)
    assert cache_is_valid(ledger)
    LedgerWriter(ledger).append("books/2026-10/usage.beancount", [usage("newcomer", 777)])
    deadline = time.monotonic() + RELOAD_SECONDS
    while "usage-newcomer-2026-10" not in links(client, slug):
        assert time.monotonic() < deadline, "Fava did not reload after the append"
        time.sleep(0.2)
    assert "usage-acme-2026-10" in links(client, slug)
    assert cache_is_valid(ledger)
    cached = books.load_through_cache(ledger, write=False)
    assert "usage:newcomer:2026-10" in {entry.meta.get("txn-id") for entry in cached[0]}


def test_other_ledgers_in_the_process_load_as_fava_loads_them(tmp_path: Path) -> None:
    small_ledger(tmp_path / "served")
    fava_application(tmp_path / "served" / "ledger.beancount")
    other = small_ledger(tmp_path / "other")
    assert FavaLedger(str(other)).errors == []
    other_cache = cache_path(other)
    assert other_cache is not None and not other_cache.exists()


def test_the_application_is_read_only(tmp_path: Path) -> None:
    ledger = small_ledger(tmp_path / "ws")
    client = fava_application(ledger).test_client()
    slug = first_page(client)
    assert client.put(f"/{slug}/api/source", json={}).status_code == 401


def fetch(url: str) -> int:
    with urllib.request.urlopen(url, timeout=30) as response:
        return int(response.status)


def test_the_command_serves_on_loopback_and_refuses_a_taken_port(
    make_workspace: Any,
) -> None:
    workspace: Workspace = make_workspace()
    LedgerWriter(workspace.ledger_path).append(
        "books/2026-10/usage.beancount", [usage("acme", 1234)]
    )
    port = free_port()
    command = [BEANBILL, "fava", "-w", str(workspace.root), "--port", str(port)]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        assert line == (
            f"Fava on http://127.0.0.1:{port}/ (read-only), ledger {workspace.ledger_path}\n"
        )
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            try:
                assert fetch(f"http://127.0.0.1:{port}/") == 200
                break
            except (OSError, urllib.error.URLError):
                assert time.monotonic() < deadline and server.poll() is None
                time.sleep(0.2)
        taken = subprocess.run(command, capture_output=True, text=True, timeout=60)
        assert taken.returncode == EXIT_ERROR
        assert taken.stderr.startswith(f"error: cannot listen on 127.0.0.1:{port}")
        assert taken.stderr.count("\n") == 1 and "Traceback" not in taken.stderr
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_the_command_refuses_a_workspace_without_its_ledger(make_workspace: Any) -> None:
    workspace: Workspace = make_workspace()
    workspace.ledger_path.unlink()
    result = CliRunner().invoke(main, ["fava", "-w", str(workspace.root), "--port", "1"])
    assert result.exit_code == EXIT_ERROR
    assert f"{workspace.ledger_path}: no ledger to browse" in result.output
    assert "Traceback" not in result.output


def test_a_main_file_naming_the_old_extension_module_gets_the_fix(make_workspace: Any) -> None:
    """Main files written before the billing pages moved to ``beanbill.fava_billing`` (they
    read the sync state) name a module that has no extension any more: Fava would say only
    "Module contains no extensions". The command says what to change."""
    workspace: Workspace = make_workspace()
    text = workspace.ledger_path.read_text(encoding="utf-8")
    assert '"beanbill.fava_billing"' in text
    workspace.ledger_path.write_text(
        text.replace('"beanbill.fava_billing"', '"beanbill.ledger.fava_billing"'),
        encoding="utf-8",
    )
    with socket.socket() as taken:  # the command stops at the port, after the note
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(main, ["fava", "-w", str(workspace.root), "--port", str(port)])
    assert result.exit_code == EXIT_ERROR
    assert 'replace "beanbill.ledger.fava_billing" with "beanbill.fava_billing"' in result.stderr

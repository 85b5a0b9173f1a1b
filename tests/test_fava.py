"""Fava, the accountants' window: it loads the demo ledger cleanly and serves its pages."""

from __future__ import annotations

import subprocess
import time
import urllib.request
from datetime import date
from pathlib import Path

from fava.core import FavaLedger

from beanbill.ledger.post import post, record_credit
from beanbill.rating.periods import Month
from beanbill.rating.workspace import Workspace
from beanbill.stripe_peer import free_port
from tests.support import BEANBILL, rated_demo

STARTUP_SECONDS = 60


def posted_demo(root: Path) -> Workspace:
    workspace, _ = rated_demo(root, 8, seed=11)
    record_credit(workspace, "org-0003", "purchase", "50.00", date(2026, 10, 1), None, 100, None)
    post(workspace, Month(2026, 10), date(2026, 11, 22))
    return workspace


def fetch(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.status, response.read().decode()


def test_fava_loads_the_ledger_and_serves_income_statement_and_an_account(tmp_path: Path) -> None:
    workspace = posted_demo(tmp_path / "demo")
    assert FavaLedger(str(workspace.ledger_path)).errors == []
    port = free_port()
    server = subprocess.Popen(
        [BEANBILL, "fava", "-w", str(workspace.root), "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            try:
                status, page = fetch(f"{base}/")
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.3)
        assert status == 200
        slug = "nimbus-cloud-sas-billing-ledger"
        status, page = fetch(f"{base}/{slug}/income_statement/")
        assert status == 200 and "Income:Usage:Compute" in page
        status, page = fetch(f"{base}/{slug}/account/Liabilities:Credits:Org-0003/")
        assert status == 200 and "Org-0003" in page
    finally:
        server.terminate()
        server.wait(timeout=10)

"""`beanbill run`: the nightly sequence end to end, and a second night that changes nothing."""

from __future__ import annotations

import os
import subprocess

from beanbill.ledger.books import ledger_errors
from beanbill.stripe_peer import API_KEY
from tests.support import BEANBILL, Issued


def test_the_nightly_run_pushes_and_reconciles_and_repeats_as_a_no_op(
    issued: Issued,
    localstripe: str,
) -> None:
    workspace = issued()
    command = [BEANBILL, "run", "-w", str(workspace.root), "-p", "2026-10", "--as-of", "2026-11-05"]
    environment = {**os.environ, "STRIPE_SECRET_KEY": API_KEY}
    first = subprocess.run(command, env=environment, capture_output=True, text=True)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "sync push: 4 synced now, 0 already synced" in first.stdout
    assert "0 discrepancies" in first.stdout
    ledger = {p: p.read_text() for p in workspace.root.glob("books/**/*.beancount")}
    second = subprocess.run(command, env=environment, capture_output=True, text=True)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "invoice: 0 issued" in second.stdout
    assert "sync push: 0 synced now, 4 already synced" in second.stdout
    assert {p: p.read_text() for p in workspace.root.glob("books/**/*.beancount")} == ledger
    assert ledger_errors(workspace.ledger_path) == []

    without_key = {k: v for k, v in environment.items() if k != "STRIPE_SECRET_KEY"}
    refused = subprocess.run(command, env=without_key, capture_output=True, text=True)
    assert refused.returncode == 2 and "STRIPE_SECRET_KEY is not set" in refused.stderr

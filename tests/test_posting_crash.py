"""`beanbill post` killed at any moment: the ledger still loads; a re-run completes it exactly."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from beancount import loader

from beanbill.examples import CATALOG, SETTINGS
from beanbill.rating.ingest import ingest
from beanbill.rating.periods import Month
from beanbill.rating.rate import rate_months
from beanbill.rating.workspace import Workspace
from tests.support import BEAN_CHECK, BEANBILL, write_jsonl, write_workspace

ORGANIZATIONS = 3_000
HOSTILE_NAME = 'Evil "Corp" \\ ; 2026-01-01 open Assets:Stolen EUR ^link #tag'


def build(root: Path) -> Workspace:
    root.mkdir(parents=True)
    customers = [
        {"id": f"org-{i:05d}", "name": f"{HOSTILE_NAME} {i}", "address": ["x"], "country": "FR",
         "email": f"b@o{i}.example", "billing_mode": ("postpaid", "prepaid", "provisioned")[i % 3],
         "billing_period": ("monthly", "weekly", "daily")[i % 3]}
        for i in range(ORGANIZATIONS)
    ]  # fmt: skip
    workspace = write_workspace(root, SETTINGS, CATALOG, customers)
    events = [
        {"id": f"e{i}-{d}", "org": f"org-{i:05d}", "resource": "app", "meter": "cpu",
         "start": f"2026-10-{d:02d}T22:00:00Z", "end": f"2026-10-{d + 1:02d}T03:00:00Z"}
        for i in range(ORGANIZATIONS) for d in (2, 14, 27)
    ]  # fmt: skip
    ingest(workspace, [write_jsonl(root / "usage.jsonl", events)])
    rate_months(workspace, [Month(2026, 10)])
    return workspace


def post_command(workspace: Path) -> list[str]:
    return [BEANBILL, "post", "-w", str(workspace), "-p", "2026-10", "--as-of", "2026-11-22"]


def ledger_files(root: Path) -> dict[str, bytes]:
    files = [root / "ledger.beancount", *sorted((root / "books").rglob("*.beancount"))]
    return {str(p.relative_to(root)): p.read_bytes() for p in files if p.exists()}


def test_killing_post_mid_run_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    crashed = build(tmp_path / "crashed").root
    reference = tmp_path / "reference"
    shutil.copytree(crashed, reference)
    subprocess.run(post_command(reference), check=True, capture_output=True)
    partial = []
    milestones = ["books/accounts.beancount", "books/2026-10/usage.beancount"]
    for milestone in milestones:  # kill the moment each file lands, i.e. in mid-run
        process = subprocess.Popen(post_command(crashed), stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while not (crashed / milestone).exists() and time.monotonic() < deadline:
            time.sleep(0.002)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        entries, errors, _ = loader.load_file(str(crashed / "ledger.beancount"))
        assert errors == []
        partial.append(sum(1 for e in entries if e.meta.get("txn-id", "").startswith("usage:")))
    final_count = sum(
        1 for e in loader.load_file(str(reference / "ledger.beancount"))[0]
        if e.meta.get("txn-id", "").startswith("usage:")
    )  # fmt: skip
    assert partial[0] < final_count, partial  # the first kill left work undone
    subprocess.run(post_command(crashed), check=True, capture_output=True)
    assert ledger_files(crashed) == ledger_files(reference)
    ledger = str(crashed / "ledger.beancount")
    check = subprocess.run([BEAN_CHECK, ledger], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    entries, _, _ = loader.load_file(str(crashed / "ledger.beancount"))
    names = {e.meta["org-name"] for e in entries if "org-name" in e.meta}
    assert f"{HOSTILE_NAME} 7" in names
    assert not any(getattr(e, "account", "") == "Assets:Stolen" for e in entries)
    print("usage transactions seen after each kill:", partial)

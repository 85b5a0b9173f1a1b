"""The Tryton connector when the wire or the process fails: faults injected by the loopback
proxy between beanbill and a real trytond (tests/peers/fault_proxy.py), and a ``sync push``
killed with SIGKILL mid-batch. Every invoice ends in Tryton exactly once, with our totals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from datetime import date
from decimal import Decimal
from pathlib import Path

from beanbill.rating.workspace import Workspace
from beanbill.sync.state import SqliteSyncState
from beanbill.sync_commands import run_reconcile
from tests.peers.fault_proxy import Fault, fault_proxy
from tests.peers.tryton import TrytonPeer
from tests.support import push
from tests.test_tryton import (
    assert_each_invoice_once_with_our_totals,
    invoice_of,
    october_issued,
    payment_lines,
    remote_invoices,
    stripe_payment,
    tryton_of,
)

BEANBILL = str(Path(sys.executable).with_name("beanbill"))
KILL_WAIT_SECONDS = 60.0
TIMEOUT_SECONDS = 4
CYCLE = [Fault.DROP_AFTER, Fault.ERROR_AFTER, Fault.STALL_AFTER, Fault.DROP_BEFORE,
         Fault.RATE_LIMITED]  # fmt: skip


def retarget(workspace: Workspace, url: str) -> Workspace:
    """The same workspace pointed at another Tryton address (the proxy starts after issuing:
    issuing forks renderers, which must not happen while the proxy's threads run)."""
    settings = workspace.root / "beanbill.toml"
    old = workspace.settings.sync.tryton.url if workspace.settings.sync.tryton else ""
    settings.write_text(settings.read_text().replace(f'"{old}"', f'"{url}"'))
    return Workspace.load(workspace.root)


def faulty_plan(budget: int) -> tuple[Callable[[int, str, str], Fault], Counter[str]]:
    """Every third request fails, each kind in turn, ``budget`` times; then the wire heals."""
    seen = Counter[str]()

    def plan(number: int, method: str, path: str) -> Fault:
        if seen["faults"] >= budget or number % 3:
            return Fault.NONE
        seen["faults"] += 1
        return CYCLE[seen["faults"] % len(CYCLE)]

    return plan, seen


def test_faults_on_the_wire_neither_lose_nor_duplicate(
    make_workspace: Callable[..., Workspace], tmp_path: Path, tryton: TrytonPeer
) -> None:
    # Posting renders Tryton's report (about a second): the timeout leaves room for it.
    sync = {"tryton": tryton.settings(timeout_seconds=TIMEOUT_SECONDS), "attempts": 8}
    workspace = october_issued(make_workspace, tmp_path, sync)
    plan, _ = faulty_plan(2 * len(CYCLE))
    with fault_proxy(tryton.url, plan, stall_seconds=TIMEOUT_SECONDS + 1) as proxy:
        faulty = retarget(workspace, proxy.url)  # type: ignore[attr-defined]
        summary = push(faulty)
        assert summary.dead == [], (summary.dead, proxy.refusals)
        paid = invoice_of(faulty, "fr-small")
        stripe_payment(faulty, paid.number, paid.due_minor, "fr-small")
        (report,) = run_reconcile(faulty, date(2026, 10, 1))
    assert {fault for *_, fault in proxy.faults} == set(CYCLE), proxy.faults
    assert report.discrepancies == []
    workspace = retarget(faulty, tryton.url)
    assert_each_invoice_once_with_our_totals(workspace)
    assert len(payment_lines(tryton_of(workspace), paid.number)) == 1
    attempts = [r.attempts for r in SqliteSyncState(workspace.state_dir).records()]
    assert max(attempts) > 1


def test_sync_push_killed_mid_batch_then_run_again_makes_no_duplicate(
    make_workspace: Callable[..., Workspace], tmp_path: Path, tryton: TrytonPeer
) -> None:
    workspace = october_issued(make_workspace, tmp_path, {"tryton": tryton.settings()})
    connector = tryton_of(workspace)
    command = [BEANBILL, "sync", "push", "-w", str(workspace.root)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + KILL_WAIT_SECONDS
    while time.monotonic() < deadline and process.poll() is None:
        if remote_invoices(connector):  # the first invoice exists: the batch is under way
            break
        time.sleep(0.05)
    assert process.poll() is None, "sync push ended before it could be killed"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    partial = sum(len(found) for found in remote_invoices(connector).values())
    assert 0 < partial < 4
    rerun = subprocess.run(command, capture_output=True, text=True, env=os.environ)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert_each_invoice_once_with_our_totals(workspace)
    for found in remote_invoices(connector).values():
        assert [invoice["total_amount"] > Decimal(0) for invoice in found] == [True]

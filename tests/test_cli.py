"""The command line, run as a user runs it: the installed ``beanbill`` in a subprocess."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

from tests.support import BEAN_CHECK, BEANBILL, write_jsonl


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BEANBILL, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
        env={**os.environ, "COLUMNS": "100"},
    )


def tree_digest(root: Path, folders: tuple[str, ...]) -> dict[str, str]:
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for folder in folders
        for path in sorted((root / folder).rglob("*"))
        if path.is_file() and path.name != "payments.beancount"  # Stripe's ids are its own
    }


def test_help_explains_commands_and_exit_codes() -> None:
    result = run("--help")
    assert result.returncode == 0
    for word in ("init", "ingest", "rate", "demo", "report", "Exit codes"):
        assert word in result.stdout
    assert "--period" in run("rate", "--help").stdout


def test_demo_is_deterministic_and_prints_where_results_are(tmp_path: Path) -> None:
    first = run("demo", "--workspace", str(tmp_path / "a"), "--customers", "10", "--seed", "5")
    assert first.returncode == 0, first.stderr
    assert "Results:" in first.stdout and "rejected" in first.stdout
    assert "Total" in first.stdout
    assert "bean-check: no errors" in first.stdout
    assert "(provisioned): credits 0.00 EUR, over-consumption owed" in first.stdout
    assert "0 dead letters" in first.stdout and "0 discrepancies" in first.stdout
    assert "payments posted by `beanbill serve`" in first.stdout
    assert "E-mails sent:" in first.stdout and "HubSpot" in first.stdout
    ledger = str(tmp_path / "a" / "ledger.beancount")
    checked = subprocess.run([BEAN_CHECK, ledger], capture_output=True, text=True, timeout=120)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # The second run is given a relative workspace path: the demo takes one as well.
    second = run("demo", "--workspace", "b", "--customers", "10", "--seed", "5", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert (tmp_path / "b" / "rated" / "month=2026-10" / "lines.parquet").is_file()
    folders = ("inbox", "rated", "books")
    assert tree_digest(tmp_path / "a", folders) == tree_digest(tmp_path / "b", folders)


def test_init_ingest_rate_report_and_exit_codes(tmp_path: Path) -> None:
    workspace = tmp_path / "billing"
    created = run("init", str(workspace))
    assert created.returncode == 0 and "beanbill ingest" in created.stdout
    assert (workspace / "inbox" / "usage-2026-10.jsonl").is_file()
    assert run("init", str(workspace)).returncode == 2  # refuses to overwrite
    assert "OK:" in run("check", "-w", str(workspace)).stdout
    usage = write_jsonl(
        tmp_path / "usage.jsonl",
        [
            {
                "id": "a",
                "org": "org-0001",
                "resource": "app",
                "meter": "cpu",
                "start": "2026-11-01T10:00:00Z",
                "end": "2026-11-01T12:00:00Z",
                "quantity": 4,
            },
            {
                "id": "b",
                "org": "org-0001",
                "resource": "app",
                "meter": "cpu",
                "start": "2026-11-01T10:00:00Z",
                "end": "2026-11-01T09:00:00Z",
            },
        ],
    )
    ingested = run("ingest", "-w", str(workspace), "--json", str(usage))
    assert ingested.returncode == 1  # done, with a reject
    summary = json.loads(ingested.stdout)
    assert (summary["accepted"], summary["rejected"]) == (1, 1)
    assert Path(summary["rejects"]).is_file()
    again = run("ingest", "-w", str(workspace), str(usage))
    assert again.returncode == 1 and "duplicates 1" in again.stdout
    rated = run("rate", "-w", str(workspace), "--period", "2026-11")
    assert rated.returncode == 0, rated.stderr
    assert "2026-11:" in rated.stdout
    report = run("report", "-w", str(workspace), "--period", "2026-11")
    assert "Compute" in report.stdout


def test_errors_are_clear_and_exit_with_2(tmp_path: Path) -> None:
    result = run("rate", "-w", str(tmp_path), "--period", "2026-11")
    assert result.returncode == 2
    assert "not a beanbill workspace" in result.stderr
    assert "Traceback" not in result.stderr
    run("init", str(tmp_path / "w"))
    bad_period = run("rate", "-w", str(tmp_path / "w"), "--period", "November")
    assert bad_period.returncode == 2 and "YYYY-MM" in bad_period.stderr
    not_rated = run("report", "-w", str(tmp_path / "w"), "--period", "2026-11")
    assert not_rated.returncode == 2 and "not rated yet" in not_rated.stderr

"""The register of closed billing periods, in the workspace's SQLite state.

A period is closed once its consumption is posted to the ledger (the ledger issue
closes them). Events that arrive later for a closed period are still stored, flagged
``late`` and reported, so the next period can regularize them.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

STATE_FILE = "periods.sqlite"
BUSY_TIMEOUT_SECONDS = 30.0


class ClosedPeriods:
    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / STATE_FILE

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_SECONDS)
        connection.execute("PRAGMA journal_mode = WAL")
        connection.execute("PRAGMA synchronous = FULL")
        connection.execute(
            "CREATE TABLE IF NOT EXISTS closed_period ("
            " org TEXT NOT NULL, period TEXT NOT NULL, closed_at TEXT NOT NULL,"
            " PRIMARY KEY (org, period))"
        )
        return connection

    def close(self, keys: Iterable[tuple[str, str]]) -> None:
        """Close (org, period) pairs; closing one twice keeps the first closing time."""
        now = datetime.now(UTC).isoformat(timespec="seconds")
        connection = self._connect()
        try:
            with connection:
                connection.executemany(
                    "INSERT OR IGNORE INTO closed_period VALUES (?, ?, ?)",
                    [(org, period, now) for org, period in keys],
                )
        finally:
            connection.close()

    def all_keys(self) -> list[tuple[str, str]]:
        if not self.path.exists():
            return []
        connection = self._connect()
        try:
            rows = connection.execute("SELECT org, period FROM closed_period").fetchall()
        finally:
            connection.close()
        return [(str(org), str(period)) for org, period in rows]

"""The register of closed billing periods, in the workspace's SQLite state.

A period is closed once its consumption is posted to the ledger (``beanbill post``
closes it). Events that arrive later for a closed period are still stored, flagged
``late`` and reported, so the next period can regularize them.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

from beanbill.rating.storage import sqlite_state

STATE_FILE = "periods.sqlite"
SCHEMA = """CREATE TABLE IF NOT EXISTS closed_period (
    org TEXT NOT NULL, period TEXT NOT NULL, closed_at TEXT NOT NULL, PRIMARY KEY (org, period));"""


class ClosedPeriods:
    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / STATE_FILE

    def close(self, keys: Iterable[tuple[str, str]]) -> None:
        """Close (org, period) pairs; closing one twice keeps the first closing time."""
        now = datetime.now(UTC).isoformat(timespec="seconds")
        with sqlite_state(self.path, SCHEMA) as connection:
            connection.execute("BEGIN")
            connection.executemany(
                "INSERT OR IGNORE INTO closed_period VALUES (?, ?, ?)",
                [(org, period, now) for org, period in keys],
            )
            connection.execute("COMMIT")

    def all_keys(self) -> list[tuple[str, str]]:
        if not self.path.exists():
            return []
        with sqlite_state(self.path, SCHEMA) as connection:
            rows = connection.execute("SELECT org, period FROM closed_period").fetchall()
        return [(str(org), str(period)) for org, period in rows]

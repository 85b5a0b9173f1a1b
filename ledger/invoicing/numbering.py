"""Gapless, durable invoice numbers: assigned at issuance, never skipped, never reused.

A number is bound to a document key (what is being invoiced, e.g.
``invoice:org-0001:2026-10``) in one SQLite transaction (WAL, synchronous=FULL) that
also advances the series. Asking again for the same key returns the same number, so a
crash after assignment and before the ledger write is finished by re-running: the
document is derived again, written under the same number, then marked issued.
``pending()`` lists numbers assigned but not yet issued, for the issuer to complete
first. Numbers therefore form an unbroken sequence per series.

``NumberStore`` is what the issuer needs; ``InvoiceNumbers`` is the embedded SQLite store
(one machine, serialized by the file's lock). With ``[state] url`` set, ``open_numbers``
gives the PostgreSQL store (``numbering_postgres``) that several processes and machines
share, with the same methods and answers.
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
from datetime import UTC, date, datetime
from pathlib import Path
from typing import NamedTuple, Protocol

from beanbill.rating.config import StateSettings
from beanbill.rating.errors import BeanbillError
from beanbill.rating.storage import sqlite_state
from beanbill.rating.workspace import Workspace

STATE_FILE = "invoices.sqlite"
SERIES_PATTERN = re.compile(r"^[A-Z][A-Z0-9-]{0,31}$")
NUMBER_DIGITS = 6
MAX_NUMBER = 10**NUMBER_DIGITS - 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS series (name TEXT PRIMARY KEY, next_value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS assigned (
    number TEXT PRIMARY KEY,
    series TEXT NOT NULL,
    value INTEGER NOT NULL,
    document_key TEXT NOT NULL UNIQUE,
    issue_date TEXT NOT NULL,
    assigned_at TEXT NOT NULL,
    issued_at TEXT,
    UNIQUE (series, value)
);
"""


class NumberingError(BeanbillError):
    """A series or document key is invalid, or a series is exhausted."""


class Assigned(NamedTuple):
    number: str
    series: str
    value: int
    document_key: str
    issued: bool
    issue_date: date


def format_number(series: str, value: int) -> str:
    return f"{series}-{value:0{NUMBER_DIGITS}d}"


class NumberStore(Protocol):
    """Where numbers are bound to documents; ``location`` names it in messages."""

    @property
    def location(self) -> str: ...
    def assign(self, series: str, document_key: str, issue_date: date) -> Assigned: ...
    def mark_issued(self, number: str) -> None: ...
    def pending(self) -> list[Assigned]: ...
    def all(self) -> list[Assigned]: ...
    def by_number(self, number: str) -> Assigned | None: ...
    def pending_for(self, document_key: str) -> Assigned | None: ...
    def exists(self) -> bool: ...
    def restore(self, issued: list[Assigned]) -> None: ...


class InvoiceNumbers:
    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / STATE_FILE

    @property
    def location(self) -> str:
        return str(self.path)

    def _connection(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        return sqlite_state(self.path, SCHEMA)

    def assign(self, series: str, document_key: str, issue_date: date) -> Assigned:
        """The number of ``document_key``, assigning the next one of ``series`` if it has none.

        The issue date is stored with the number, so a document finished after a crash
        carries the date it was first issued with.
        """
        if not SERIES_PATTERN.fullmatch(series):
            raise NumberingError(f"series {series!r}: use capitals, digits and '-', e.g. INV-2026")
        with self._connection() as connection:
            connection.execute("BEGIN IMMEDIATE")
            try:
                row = connection.execute(
                    "SELECT number, series, value, issued_at, issue_date FROM assigned "
                    "WHERE document_key = ?",
                    (document_key,),
                ).fetchone()
                if row is not None:
                    connection.execute("COMMIT")
                    return Assigned(
                        row[0], row[1], row[2], document_key, row[3] is not None,
                        date.fromisoformat(row[4]),
                    )  # fmt: skip
                (latest,) = connection.execute(
                    "SELECT max(issue_date) FROM assigned WHERE series = ?", (series,)
                ).fetchone()
                if latest is not None and latest > issue_date.isoformat():
                    raise NumberingError(
                        f"series {series}: a number was issued on {latest}; one dated "
                        f"{issue_date} would put the series out of date order"
                    )
                connection.execute("INSERT OR IGNORE INTO series VALUES (?, 1)", (series,))
                (value,) = connection.execute(
                    "SELECT next_value FROM series WHERE name = ?", (series,)
                ).fetchone()
                if value > MAX_NUMBER:
                    raise NumberingError(f"series {series} is exhausted at {MAX_NUMBER}")
                number = format_number(series, value)
                connection.execute(
                    "INSERT INTO assigned VALUES (?, ?, ?, ?, ?, ?, NULL)",
                    (number, series, value, document_key, issue_date.isoformat(), _now()),
                )
                connection.execute(
                    "UPDATE series SET next_value = ? WHERE name = ?", (value + 1, series)
                )
                connection.execute("COMMIT")
            except BaseException:
                connection.execute("ROLLBACK")
                raise
        return Assigned(number, series, value, document_key, False, issue_date)

    def mark_issued(self, number: str) -> None:
        with self._connection() as connection:
            updated = connection.execute(
                "UPDATE assigned SET issued_at = coalesce(issued_at, ?) WHERE number = ?",
                (_now(), number),
            ).rowcount
        if updated != 1:
            raise NumberingError(f"number {number} was never assigned")

    def pending(self) -> list[Assigned]:
        """Assigned but not issued yet (a crash came in between): complete these first."""
        with self._connection() as connection:
            rows = connection.execute(
                "SELECT number, series, value, document_key, issue_date FROM assigned "
                "WHERE issued_at IS NULL ORDER BY series, value"
            ).fetchall()
        return [Assigned(r[0], r[1], r[2], r[3], False, date.fromisoformat(r[4])) for r in rows]

    def all(self) -> list[Assigned]:
        with self._connection() as connection:
            rows = connection.execute(
                "SELECT number, series, value, document_key, issued_at, issue_date FROM assigned "
                "ORDER BY series, value"
            ).fetchall()
        return [
            Assigned(r[0], r[1], r[2], r[3], r[4] is not None, date.fromisoformat(r[5]))
            for r in rows
        ]

    def by_number(self, number: str) -> Assigned | None:
        return next((a for a in self.all() if a.number == number), None)

    def pending_for(self, document_key: str) -> Assigned | None:
        """The number assigned to ``document_key`` and not issued yet, if any."""
        return next((a for a in self.pending() if a.document_key == document_key), None)

    def exists(self) -> bool:
        return self.path.exists()

    def restore(self, issued: list[Assigned]) -> None:
        """Fill an empty state with numbers issued according to the ledger (after a loss).

        Each series continues after its highest issued value, so no number is reused.
        """
        with self._connection() as connection:
            connection.execute("BEGIN IMMEDIATE")
            try:
                (count,) = connection.execute("SELECT count(*) FROM assigned").fetchone()
                if count:
                    raise NumberingError(f"{self.path} is not empty: it is never overwritten")
                now = _now()
                for item in issued:
                    connection.execute(
                        "INSERT INTO assigned VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (item.number, item.series, item.value, item.document_key,
                         item.issue_date.isoformat(), now, now),
                    )  # fmt: skip
                    connection.execute(
                        "INSERT INTO series VALUES (?, ?) ON CONFLICT (name) DO UPDATE "
                        "SET next_value = max(next_value, excluded.next_value)",
                        (item.series, item.value + 1),
                    )
                connection.execute("COMMIT")
            except BaseException:
                connection.execute("ROLLBACK")
                raise


def numbers_at(state_dir: Path, settings: StateSettings) -> NumberStore:
    """The numbering store ``settings`` choose: PostgreSQL when a URL is set, else the
    SQLite file in ``state_dir``."""
    if settings.url is None:
        return InvoiceNumbers(state_dir)
    from beanbill.ledger.invoicing.numbering_postgres import PostgresInvoiceNumbers

    return PostgresInvoiceNumbers(settings.url, settings.password_env)


def open_numbers(workspace: Workspace) -> NumberStore:
    """The workspace's numbering store, as its ``[state]`` settings say."""
    return numbers_at(workspace.state_dir, workspace.settings.state)


def rebuild_advice(workspace: Workspace) -> str:
    """What to do with a numbering state that contradicts the ledger (older than it, say):
    set it aside, never lost (the file moved, or the tables saved and emptied), and run
    again: the run rebuilds it from the ledger. The steps are those of the store the
    workspace uses: a message must not send the user to ``state/invoices.sqlite`` when
    ``[state] url`` is set."""
    settings = workspace.settings.state
    if settings.url is None:
        path = workspace.state_dir / STATE_FILE
        return f"move {path} aside and run again: it is rebuilt from the ledger"
    from beanbill.ledger.invoicing.numbering_postgres import REBUILD_ADVICE

    return REBUILD_ADVICE


def parse_number(number: str) -> tuple[str, int]:
    """(series, value) of a number written by ``format_number``."""
    series, _, digits = number.rpartition("-")
    if not SERIES_PATTERN.fullmatch(series) or not digits.isdigit() or len(digits) != NUMBER_DIGITS:
        raise NumberingError(f"{number!r} is not a number of a beanbill series")
    return series, int(digits)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")

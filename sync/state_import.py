"""Moving a workspace's state from SQLite to PostgreSQL (`beanbill sync import-sqlite`).

A workspace that ran on the SQLite default holds in ``state/sync.sqlite`` what must not be
lost nor done twice: push records (what each target already has, with its remote ids),
dead letters, the webhook inbox, payment statuses, e-mail resends and CRM digests. Once
``[state] url`` points at PostgreSQL, a push would otherwise start from nothing and send
every document (and every e-mail) again. This copies each table, row for row, in one
transaction; the invoice numbering needs no copy (PostgreSQL's is rebuilt from the
ledger on first use), but an SQLite numbering with a number assigned and not issued is
refused first, since only the SQLite file knows it.

It never overwrites: the PostgreSQL tables must be empty, or hold exactly the SQLite rows
already (a second run changes nothing and says so). The SQLite file keeps its rows (its
schema is brought to this beanbill's version first, as any command would). The tables are
read in one read transaction, a snapshot, under the workspace lock and with the inbox
writer's role taken, so that no `serve` on SQLite keeps events the copy would miss.
"""

from __future__ import annotations

import contextlib
import fcntl
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from beanbill.ledger.invoicing.numbering import STATE_FILE as NUMBERING_FILE
from beanbill.ledger.invoicing.numbering import InvoiceNumbers
from beanbill.rating.config import StateSettings
from beanbill.rating.errors import BeanbillError
from beanbill.rating.storage import exclusive_lock
from beanbill.rating.workspace import LOCK_FILE, SETTINGS_FILE
from beanbill.sync import state_postgres
from beanbill.sync.state import (
    DAMAGED_FILE,
    MIGRATIONS,
    STATE_FILE,
    SqliteSyncState,
    SyncStateError,
)

# Every table of the sync state, in an order that never inserts a row before one it needs.
TABLES = ("push", "inbox", "remote_map", "payment_status", "delivery", "crm_company")
MAX_ROWS = 10_000_000  # per table: a bound on what one transaction copies


class StateImportError(BeanbillError):
    """The SQLite state cannot be copied as asked; the message says what to do."""


@dataclass(frozen=True)
class ImportReport:
    """Rows per table: copied now, or found already there (a second run)."""

    copied: tuple[tuple[str, int], ...]
    already_there: bool

    @property
    def rows(self) -> int:
        return sum(count for _, count in self.copied)


def _sqlite_rows(
    connection: sqlite3.Connection, path: Path, table: str
) -> tuple[list[str], list[tuple[Any, ...]]]:
    columns = [str(row[1]) for row in connection.execute(f"PRAGMA table_info({table})")]
    (count,) = connection.execute(f"SELECT count(*) FROM {table}").fetchone()
    if count > MAX_ROWS:
        raise StateImportError(f"{path}: {table} holds {count:,} rows; at most {MAX_ROWS:,}")
    listing = ", ".join(columns)
    return columns, connection.execute(f"SELECT {listing} FROM {table}").fetchall()


@contextlib.contextmanager
def _no_server_running(state_dir: Path) -> Iterator[None]:
    """Hold the inbox writer's role while copying: a `beanbill serve` on SQLite holds it
    while it runs (and would keep webhooks in the file after the copy was taken)."""
    from beanbill.sync.serve import WRITER_LOCK_FILE

    path = state_dir / WRITER_LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StateImportError(
                f"a `beanbill serve` is running on this workspace ({path} is held): stop "
                "it, then import"
            ) from None
        yield  # closing the file releases the lock


def _refuse_pending_numbers(state_dir: Path) -> None:
    """Only the SQLite numbering knows a number assigned and not issued (a crash came in
    between): the numbering on PostgreSQL, rebuilt from the ledger, could give it to
    another document. They are finished on SQLite, which needs ``[state] url`` unset."""
    path = state_dir / NUMBERING_FILE
    if not path.exists():
        return
    try:
        pending = InvoiceNumbers(state_dir).pending()
    except sqlite3.DatabaseError as error:
        if error.sqlite_errorname not in DAMAGED_FILE:
            raise
        raise StateImportError(
            f"{path} cannot be read ({error}): move it aside and import again (the numbering "
            "on PostgreSQL is rebuilt from the ledger)"
        ) from error
    if pending:
        raise StateImportError(
            f"{path}: {len(pending)} number(s) assigned and not issued (first: "
            f"{pending[0].number}), known to this file only. Finish them on SQLite: take "
            f"[state] url out of {SETTINGS_FILE}, run `beanbill invoice` (or the interrupted "
            "`invoice credit` or `credits buy`) again, put [state] url back, then import"
        )


def _sqlite_tables(state_dir: Path) -> list[tuple[str, list[str], list[tuple[Any, ...]]]]:
    """Every table of ``sync.sqlite`` (name, columns, rows), at the current schema version
    (as PostgreSQL's will be); an unreadable file is refused before anything is copied."""
    source = state_dir / STATE_FILE
    try:
        SqliteSyncState(state_dir)
        with contextlib.closing(
            sqlite3.connect(f"file:{source}?mode=ro", uri=True, isolation_level=None)
        ) as connection:
            connection.execute("BEGIN")  # one snapshot of every table
            tables = [(table, *_sqlite_rows(connection, source, table)) for table in TABLES]
            connection.execute("COMMIT")
        return tables
    except (sqlite3.DatabaseError, SyncStateError) as error:
        # Damaged: said by SQLite here, or by the store when it opens the file.
        damage = error if isinstance(error, sqlite3.DatabaseError) else error.__cause__
        if not isinstance(damage, sqlite3.DatabaseError):
            raise
        if damage.sqlite_errorname not in DAMAGED_FILE:
            raise
        raise StateImportError(
            f"{source} cannot be read ({damage}): restore it from a backup, then import "
            "(nothing was copied)"
        ) from error


def import_sqlite_state(state_dir: Path, settings: StateSettings) -> ImportReport:
    """Copy ``state_dir/sync.sqlite`` into the PostgreSQL database of ``settings``."""
    if settings.url is None:
        raise StateImportError("[state] url is not set: point it at the PostgreSQL database first")
    source = state_dir / STATE_FILE
    if not source.is_file():
        raise StateImportError(f"{source}: no such file (nothing to import)")
    with exclusive_lock(state_dir / LOCK_FILE), _no_server_running(state_dir):
        _refuse_pending_numbers(state_dir)
        return _copy_tables(_sqlite_tables(state_dir), settings)


def _copy_tables(
    tables: list[tuple[str, list[str], list[tuple[Any, ...]]]], settings: StateSettings
) -> ImportReport:
    """The tables into PostgreSQL in one transaction, or a second run recognized."""
    assert settings.url is not None  # checked by the caller
    target = state_postgres.PostgresSyncState(settings.url, settings.password_env)
    if target.schema_version() != len(MIGRATIONS):  # pragma: no cover - one beanbill
        raise StateImportError("the two stores are at different schema versions")
    with target.database.connection() as connection, connection.transaction():
        try:
            connection.execute(f"LOCK TABLE {', '.join(TABLES)} IN EXCLUSIVE MODE NOWAIT")
        except psycopg.errors.LockNotAvailable:
            raise StateImportError(
                f"{target.location} is in use by another beanbill (a `serve` replica, a "
                "push): stop it, then import"
            ) from None
        present = {
            table: connection.execute(f"SELECT {', '.join(columns)} FROM {table}").fetchall()
            for table, columns, _ in tables
        }
        if any(present.values()):
            return _already_there(tables, present, target.location)
        for table, columns, rows in tables:
            _copy(connection, table, columns, rows)
    return ImportReport(tuple((table, len(rows)) for table, _, rows in tables), False)


def _already_there(
    tables: Sequence[tuple[str, list[str], list[tuple[Any, ...]]]],
    present: dict[str, list[tuple[Any, ...]]],
    location: str,
) -> ImportReport:
    """A second run: nothing to do when PostgreSQL holds exactly these rows; else refuse."""
    for table, _, rows in tables:
        if sorted(map(tuple, present[table])) != sorted(rows):
            raise StateImportError(
                f"{location}: {table} already holds other rows ({len(present[table]):,} "
                f"there, {len(rows):,} here); it is never overwritten: import into an "
                "empty database or schema"
            )
    return ImportReport(tuple((table, len(rows)) for table, _, rows in tables), True)


def _copy(connection: Any, table: str, columns: list[str], rows: list[tuple[Any, ...]]) -> None:
    if not rows:
        return
    with connection.cursor().copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)

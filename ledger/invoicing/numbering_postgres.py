"""Invoice numbers on a PostgreSQL server, shared by every process and machine that issues.

The SQLite state serializes issuers with one file lock per workspace; several processes on
several machines need the server to do it. ``assign`` takes the series row ``FOR UPDATE``
in the same transaction that inserts the number and advances the series, so concurrent
issuers of a series queue on that row and each sees the previous one's commit: numbers
stay gapless and each document key gets one. A process killed mid-assign leaves an
aborted transaction (the server drops it with the connection): no number, no gap.

Connections and schema migrations come from ``PostgresDatabase``
(``beanbill.rating.storage_postgres``), which the sync state (``beanbill.sync.state_postgres``)
uses too: both keep their tables in the same database, each with its own line in
``beanbill_schema``. psycopg is imported only when a ``[state] url`` asks for PostgreSQL.
"""

from __future__ import annotations

import weakref
from datetime import UTC, date, datetime

import psycopg
from psycopg import errors as pg_errors
from psycopg.rows import TupleRow

from beanbill.ledger.invoicing.numbering import (
    MAX_NUMBER,
    SERIES_PATTERN,
    Assigned,
    NumberingError,
    format_number,
)
from beanbill.rating.storage_postgres import PostgresDatabase, StateDatabaseError

MAX_ASSIGN_TRIES = 2  # a document key taken meanwhile in another series: read it back once
COMPONENT = "numbering"
# ``numbering_origin`` records that the state was started (restored from the ledger, if
# only with nothing): the tables alone exist as soon as the store is opened. Series sort
# by code point, as in SQLite.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE series (name TEXT COLLATE "C" PRIMARY KEY, next_value INTEGER NOT NULL);
    CREATE TABLE assigned (
        number TEXT PRIMARY KEY,
        series TEXT COLLATE "C" NOT NULL,
        value INTEGER NOT NULL,
        document_key TEXT NOT NULL UNIQUE,
        issue_date DATE NOT NULL,
        assigned_at TEXT NOT NULL,
        issued_at TEXT,
        UNIQUE (series, value)
    );
    CREATE TABLE numbering_origin (restored_at TEXT NOT NULL)
    """,
)
# Everything the numbering keeps (the sync state's tables beside them are not touched).
# Emptied, they make ``exists`` false and the next run restores them from the ledger: the
# server's "move it aside", after a copy (nothing is ever destroyed unsaved).
TABLES = ("assigned", "series", "numbering_origin")
REBUILD_ADVICE = (
    "in the database of [state] url, save the numbering (pg_dump "
    + " ".join(f"--table={table}" for table in TABLES)
    + f"), empty it (TRUNCATE {', '.join(TABLES)}) and run again: it is rebuilt from the ledger"
)


class PostgresInvoiceNumbers:
    """``InvoiceNumbers`` on PostgreSQL: the same methods, the same answers."""

    def __init__(self, url: str, password_env: str = "PGPASSWORD") -> None:
        self.database = PostgresDatabase(url, password_env)
        self.location = self.database.location
        weakref.finalize(self, self.database.close)  # its idle connections go with it
        self.database.migrate(COMPONENT, MIGRATIONS, NumberingError)

    def schema_version(self) -> int:
        return self.database.schema_version(COMPONENT)

    def assign(self, series: str, document_key: str, issue_date: date) -> Assigned:
        """The number of ``document_key``, assigning the next one of ``series`` if it has none.

        The series row is locked ``FOR UPDATE`` before the next value is read, and the key
        is looked up again under that lock: an issuer that waited sees what the one before
        it committed (READ COMMITTED takes a new snapshot per statement).
        """
        if not SERIES_PATTERN.fullmatch(series):
            raise NumberingError(f"series {series!r}: use capitals, digits and '-', e.g. INV-2026")
        for _ in range(MAX_ASSIGN_TRIES):
            try:
                return self._assign_once(series, document_key, issue_date)
            except StateDatabaseError as error:
                if not isinstance(error.__cause__, pg_errors.UniqueViolation):
                    raise
        raise NumberingError(f"{document_key}: could not be numbered in {series}")

    def _assign_once(self, series: str, document_key: str, issue_date: date) -> Assigned:
        with self.database.connection() as connection, connection.transaction():
            known = self._assigned_to(connection, document_key)  # asked again: no lock
            if known is not None:
                return known
            connection.execute(
                "INSERT INTO series (name, next_value) VALUES (%s, 1) ON CONFLICT DO NOTHING",
                (series,),
            )
            (value,) = _one(
                connection.execute(
                    "SELECT next_value FROM series WHERE name = %s FOR UPDATE", (series,)
                ).fetchone()
            )
            known = self._assigned_to(connection, document_key)  # by the issuer we waited for
            if known is not None:
                return known
            (latest,) = _one(
                connection.execute(
                    "SELECT max(issue_date) FROM assigned WHERE series = %s", (series,)
                ).fetchone()
            )
            if isinstance(latest, date) and latest > issue_date:
                raise NumberingError(
                    f"series {series}: a number was issued on {latest}; one dated "
                    f"{issue_date} would put the series out of date order"
                )
            next_value = _int(value)
            if next_value > MAX_NUMBER:
                raise NumberingError(f"series {series} is exhausted at {MAX_NUMBER}")
            number = format_number(series, next_value)
            connection.execute(
                "INSERT INTO assigned (number, series, value, document_key, issue_date, "
                "assigned_at) VALUES (%s, %s, %s, %s, %s, %s)",
                (number, series, next_value, document_key, issue_date, _now()),
            )
            connection.execute(
                "UPDATE series SET next_value = %s WHERE name = %s", (next_value + 1, series)
            )
        return Assigned(number, series, next_value, document_key, False, issue_date)

    @staticmethod
    def _assigned_to(
        connection: psycopg.Connection[TupleRow], document_key: str
    ) -> Assigned | None:
        row = connection.execute(
            "SELECT number, series, value, issued_at, issue_date FROM assigned "
            "WHERE document_key = %s",
            (document_key,),
        ).fetchone()
        if row is None:
            return None
        number, series, value, issued_at, issue_date = row
        return Assigned(
            str(number), str(series), _int(value), document_key, issued_at is not None,
            _date(issue_date),
        )  # fmt: skip

    def mark_issued(self, number: str) -> None:
        with self.database.connection() as connection:
            updated = connection.execute(
                "UPDATE assigned SET issued_at = coalesce(issued_at, %s) WHERE number = %s",
                (_now(), number),
            ).rowcount
        if updated != 1:
            raise NumberingError(f"number {number} was never assigned")

    def pending(self) -> list[Assigned]:
        """Assigned but not issued yet (a crash came in between): complete these first."""
        return self._select("WHERE issued_at IS NULL")

    def all(self) -> list[Assigned]:
        return self._select("")

    def _select(self, where: str) -> list[Assigned]:
        with self.database.connection() as connection:
            rows = connection.execute(
                "SELECT number, series, value, document_key, issued_at, issue_date "
                f"FROM assigned {where} ORDER BY series, value"
            ).fetchall()
        return [
            Assigned(str(r[0]), str(r[1]), _int(r[2]), str(r[3]), r[4] is not None, _date(r[5]))
            for r in rows
        ]

    def by_number(self, number: str) -> Assigned | None:
        return next((a for a in self.all() if a.number == number), None)

    def pending_for(self, document_key: str) -> Assigned | None:
        """The number assigned to ``document_key`` and not issued yet, if any."""
        return next((a for a in self.pending() if a.document_key == document_key), None)

    def exists(self) -> bool:
        """Whether this state was ever started (restored from the ledger, or a number
        assigned): the tables alone are created by opening, so they do not count."""
        with self.database.connection() as connection:
            (started,) = _one(
                connection.execute(
                    "SELECT EXISTS (SELECT 1 FROM assigned) "
                    "OR EXISTS (SELECT 1 FROM numbering_origin)"
                ).fetchone()
            )
        return bool(started)

    def restore(self, issued: list[Assigned]) -> None:
        """Fill an empty state with numbers issued according to the ledger (after a loss, or
        when a workspace moves to PostgreSQL). Each series continues after its highest
        issued value, so no number is reused; two restorers at once: the second is refused."""
        now = _now()
        try:
            with self.database.connection() as connection, connection.transaction():
                connection.execute("LOCK TABLE assigned, numbering_origin IN EXCLUSIVE MODE")
                (count,) = _one(connection.execute("SELECT count(*) FROM assigned").fetchone())
                if _int(count):
                    raise NumberingError(
                        f"{self.location} already holds numbers: it is never overwritten"
                    )
                for item in issued:
                    connection.execute(
                        "INSERT INTO assigned VALUES (%s, %s, %s, %s, %s, %s, %s)",
                        (item.number, item.series, item.value, item.document_key,
                         item.issue_date, now, now),
                    )  # fmt: skip
                    connection.execute(
                        "INSERT INTO series VALUES (%s, %s) ON CONFLICT (name) DO UPDATE "
                        "SET next_value = greatest(series.next_value, excluded.next_value)",
                        (item.series, item.value + 1),
                    )
                connection.execute("INSERT INTO numbering_origin VALUES (%s)", (now,))
        except StateDatabaseError as error:
            if isinstance(error.__cause__, pg_errors.UniqueViolation):
                raise NumberingError(f"the ledger numbers a document twice: {error}") from None
            raise


def _one(row: tuple[object, ...] | None) -> tuple[object, ...]:
    if row is None:
        raise StateDatabaseError("the server returned no row where one was due")
    return row


def _int(value: object) -> int:
    if not isinstance(value, int):
        raise StateDatabaseError(f"expected an integer from the server, got {value!r}")
    return value


def _date(value: object) -> date:
    if not isinstance(value, date):
        raise StateDatabaseError(f"expected a date from the server, got {value!r}")
    return value


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")

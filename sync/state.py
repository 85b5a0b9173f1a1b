"""The sync engine's durable state: what was pushed where, and the inbox of webhook events.

``SyncState`` is the small interface the engine uses; ``SqliteSyncState`` is the embedded
default (WAL, synchronous=FULL, one transaction per change) so a crash loses nothing.
``PostgresSyncState`` (``state_postgres``, chosen by ``[state] url``) implements the same
methods on a server that several ``serve`` replicas share; ``open_sync_state`` picks one.
The schema carries a version and is migrated forward on open.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from beanbill.rating.config import StateSettings
from beanbill.rating.errors import BeanbillError
from beanbill.rating.storage import KeptSqlite, sqlite_state, write_bytes_atomically
from beanbill.rating.workspace import Workspace

STATE_FILE = "sync.sqlite"
MAX_ERROR_LENGTH = 2_000
MAX_EVENT_BYTES = 1_000_000
MAX_EVENTS_PER_STORE = 10_000  # one group commit of the inbox
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE push (
        document TEXT NOT NULL,
        target TEXT NOT NULL,
        status TEXT NOT NULL,
        remote_ids TEXT NOT NULL DEFAULT '{}',
        attempts INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (document, target)
    );
    CREATE TABLE inbox (
        source TEXT NOT NULL,
        event_id TEXT NOT NULL,
        event_type TEXT NOT NULL,
        payload TEXT NOT NULL,
        received_at TEXT NOT NULL,
        processed_at TEXT,
        PRIMARY KEY (source, event_id)
    );
    """,
    """
    ALTER TABLE inbox ADD COLUMN outcome TEXT;
    CREATE TABLE remote_map (
        target TEXT NOT NULL,
        kind TEXT NOT NULL,
        local_id TEXT NOT NULL,
        remote_id TEXT NOT NULL,
        PRIMARY KEY (target, kind, local_id)
    );
    CREATE UNIQUE INDEX remote_map_by_remote ON remote_map (target, kind, remote_id);
    CREATE TABLE payment_status (
        target TEXT NOT NULL,
        remote_id TEXT NOT NULL,
        document TEXT,
        status TEXT NOT NULL,
        detail TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (target, remote_id)
    );
    """,
    """
    CREATE TABLE delivery (
        document TEXT NOT NULL,
        target TEXT NOT NULL,
        sequence INTEGER NOT NULL,
        remote_ids TEXT NOT NULL,
        reason TEXT NOT NULL,
        delivered_at TEXT NOT NULL,
        PRIMARY KEY (document, target, sequence)
    );
    CREATE TABLE crm_company (
        target TEXT NOT NULL,
        org TEXT NOT NULL,
        digest TEXT,
        remote_id TEXT,
        last_error TEXT,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (target, org)
    );
    """,
)


# What says an SQLite file itself is damaged (not locked, not a full disk): only then is
# restoring it the fix.
DAMAGED_FILE = ("SQLITE_CORRUPT", "SQLITE_NOTADB")


class SyncStateError(BeanbillError):
    """The sync state cannot be read or is newer than this beanbill."""


class PushStatus(StrEnum):
    PENDING = "pending"
    SYNCED = "synced"
    DEAD = "dead"  # gave up: permanent error or attempts exhausted; `sync retry` re-queues


class PushRecord(NamedTuple):
    document: str
    target: str
    status: PushStatus
    remote_ids: dict[str, str]
    attempts: int
    last_error: str | None
    updated_at: str


class PaymentStatus(NamedTuple):
    target: str
    remote_id: str
    document: str | None
    status: str
    detail: str
    updated_at: str


class Delivery(NamedTuple):
    """A document delivered again on request (``beanbill invoice send``): recorded beside
    its push record, which it never changes."""

    document: str
    target: str
    sequence: int  # 1 for the first resend
    remote_ids: dict[str, str]
    reason: str
    delivered_at: str


class CrmCompany(NamedTuple):
    """An organization as last sent to a CRM: the digest of the properties sent (None:
    never upserted), its company id there, and the last refusal."""

    target: str
    org: str
    digest: str | None
    remote_id: str | None
    last_error: str | None
    updated_at: str


class NewEvent(NamedTuple):
    """An event received, to be kept (``payload_text``: its payload as stored)."""

    source: str
    event_id: str
    event_type: str
    payload_text: str


def payload_text(event_id: str, payload: dict[str, Any]) -> str:
    """The payload as the inbox keeps it; over ``MAX_EVENT_BYTES`` it is refused before
    it can hold up the events stored with it."""
    text = json.dumps(payload, sort_keys=True)
    if len(text) > MAX_EVENT_BYTES:
        raise SyncStateError(f"event {event_id}: payload over {MAX_EVENT_BYTES} bytes")
    return text


class InboxEvent(NamedTuple):
    source: str
    event_id: str
    event_type: str
    payload: dict[str, Any]
    received_at: str


class SyncState(Protocol):
    def record_attempt(self, document: str, target: str, error: str | None) -> PushRecord: ...
    def record_intent(self, document: str, target: str, remote_ids: dict[str, str]) -> None: ...
    def mark_synced(self, document: str, target: str, remote_ids: dict[str, str]) -> None: ...
    def mark_dead(self, document: str, target: str, reason: str) -> None: ...
    def get(self, document: str, target: str) -> PushRecord | None: ...
    def records(self, target: str | None = None) -> list[PushRecord]: ...
    def requeue_dead(self, target: str | None = None) -> int: ...
    def store_event(
        self, source: str, event_id: str, event_type: str, payload: dict[str, Any]
    ) -> bool: ...
    def store_events(self, events: Sequence[NewEvent]) -> list[bool]: ...
    def unprocessed_events(self, source: str, limit: int) -> list[InboxEvent]: ...
    def mark_processed(self, source: str, outcomes: dict[str, str]) -> None: ...
    def inbox_counts(self, source: str) -> dict[str, int]: ...
    def remember(self, target: str, kind: str, local_id: str, remote_id: str) -> None: ...
    def remote_id(self, target: str, kind: str, local_id: str) -> str | None: ...
    def local_id(self, target: str, kind: str, remote_id: str) -> str | None: ...
    def set_status(
        self, target: str, remote_id: str, document: str | None, status: str, detail: str
    ) -> None: ...
    def statuses(self, target: str) -> list[PaymentStatus]: ...
    def next_delivery(self, document: str, target: str) -> int: ...
    def record_delivery(
        self, document: str, target: str, sequence: int, remote_ids: dict[str, str], reason: str
    ) -> None: ...
    def deliveries(self, document: str | None = None) -> list[Delivery]: ...
    def crm_companies(self, target: str) -> dict[str, CrmCompany]: ...
    def record_crm(
        self,
        target: str,
        org: str,
        digest: str | None,
        remote_id: str | None,
        error: str | None,
    ) -> None: ...


def now() -> str:
    """A change's time as every store writes it (UTC, milliseconds): text that sorts."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class SqliteSyncState:
    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / STATE_FILE
        # A server calls this often (each webhook group commit, each writer round): its
        # connections are kept, one per thread.
        self.kept = KeptSqlite(self.path)
        try:
            with sqlite_state(self.path) as connection:
                self._migrate(connection)
        except sqlite3.DatabaseError as error:
            if error.sqlite_errorname not in DAMAGED_FILE:
                raise
            raise SyncStateError(
                f"{self.path} cannot be read ({error}): restore it from a backup. Moved "
                "aside instead, the next push sends every document again: Stripe and "
                "Tryton find what they already hold, but e-mails would go out twice (set "
                "[sync.email] issued_since to the day of the loss first)"
            ) from error

    def _connection(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        return self.kept.connection()

    def _migrate(self, connection: sqlite3.Connection) -> None:
        connection.execute("BEGIN IMMEDIATE")
        try:
            (version,) = connection.execute("PRAGMA user_version").fetchone()
            if version > len(MIGRATIONS):
                raise SyncStateError(
                    f"{self.path} has schema version {version}; this beanbill knows "
                    f"{len(MIGRATIONS)}: upgrade beanbill"
                )
            for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                for statement in filter(str.strip, script.split(";")):
                    connection.execute(statement)
                connection.execute(f"PRAGMA user_version = {number}")
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise

    def schema_version(self) -> int:
        with self._connection() as connection:
            return int(connection.execute("PRAGMA user_version").fetchone()[0])

    def record_attempt(self, document: str, target: str, error: str | None) -> PushRecord:
        stamp = now()
        with self._connection() as connection:
            connection.execute(
                "INSERT INTO push (document, target, status, attempts, last_error, created_at, "
                "updated_at) VALUES (?, ?, 'pending', 1, ?, ?, ?) "
                "ON CONFLICT (document, target) DO UPDATE SET attempts = attempts + 1, "
                "last_error = excluded.last_error, updated_at = excluded.updated_at",
                (document, target, (error or "")[:MAX_ERROR_LENGTH] or None, stamp, stamp),
            )
        record = self.get(document, target)
        if record is None:
            raise SyncStateError(f"{document} → {target}: attempt was not recorded")
        return record

    def record_intent(self, document: str, target: str, remote_ids: dict[str, str]) -> None:
        """What is known before pushing (an e-mail's Message-ID), kept on the pending record
        so that a crash before the answer leaves it in the state; a synced or dead record
        is never touched."""
        stamp = now()
        with self._connection() as connection:
            connection.execute(
                "INSERT INTO push (document, target, status, remote_ids, attempts, created_at, "
                "updated_at) VALUES (?, ?, 'pending', ?, 0, ?, ?) "
                "ON CONFLICT (document, target) DO UPDATE SET remote_ids = excluded.remote_ids, "
                "updated_at = excluded.updated_at WHERE status = 'pending'",
                (document, target, json.dumps(remote_ids, sort_keys=True), stamp, stamp),
            )

    def _set(self, document: str, target: str, status: PushStatus, **fields: str | None) -> None:
        assignments = "".join(f", {name} = ?" for name in fields)
        with self._connection() as connection:
            updated = connection.execute(
                f"UPDATE push SET status = ?, updated_at = ?{assignments} "
                "WHERE document = ? AND target = ?",
                (status.value, now(), *fields.values(), document, target),
            ).rowcount
        if updated != 1:
            raise SyncStateError(f"{document} → {target}: no attempt recorded")

    def mark_synced(self, document: str, target: str, remote_ids: dict[str, str]) -> None:
        self._set(
            document,
            target,
            PushStatus.SYNCED,
            remote_ids=json.dumps(remote_ids, sort_keys=True),
            last_error=None,
        )

    def mark_dead(self, document: str, target: str, reason: str) -> None:
        self._set(document, target, PushStatus.DEAD, last_error=reason[:MAX_ERROR_LENGTH])

    def get(self, document: str, target: str) -> PushRecord | None:
        with self._connection() as connection:
            row = connection.execute(
                "SELECT document, target, status, remote_ids, attempts, last_error, updated_at "
                "FROM push WHERE document = ? AND target = ?",
                (document, target),
            ).fetchone()
        return push_record(row) if row else None

    def records(self, target: str | None = None) -> list[PushRecord]:
        query = (
            "SELECT document, target, status, remote_ids, attempts, last_error, updated_at "
            "FROM push"
        )
        with self._connection() as connection:
            if target is None:
                rows = connection.execute(f"{query} ORDER BY target, document").fetchall()
            else:
                rows = connection.execute(
                    f"{query} WHERE target = ? ORDER BY document", (target,)
                ).fetchall()
        return [push_record(row) for row in rows]

    def requeue_dead(self, target: str | None = None) -> int:
        with self._connection() as connection:
            if target is None:
                cursor = connection.execute(
                    "UPDATE push SET status = 'pending', attempts = 0 WHERE status = 'dead'"
                )
            else:
                cursor = connection.execute(
                    "UPDATE push SET status = 'pending', attempts = 0 "
                    "WHERE status = 'dead' AND target = ?",
                    (target,),
                )
            return int(cursor.rowcount)

    def store_event(
        self, source: str, event_id: str, event_type: str, payload: dict[str, Any]
    ) -> bool:
        """Keep an event durably before it is acknowledged; False if it was already kept."""
        text = payload_text(event_id, payload)
        return self.store_events([NewEvent(source, event_id, event_type, text)])[0]

    def store_events(self, events: Sequence[NewEvent]) -> list[bool]:
        """Keep events durably in one transaction (one fsync: a group commit); for each,
        False if it was already kept."""
        if len(events) > MAX_EVENTS_PER_STORE:
            raise SyncStateError(f"{len(events)} events at once: at most {MAX_EVENTS_PER_STORE}")
        received_at = now()
        kept = []
        with self._connection() as connection:
            connection.execute("BEGIN IMMEDIATE")
            try:
                for event in events:
                    cursor = connection.execute(
                        "INSERT OR IGNORE INTO inbox (source, event_id, event_type, payload, "
                        "received_at) VALUES (?, ?, ?, ?, ?)",
                        (*event, received_at),
                    )
                    kept.append(cursor.rowcount == 1)
                connection.execute("COMMIT")
            except BaseException:
                connection.execute("ROLLBACK")
                raise
        return kept

    def unprocessed_events(self, source: str, limit: int) -> list[InboxEvent]:
        with self._connection() as connection:
            rows = connection.execute(
                "SELECT source, event_id, event_type, payload, received_at FROM inbox "
                "WHERE source = ? AND processed_at IS NULL ORDER BY received_at, event_id LIMIT ?",
                (source, limit),
            ).fetchall()
        return [InboxEvent(r[0], r[1], r[2], json.loads(r[3]), r[4]) for r in rows]

    def mark_processed(self, source: str, outcomes: dict[str, str]) -> None:
        """Close events (event id → what came of it) in one transaction."""
        stamp = now()
        with self._connection() as connection:
            connection.execute("BEGIN IMMEDIATE")
            connection.executemany(
                "UPDATE inbox SET processed_at = coalesce(processed_at, ?), outcome = ? "
                "WHERE source = ? AND event_id = ?",
                [
                    (stamp, outcome[:MAX_ERROR_LENGTH], source, id_)
                    for id_, outcome in outcomes.items()
                ],
            )
            connection.execute("COMMIT")

    def inbox_counts(self, source: str) -> dict[str, int]:
        with self._connection() as connection:
            rows = connection.execute(
                "SELECT CASE WHEN processed_at IS NULL THEN 'waiting' "
                "ELSE coalesce(outcome, '') END, count(*) FROM inbox WHERE source = ? GROUP BY 1",
                (source,),
            ).fetchall()
        return {str(outcome): int(count) for outcome, count in rows}

    def remember(self, target: str, kind: str, local_id: str, remote_id: str) -> None:
        with self._connection() as connection:
            connection.execute(
                "INSERT INTO remote_map (target, kind, local_id, remote_id) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (target, kind, local_id) DO UPDATE SET remote_id = excluded.remote_id",
                (target, kind, local_id, remote_id),
            )

    def remote_id(self, target: str, kind: str, local_id: str) -> str | None:
        with self._connection() as connection:
            row = connection.execute(
                "SELECT remote_id FROM remote_map WHERE target = ? AND kind = ? AND local_id = ?",
                (target, kind, local_id),
            ).fetchone()
        return str(row[0]) if row else None

    def local_id(self, target: str, kind: str, remote_id: str) -> str | None:
        with self._connection() as connection:
            row = connection.execute(
                "SELECT local_id FROM remote_map WHERE target = ? AND kind = ? AND remote_id = ?",
                (target, kind, remote_id),
            ).fetchone()
        return str(row[0]) if row else None

    def set_status(
        self, target: str, remote_id: str, document: str | None, status: str, detail: str
    ) -> None:
        with self._connection() as connection:
            connection.execute(
                "INSERT INTO payment_status (target, remote_id, document, status, detail, "
                "updated_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (target, remote_id) DO UPDATE "
                "SET document = coalesce(excluded.document, document), status = excluded.status,"
                " detail = excluded.detail, updated_at = excluded.updated_at",
                (target, remote_id, document, status, detail[:MAX_ERROR_LENGTH], now()),
            )

    def statuses(self, target: str) -> list[PaymentStatus]:
        with self._connection() as connection:
            rows = connection.execute(
                "SELECT target, remote_id, document, status, detail, updated_at "
                "FROM payment_status WHERE target = ? ORDER BY updated_at, remote_id",
                (target,),
            ).fetchall()
        return [PaymentStatus(*row) for row in rows]

    def next_delivery(self, document: str, target: str) -> int:
        with self._connection() as connection:
            (last,) = connection.execute(
                "SELECT coalesce(max(sequence), 0) FROM delivery WHERE document = ? AND target = ?",
                (document, target),
            ).fetchone()
        return int(last) + 1

    def record_delivery(
        self, document: str, target: str, sequence: int, remote_ids: dict[str, str], reason: str
    ) -> None:
        with self._connection() as connection:
            connection.execute(
                "INSERT INTO delivery (document, target, sequence, remote_ids, reason, "
                "delivered_at) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    document,
                    target,
                    sequence,
                    json.dumps(remote_ids, sort_keys=True),
                    reason[:MAX_ERROR_LENGTH],
                    now(),
                ),
            )

    def deliveries(self, document: str | None = None) -> list[Delivery]:
        query = "SELECT document, target, sequence, remote_ids, reason, delivered_at FROM delivery"
        with self._connection() as connection:
            if document is None:
                rows = connection.execute(f"{query} ORDER BY delivered_at").fetchall()
            else:
                rows = connection.execute(
                    f"{query} WHERE document = ? ORDER BY delivered_at", (document,)
                ).fetchall()
        return [Delivery(r[0], r[1], r[2], json.loads(r[3]), r[4], r[5]) for r in rows]

    def crm_companies(self, target: str) -> dict[str, CrmCompany]:
        with self._connection() as connection:
            rows = connection.execute(
                "SELECT target, org, digest, remote_id, last_error, updated_at FROM crm_company "
                "WHERE target = ?",
                (target,),
            ).fetchall()
        return {row[1]: CrmCompany(*row) for row in rows}

    def record_crm(
        self,
        target: str,
        org: str,
        digest: str | None,
        remote_id: str | None,
        error: str | None,
    ) -> None:
        """After an upsert: its digest and company id; after a refusal: the error, keeping
        the digest and id of the last upsert that went through."""
        with self._connection() as connection:
            connection.execute(
                "INSERT INTO crm_company (target, org, digest, remote_id, last_error, "
                "updated_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (target, org) DO UPDATE SET "
                "digest = coalesce(excluded.digest, digest), "
                "remote_id = coalesce(excluded.remote_id, remote_id), "
                "last_error = excluded.last_error, updated_at = excluded.updated_at",
                (
                    target,
                    org,
                    digest,
                    remote_id,
                    (error or "")[:MAX_ERROR_LENGTH] or None,
                    now(),
                ),
            )


def push_record(row: tuple[Any, ...]) -> PushRecord:
    return PushRecord(
        row[0], row[1], PushStatus(row[2]), json.loads(row[3]), row[4], row[5], row[6]
    )


def state_at(state_dir: Path, settings: StateSettings) -> SyncState:
    """The sync state ``settings`` choose: PostgreSQL when a URL is set (psycopg is imported
    only then), else the SQLite file in ``state_dir``."""
    if settings.url is None:
        return SqliteSyncState(state_dir)
    from beanbill.sync.state_postgres import PostgresSyncState

    return PostgresSyncState(settings.url, settings.password_env)


# Beside the ledger, in the folder backed up with the books: says that this workspace has
# had a sync state, so that a lost one is not taken for a new workspace's first.
SYNC_MARK_FILE = "books/sync-state.json"


def sync_mark(workspace: Workspace) -> Path:
    return workspace.ledger_path.parent / SYNC_MARK_FILE


def open_sync_state(workspace: Workspace) -> SyncState:
    """The workspace's sync state, as its ``[state]`` settings say.

    The SQLite file records what every target already has, which the ledger does not:
    started afresh, a push would send every document again (e-mails to customers among
    them). So a workspace whose books say it had one, and whose file is gone, is refused
    with the fix rather than given an empty state."""
    settings = workspace.settings.state
    if settings.url is not None:
        return state_at(workspace.state_dir, settings)
    path = workspace.state_dir / STATE_FILE
    mark = sync_mark(workspace)
    if not path.exists() and mark.exists():
        raise SyncStateError(
            f"{path} is lost ({mark} says this workspace had one): restore it from a "
            "backup. To start afresh instead, knowing every document is pushed again "
            "(Stripe and Tryton find what they hold; e-mails go out twice unless "
            f"[sync.email] issued_since is set first), delete {mark}"
        )
    state = SqliteSyncState(workspace.state_dir)
    if not mark.exists():
        try:
            named = str(path.relative_to(workspace.root))
        except ValueError:  # a state folder outside the workspace
            named = str(path)
        record = {"sync_state": named, "why": "a lost sync state is refused, not restarted"}
        write_bytes_atomically(mark, (json.dumps(record) + "\n").encode())
    return state

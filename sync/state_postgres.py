"""The sync state on a PostgreSQL server: what ``SqliteSyncState`` keeps, shared by replicas.

Every method gives what the SQLite store gives (same values, same order, same conflicts
resolved the same way), so the engine does not know which it has. What several processes
change at once:

- **The inbox** is deduplicated by its primary key: ``INSERT ... ON CONFLICT DO NOTHING``
  tells the one replica that kept an event first (True) from the others (False), whatever
  the interleaving.
- **Processing** claims events with ``SELECT ... FOR UPDATE SKIP LOCKED`` on a connection
  of this store's own, whose transaction stays open until ``mark_processed`` commits the
  outcomes (or the next ``unprocessed_events`` gives the claim up). Another replica's
  batch skips the claimed rows, so each event is interpreted by one writer at a time; a
  writer killed mid-batch loses its connection, the server ends the transaction and the
  events are free again for the next batch. Posting stays exactly once regardless: the
  ledger writer appends under the workspace lock and skips a txn-id already written.
- **Counters** (``record_attempt``) are single ``INSERT ... ON CONFLICT DO UPDATE``
  statements: atomic on the server, nothing is read and written back.
"""

from __future__ import annotations

import json
import os
import threading
import weakref
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus
from psycopg.rows import TupleRow

from beanbill.rating.storage_postgres import PostgresDatabase, StateDatabaseError
from beanbill.sync.state import (
    MAX_ERROR_LENGTH,
    MAX_EVENTS_PER_STORE,
    CrmCompany,
    Delivery,
    InboxEvent,
    NewEvent,
    PaymentStatus,
    PushRecord,
    PushStatus,
    SyncStateError,
    now,
    payload_text,
    push_record,
)

COMPONENT = "sync"
# The SQLite store's migrations, in PostgreSQL's words: a version means the same tables.
# Text is ordered as SQLite orders it (by code point: COLLATE "C"), whatever the
# database's locale, so that both stores list in the same order.
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
        event_id TEXT COLLATE "C" NOT NULL,
        event_type TEXT NOT NULL,
        payload TEXT NOT NULL,
        received_at TEXT COLLATE "C" NOT NULL,
        processed_at TEXT,
        PRIMARY KEY (source, event_id)
    );
    CREATE INDEX inbox_waiting ON inbox (source, received_at, event_id)
        WHERE processed_at IS NULL
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
    )
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
    )
    """,
)
PUSH_COLUMNS = "document, target, status, remote_ids, attempts, last_error, updated_at"

Connection = psycopg.Connection[TupleRow]


class PostgresSyncState:
    """``SyncState`` on PostgreSQL (``[state] url``); the password from ``password_env``."""

    def __init__(self, url: str, password_env: str = "PGPASSWORD") -> None:
        self.database = PostgresDatabase(url, password_env)
        self.location = self.database.location
        self.claim = _Claim(self.database)
        weakref.finalize(self, _close, self.database, self.claim)
        self.database.migrate(COMPONENT, MIGRATIONS, SyncStateError)

    def schema_version(self) -> int:
        return self.database.schema_version(COMPONENT)

    def record_attempt(self, document: str, target: str, error: str | None) -> PushRecord:
        stamp = now()
        with self.database.connection() as connection:
            row = connection.execute(
                "INSERT INTO push (document, target, status, attempts, last_error, created_at, "
                "updated_at) VALUES (%s, %s, 'pending', 1, %s, %s, %s) "
                "ON CONFLICT (document, target) DO UPDATE SET attempts = push.attempts + 1, "
                "last_error = excluded.last_error, updated_at = excluded.updated_at "
                f"RETURNING {PUSH_COLUMNS}",
                (document, target, (error or "")[:MAX_ERROR_LENGTH] or None, stamp, stamp),
            ).fetchone()
        if row is None:
            raise SyncStateError(f"{document} → {target}: attempt was not recorded")
        return push_record(row)

    def record_intent(self, document: str, target: str, remote_ids: dict[str, str]) -> None:
        """What is known before pushing, kept on the pending record (see SqliteSyncState)."""
        stamp = now()
        with self.database.connection() as connection:
            connection.execute(
                "INSERT INTO push (document, target, status, remote_ids, attempts, created_at, "
                "updated_at) VALUES (%s, %s, 'pending', %s, 0, %s, %s) "
                "ON CONFLICT (document, target) DO UPDATE SET remote_ids = excluded.remote_ids, "
                "updated_at = excluded.updated_at WHERE push.status = 'pending'",
                (document, target, json.dumps(remote_ids, sort_keys=True), stamp, stamp),
            )

    def _set(self, document: str, target: str, status: PushStatus, **fields: str | None) -> None:
        assignments = "".join(f", {name} = %s" for name in fields)
        with self.database.connection() as connection:
            updated = connection.execute(
                f"UPDATE push SET status = %s, updated_at = %s{assignments} "
                "WHERE document = %s AND target = %s",
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
        with self.database.connection() as connection:
            row = connection.execute(
                f"SELECT {PUSH_COLUMNS} FROM push WHERE document = %s AND target = %s",
                (document, target),
            ).fetchone()
        return push_record(row) if row else None

    def records(self, target: str | None = None) -> list[PushRecord]:
        with self.database.connection() as connection:
            if target is None:
                rows = connection.execute(
                    f'SELECT {PUSH_COLUMNS} FROM push ORDER BY target COLLATE "C", '
                    'document COLLATE "C"'
                ).fetchall()
            else:
                rows = connection.execute(
                    f"SELECT {PUSH_COLUMNS} FROM push WHERE target = %s "
                    'ORDER BY document COLLATE "C"',
                    (target,),
                ).fetchall()
        return [push_record(row) for row in rows]

    def requeue_dead(self, target: str | None = None) -> int:
        with self.database.connection() as connection:
            if target is None:
                cursor = connection.execute(
                    "UPDATE push SET status = 'pending', attempts = 0 WHERE status = 'dead'"
                )
            else:
                cursor = connection.execute(
                    "UPDATE push SET status = 'pending', attempts = 0 "
                    "WHERE status = 'dead' AND target = %s",
                    (target,),
                )
            return int(cursor.rowcount)

    def store_event(
        self, source: str, event_id: str, event_type: str, payload: dict[str, Any]
    ) -> bool:
        """Keep an event durably before it is acknowledged; False if it was already kept
        (by this replica or another: the primary key decides, on the server)."""
        text = payload_text(event_id, payload)
        return self.store_events([NewEvent(source, event_id, event_type, text)])[0]

    def store_events(self, events: Sequence[NewEvent]) -> list[bool]:
        """Keep events durably in one transaction (one commit: a group commit); for each,
        False if it was already kept, by any replica."""
        if len(events) > MAX_EVENTS_PER_STORE:
            raise SyncStateError(f"{len(events)} events at once: at most {MAX_EVENTS_PER_STORE}")
        received_at = now()
        # The group in one statement, which on this autocommit connection is its own
        # transaction: one round trip, where BEGIN, an INSERT an event and COMMIT were
        # several. An event sent twice within the group is kept once, as its first copy.
        first: dict[tuple[str, str], int] = {}
        for index, event in enumerate(events):
            first.setdefault((event.source, event.event_id), index)
        # In key order: two replicas inserting overlapping groups take their row locks in
        # one order, so neither waits on the other (a deadlock PostgreSQL would break).
        unique = [events[first[key]] for key in sorted(first)]
        with self.database.connection() as connection:
            inserted = connection.execute(
                "INSERT INTO inbox (source, event_id, event_type, payload, received_at) "
                "SELECT source, event_id, event_type, payload, %s "
                "FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[]) "
                "AS new (source, event_id, event_type, payload) "
                "ON CONFLICT (source, event_id) DO NOTHING RETURNING source, event_id",
                (
                    received_at,
                    [event.source for event in unique],
                    [event.event_id for event in unique],
                    [event.event_type for event in unique],
                    [event.payload_text for event in unique],
                ),
            ).fetchall()
        new = {first[(source, event_id)] for source, event_id in inserted}
        return [index in new for index in range(len(events))]

    def unprocessed_events(self, source: str, limit: int) -> list[InboxEvent]:
        """The next waiting events no other replica has claimed, claimed for this store
        until ``mark_processed`` (or the next call here, which gives the claim up first)."""
        return self.claim.take(source, limit)

    def mark_processed(self, source: str, outcomes: dict[str, str]) -> None:
        """Close events (event id → what came of it) in one transaction: the claim's, which
        it ends, or a new one when nothing is claimed (or the claim's connection died).
        Closing an event another live store has claimed waits for that claim to end."""
        stamp = now()
        rows = [
            (stamp, outcome[:MAX_ERROR_LENGTH], source, id_) for id_, outcome in outcomes.items()
        ]
        if self.claim.close_with(rows):
            return
        with self.database.connection() as connection, connection.transaction():
            connection.cursor().executemany(CLOSE_EVENT, rows)

    def inbox_counts(self, source: str) -> dict[str, int]:
        with self.database.connection() as connection:
            rows = connection.execute(
                "SELECT CASE WHEN processed_at IS NULL THEN 'waiting' "
                "ELSE coalesce(outcome, '') END, count(*) FROM inbox WHERE source = %s "
                "GROUP BY 1",
                (source,),
            ).fetchall()
        return {str(outcome): int(count) for outcome, count in rows}

    def remember(self, target: str, kind: str, local_id: str, remote_id: str) -> None:
        with self.database.connection() as connection:
            connection.execute(
                "INSERT INTO remote_map (target, kind, local_id, remote_id) "
                "VALUES (%s, %s, %s, %s) ON CONFLICT (target, kind, local_id) "
                "DO UPDATE SET remote_id = excluded.remote_id",
                (target, kind, local_id, remote_id),
            )

    def remote_id(self, target: str, kind: str, local_id: str) -> str | None:
        with self.database.connection() as connection:
            row = connection.execute(
                "SELECT remote_id FROM remote_map "
                "WHERE target = %s AND kind = %s AND local_id = %s",
                (target, kind, local_id),
            ).fetchone()
        return str(row[0]) if row else None

    def local_id(self, target: str, kind: str, remote_id: str) -> str | None:
        with self.database.connection() as connection:
            row = connection.execute(
                "SELECT local_id FROM remote_map "
                "WHERE target = %s AND kind = %s AND remote_id = %s",
                (target, kind, remote_id),
            ).fetchone()
        return str(row[0]) if row else None

    def set_status(
        self, target: str, remote_id: str, document: str | None, status: str, detail: str
    ) -> None:
        with self.database.connection() as connection:
            connection.execute(
                "INSERT INTO payment_status (target, remote_id, document, status, detail, "
                "updated_at) VALUES (%s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (target, remote_id) DO UPDATE "
                "SET document = coalesce(excluded.document, payment_status.document), "
                "status = excluded.status, detail = excluded.detail, "
                "updated_at = excluded.updated_at",
                (target, remote_id, document, status, detail[:MAX_ERROR_LENGTH], now()),
            )

    def statuses(self, target: str) -> list[PaymentStatus]:
        with self.database.connection() as connection:
            rows = connection.execute(
                "SELECT target, remote_id, document, status, detail, updated_at "
                "FROM payment_status WHERE target = %s "
                'ORDER BY updated_at COLLATE "C", remote_id COLLATE "C"',
                (target,),
            ).fetchall()
        return [PaymentStatus(*row) for row in rows]

    def next_delivery(self, document: str, target: str) -> int:
        with self.database.connection() as connection:
            row = connection.execute(
                "SELECT coalesce(max(sequence), 0) FROM delivery "
                "WHERE document = %s AND target = %s",
                (document, target),
            ).fetchone()
        return int(row[0]) + 1 if row else 1

    def record_delivery(
        self, document: str, target: str, sequence: int, remote_ids: dict[str, str], reason: str
    ) -> None:
        with self.database.connection() as connection:
            connection.execute(
                "INSERT INTO delivery (document, target, sequence, remote_ids, reason, "
                "delivered_at) VALUES (%s, %s, %s, %s, %s, %s)",
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
        order = 'ORDER BY delivered_at COLLATE "C"'
        with self.database.connection() as connection:
            if document is None:
                rows = connection.execute(f"{query} {order}").fetchall()
            else:
                rows = connection.execute(
                    f"{query} WHERE document = %s {order}", (document,)
                ).fetchall()
        return [Delivery(r[0], r[1], r[2], json.loads(r[3]), r[4], r[5]) for r in rows]

    def crm_companies(self, target: str) -> dict[str, CrmCompany]:
        with self.database.connection() as connection:
            rows = connection.execute(
                "SELECT target, org, digest, remote_id, last_error, updated_at FROM crm_company "
                "WHERE target = %s",
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
        with self.database.connection() as connection:
            connection.execute(
                "INSERT INTO crm_company (target, org, digest, remote_id, last_error, "
                "updated_at) VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (target, org) "
                "DO UPDATE SET digest = coalesce(excluded.digest, crm_company.digest), "
                "remote_id = coalesce(excluded.remote_id, crm_company.remote_id), "
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


CLOSE_EVENT = (
    "UPDATE inbox SET processed_at = coalesce(processed_at, %s), outcome = %s "
    "WHERE source = %s AND event_id = %s"
)


class _Claim:
    """The events being processed, locked in a transaction on a connection of their own.

    The open transaction is the claim: row locks need no lease to expire and no sweeper,
    and the server releases them the moment the process or its connection dies. Each
    thread has its own claim (serve's writer thread is the one that processes), and a new
    batch in a thread gives that thread's previous claim up.
    """

    def __init__(self, database: PostgresDatabase) -> None:
        self.database = database
        self.connections: dict[int, Connection] = {}  # thread id → its claim's connection
        self.pid = os.getpid()
        self.lock = threading.Lock()

    def _mine(self) -> Connection | None:
        with self.lock:
            if self.pid != os.getpid():  # forked: the parent's connections are not ours
                self.connections, self.pid = {}, os.getpid()
            connection = self.connections.get(threading.get_ident())
        if connection is None or connection.closed or connection.broken:
            return None
        return connection

    def _opened(self) -> Connection:
        connection = self._mine()
        if connection is None:
            connection = self.database.connect(autocommit=False)
            with self.lock:
                self.connections[threading.get_ident()] = connection
        return connection

    def take(self, source: str, limit: int) -> list[InboxEvent]:
        connection = self._opened()
        try:
            connection.rollback()  # the previous claim, if any: its events wait again
            rows = connection.execute(
                "SELECT source, event_id, event_type, payload, received_at FROM inbox "
                "WHERE source = %s AND processed_at IS NULL "
                "ORDER BY received_at, event_id LIMIT %s FOR UPDATE SKIP LOCKED",
                (source, limit),
            ).fetchall()
            if not rows:
                connection.rollback()  # nothing claimed: hold no transaction open
        except psycopg.Error as error:
            self._drop()
            raise StateDatabaseError(f"{self.database.location}: {error}") from error
        return [InboxEvent(r[0], r[1], r[2], json.loads(r[3]), r[4]) for r in rows]

    def close_with(self, rows: list[tuple[str, str, str, str]]) -> bool:
        """Write the outcomes in this thread's claim and commit it; False when it has no
        live claim (the caller writes them on a connection of its own)."""
        connection = self._mine()
        if connection is None:
            return False
        if connection.info.transaction_status is not TransactionStatus.INTRANS:
            return False
        try:
            connection.cursor().executemany(CLOSE_EVENT, rows)
            connection.commit()
        except psycopg.Error:
            self._drop()  # the claim went with its connection: the caller writes
            return False
        return True

    def _drop(self) -> None:
        with self.lock:
            connection = self.connections.pop(threading.get_ident(), None)
        if connection is not None and not connection.closed:
            connection.close()

    def close(self) -> None:
        with self.lock:
            connections = list(self.connections.values()) if self.pid == os.getpid() else []
            self.connections = {}
        for connection in connections:
            connection.close()


def _close(database: PostgresDatabase, claim: _Claim) -> None:
    claim.close()
    database.close()

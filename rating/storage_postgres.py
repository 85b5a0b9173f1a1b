"""A PostgreSQL database that beanbill's shared state lives in: connections and migrations.

The invoice numbering (``beanbill.ledger.invoicing.numbering_postgres``) and the sync state
(``beanbill.sync.state_postgres``) live in the same database, each with its own tables and
its own line in ``beanbill_schema``; both reach it through ``PostgresDatabase`` (a few
pooled connections, each component's schema migrated under one advisory lock). It sits
here, beside the SQLite helpers of ``storage``, because the layers above that use it
import downward only. psycopg is imported only when a ``[state] url`` asks for PostgreSQL:
nothing imports this module otherwise.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator, Sequence

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.pq import TransactionStatus
from psycopg.rows import TupleRow

from beanbill.rating.errors import BeanbillError

# One key for every beanbill schema change in a database: migrations never run side by side.
SCHEMA_LOCK_KEY = int.from_bytes(b"beanbill", "big")  # fits a bigint
CONNECT_TIMEOUT_SECONDS = 10
LOCK_TIMEOUT = "30s"  # as long as SQLite's busy timeout: a writer waits, then says so
MAX_IDLE_CONNECTIONS = 4
SCHEMA_TABLE = """
CREATE TABLE IF NOT EXISTS beanbill_schema (
    component TEXT PRIMARY KEY,
    version INTEGER NOT NULL
)
"""


class StateDatabaseError(BeanbillError):
    """The PostgreSQL server of the shared state cannot be reached or refused a statement."""


def display_url(url: str) -> str:
    """The URL without anything secret (a ``password=`` parameter), for messages."""
    try:
        parts = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "postgresql://(unreadable URL)"
    user = f"{parts['user']}@" if parts.get("user") else ""
    port = f":{parts['port']}" if parts.get("port") else ""
    return f"postgresql://{user}{parts.get('host', '')}{port}/{parts.get('dbname', '')}"


class PostgresDatabase:
    """A few open connections to one database, reused across calls and threads.

    Connecting costs a server process fork and an authentication round trip (milliseconds),
    more than most statements here: idle connections are kept, at most
    ``MAX_IDLE_CONNECTIONS``. A forked child never reuses (nor closes) its parent's
    connections: they share sockets with the parent's sessions. Connections are in
    autocommit; a unit of work that must be atomic opens ``connection.transaction()``.
    """

    def __init__(self, url: str, password_env: str) -> None:
        self.url = url
        self.location = display_url(url)
        self.password_env = password_env
        self.pid = os.getpid()
        self.idle: list[psycopg.Connection[TupleRow]] = []
        self.lock = threading.Lock()

    def connect(self, autocommit: bool = True) -> psycopg.Connection[TupleRow]:
        """A new connection. libpq reads ``PGPASSWORD`` itself; another variable named by
        ``password_env`` is passed explicitly. The password is never part of a message."""
        password = None  # libpq reads PGPASSWORD (and ~/.pgpass) by itself
        if self.password_env != "PGPASSWORD":
            password = os.environ.get(self.password_env) or None
        try:
            connection = psycopg.connect(
                self.url,
                autocommit=True,
                connect_timeout=CONNECT_TIMEOUT_SECONDS,
                application_name="beanbill",
                password=password,  # None: not passed
            )
        except psycopg.Error as error:
            raise StateDatabaseError(f"cannot connect to {self.location}: {error}") from None
        try:
            connection.execute(f"SET lock_timeout = '{LOCK_TIMEOUT}'")
            connection.autocommit = autocommit
        except psycopg.Error as error:
            connection.close()
            raise StateDatabaseError(f"{self.location}: {error}") from error
        return connection

    def _take(self) -> psycopg.Connection[TupleRow]:
        with self.lock:
            if self.pid != os.getpid():  # forked: the parent's connections are not ours
                self.idle, self.pid = [], os.getpid()
            while self.idle:
                connection = self.idle.pop()
                if not connection.closed and not connection.broken:
                    return connection
        return self.connect()

    def _give_back(self, connection: psycopg.Connection[TupleRow]) -> None:
        usable = (
            not connection.closed
            and not connection.broken
            and connection.info.transaction_status is TransactionStatus.IDLE
        )
        with self.lock:
            if usable and self.pid == os.getpid() and len(self.idle) < MAX_IDLE_CONNECTIONS:
                self.idle.append(connection)
                return
        if self.pid == os.getpid():
            connection.close()

    @contextlib.contextmanager
    def connection(self) -> Iterator[psycopg.Connection[TupleRow]]:
        """A pooled autocommit connection; a server error becomes a ``StateDatabaseError``
        naming the database (the caller catches the errors it expects inside)."""
        connection = self._take()
        try:
            yield connection
        except psycopg.Error as error:
            raise StateDatabaseError(f"{self.location}: {error}") from error
        finally:
            self._give_back(connection)

    def close(self) -> None:
        with self.lock:
            idle, self.idle = self.idle, []
            mine = self.pid == os.getpid()
        for connection in idle if mine else ():
            connection.close()

    def migrate(self, component: str, migrations: Sequence[str], error: type[BeanbillError]) -> int:
        """Bring ``component``'s tables to the last of ``migrations``; its version.

        Under a transaction-scoped advisory lock, in one transaction (PostgreSQL's DDL is
        transactional): concurrent openers wait for each other and the second finds the
        work done; a crash leaves the previous version whole. A version this beanbill does
        not know is refused, before anything changes.
        """
        with self.connection() as connection, connection.transaction():
            connection.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK_KEY,))
            connection.execute(SCHEMA_TABLE)
            row = connection.execute(
                "SELECT version FROM beanbill_schema WHERE component = %s", (component,)
            ).fetchone()
            version = int(str(row[0])) if row else 0
            if version > len(migrations):
                raise error(
                    f"{self.location} has {component} schema version {version}; this beanbill "
                    f"knows {len(migrations)}: upgrade beanbill"
                )
            for number, script in enumerate(migrations[version:], start=version + 1):
                for statement in filter(str.strip, script.split(";")):
                    connection.execute(statement)
                connection.execute(
                    "INSERT INTO beanbill_schema (component, version) VALUES (%s, %s) "
                    "ON CONFLICT (component) DO UPDATE SET version = excluded.version",
                    (component, number),
                )
            return len(migrations)

    def schema_version(self, component: str) -> int:
        with self.connection() as connection:
            row = connection.execute(
                "SELECT version FROM beanbill_schema WHERE component = %s", (component,)
            ).fetchone()
        return int(str(row[0])) if row else 0

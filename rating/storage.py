"""Durable file operations: every file beanbill writes appears whole or not at all."""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from beanbill.rating.errors import WorkspaceError

LOCK_TIMEOUT_SECONDS = 30.0
LOCK_POLL_SECONDS = 0.1
FIRST_LOCK_POLL_SECONDS = 0.001


def sql_string(text: str | Path) -> str:
    """A SQL string literal (a path or a text given to DuckDB): quotes doubled, never
    interpolated as they are."""
    return "'" + str(text).replace("'", "''") + "'"


def fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def fsync_file(path: Path) -> None:
    with path.open("rb") as handle:
        os.fsync(handle.fileno())


def publish(temporary: Path, final: Path) -> None:
    """Make a fully written file visible under its final name, durably."""
    final.parent.mkdir(parents=True, exist_ok=True)
    fsync_file(temporary)
    os.replace(temporary, final)
    fsync_directory(final.parent)


def write_bytes_atomically(path: Path, data: bytes) -> None:
    """``path`` holds ``data`` whole, or keeps what it held; no temporary file stays behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with temporary.open("wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)  # a full disk, say: the old file is intact
        raise
    fsync_directory(path.parent)


def temporary_sibling(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


@contextlib.contextmanager
def exclusive_lock(
    lock_path: Path,
    timeout_seconds: float = LOCK_TIMEOUT_SECONDS,
    holder: str = "another beanbill command is writing this workspace",
) -> Iterator[None]:
    """Serialize the commands that write a workspace (ingest, rate, post, ...).

    ``holder`` says, when the lock stays taken, who has it.
    """
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a") as handle:
        deadline = time.monotonic() + timeout_seconds
        poll_seconds = FIRST_LOCK_POLL_SECONDS
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError as error:
                if time.monotonic() >= deadline:
                    raise WorkspaceError(f"{lock_path}: {holder}") from error
                time.sleep(poll_seconds)
                # Short waits are common (an API worker waits for another's ingest, tens
                # of ms): polled at once, then less and less often.
                poll_seconds = min(2 * poll_seconds, LOCK_POLL_SECONDS)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


SQLITE_BUSY_TIMEOUT_SECONDS = 30.0
MAX_REOPEN_ATTEMPTS = 8  # a file replaced while it is opened is opened again


@contextlib.contextmanager
def sqlite_state(path: Path, schema: str = "") -> Iterator[sqlite3.Connection]:
    """A durable state database: WAL, synchronous=FULL, autocommit (callers BEGIN themselves)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(path, timeout=SQLITE_BUSY_TIMEOUT_SECONDS, isolation_level=None)
    try:
        connection.execute("PRAGMA journal_mode = WAL")
        connection.execute("PRAGMA synchronous = FULL")
        if schema:
            connection.executescript(schema)
        yield connection
    finally:
        connection.close()


class KeptSqlite:
    """A ``sqlite_state`` database whose connections are kept, one per thread, for callers
    that query it often (a server: every API request checks a key, every webhook group
    commit writes the inbox). Opening one (its pragmas, its schema) costs more than the
    query itself.

    A connection is opened again when the file is another one (deleted, replaced by a
    restored copy) and in a forked child, and a transaction left open by a failed
    statement is rolled back when the caller leaves: the next caller finds the
    connection as a new one would be.
    """

    def __init__(self, path: Path, schema: str = "") -> None:
        self.path = path
        self.schema = schema
        self._local = threading.local()
        self._pid = os.getpid()

    def _identity(self) -> tuple[int, int] | None:
        try:
            status = self.path.stat()
        except FileNotFoundError:
            return None
        return (status.st_dev, status.st_ino)

    def _kept(self) -> sqlite3.Connection:
        if self._pid != os.getpid():
            # A forked child never uses (nor closes) its parent's connections: SQLite's
            # locks and its open file descriptors are the parent's.
            self._local, self._pid = threading.local(), os.getpid()
        identity = self._identity()
        kept: tuple[tuple[int, int], sqlite3.Connection] | None = getattr(self._local, "kept", None)
        if kept is not None and identity is not None and kept[0] == identity:
            return kept[1]
        if kept is not None:
            kept[1].close()
            self._local.kept = None
        for _ in range(MAX_REOPEN_ATTEMPTS):
            with sqlite_state(self.path, self.schema):
                pass  # made (WAL, with its schema) if it was not
            before = self._identity()
            connection = sqlite3.connect(self.path, timeout=SQLITE_BUSY_TIMEOUT_SECONDS,
                                         isolation_level=None)  # fmt: skip
            # The file the connection opened is the one named before and after it: a
            # file replaced in between would leave it kept, for good, on the old one.
            if before is not None and self._identity() == before:
                connection.execute("PRAGMA synchronous = FULL")
                self._local.kept = (before, connection)
                return connection
            connection.close()
        raise sqlite3.OperationalError(f"{self.path} keeps being replaced while it is opened")

    @contextlib.contextmanager
    def connection(self) -> Iterator[sqlite3.Connection]:
        """This thread's connection, autocommit (callers BEGIN themselves). Used within
        itself (a method calling another), it is the same connection, and only the
        outermost caller's leaving rolls back what is left open."""
        depth = getattr(self._local, "depth", 0)
        if depth == 0:
            self._local.current = self._kept()
        connection: sqlite3.Connection = self._local.current
        self._local.depth = depth + 1
        try:
            yield connection
        finally:
            self._local.depth = depth
            if depth == 0 and connection.in_transaction:
                connection.execute("ROLLBACK")

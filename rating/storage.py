"""Durable file operations: every file beanbill writes appears whole or not at all."""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

from beanbill.rating.errors import WorkspaceError

LOCK_TIMEOUT_SECONDS = 30.0
LOCK_POLL_SECONDS = 0.1


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
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError as error:
                if time.monotonic() >= deadline:
                    raise WorkspaceError(f"{lock_path}: {holder}") from error
                time.sleep(LOCK_POLL_SECONDS)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


SQLITE_BUSY_TIMEOUT_SECONDS = 30.0


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

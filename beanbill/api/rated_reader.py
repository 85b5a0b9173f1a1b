"""Rated lines for request handlers: one DuckDB connection per application, a cursor each.

Opening an embedded DuckDB connection costs about 30 ms, more than the drill-down's
query itself, so the API keeps one per application (bounded like every connection of the
workspace: ``Workspace.duckdb_config``) and gives each request its own cursor (a cursor
is DuckDB's way to use one database from several threads). Parquet metadata is cached by
DuckDB and checked against each file's modification time, so a file that rating
replaces is read afresh.
"""

from __future__ import annotations

import threading
from types import TracebackType
from typing import Self
from weakref import WeakKeyDictionary

import duckdb

from beanbill.api.context import ApiContext
from beanbill.rating.rated_store import RatedStore
from beanbill.rating.workspace import Workspace

_connections: WeakKeyDictionary[ApiContext, duckdb.DuckDBPyConnection] = WeakKeyDictionary()
_lock = threading.Lock()


def _shared_connection(context: ApiContext) -> duckdb.DuckDBPyConnection:
    with _lock:
        connection = _connections.get(context)
        if connection is None:
            connection = duckdb.connect(config=context.workspace.duckdb_config())
            connection.execute("SET parquet_metadata_cache = true")
            _connections[context] = connection
        return connection


class RequestStore(RatedStore):
    """A ``RatedStore`` on a cursor of the application's connection; closing it closes
    the cursor only."""

    def __init__(self, workspace: Workspace, cursor: duckdb.DuckDBPyConnection) -> None:
        super().__init__(workspace)
        self._cursor = cursor

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def connection(self) -> duckdb.DuckDBPyConnection:
        return self._cursor

    def close(self) -> None:
        self._cursor.close()


def request_store(context: ApiContext) -> RequestStore:
    """A store for one request (use as a context manager)."""
    return RequestStore(context.workspace, _shared_connection(context).cursor())

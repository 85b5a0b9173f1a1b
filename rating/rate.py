"""Run the rating expressions on the configured backend and write the rated output.

Output, per calendar month in which billing periods start:
``rated/month=YYYY-MM/lines.parquet`` (detail lines) and ``totals.parquet`` (per
organization, period, product family). Files are replaced atomically; rating the same
usage twice writes byte-identical files, on either backend.

The expressions (``rating.engine``) are written once; a backend (``RatingBackend``) only
reads the usage store, keeps intermediate tables, fetches results and writes files.
``[engine] backend`` chooses it: the embedded DuckDB (default), or Spark
(``rating.spark``). Every rated file is written by DuckDB's Parquet writer, so that the
files do not depend on where the expressions ran.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Protocol

import duckdb
import ibis
import ibis.expr.types as ir
import pyarrow as pa

from beanbill.rating import rated_store
from beanbill.rating.engine import (
    RatingInput,
    month_input,
    rate,
    source_months,
    totals,
    typed_memtable,
    usage_files,
)
from beanbill.rating.errors import RatingError
from beanbill.rating.money import AMOUNT_SCALE, from_scaled_integer
from beanbill.rating.periods import Month
from beanbill.rating.progress import Progress, no_progress
from beanbill.rating.storage import publish, temporary_sibling
from beanbill.rating.workspace import Workspace

EVENT_SCHEMA = ibis.schema(
    {
        "id": "string",
        "org": "string",
        "resource": "string",
        "meter": "string",
        "kind": "string",
        "start_s": "int64",
        "end_s": "int64",
        "quantity_micro": "int64",
    }
)
MAX_PROBLEMS_SHOWN = 10
PARQUET_COMPRESSION = "zstd"
# zstd's fastest level: 10M events' lines (5.4M rows) are written in 1.75 s instead of
# 2.2 s at DuckDB's default level 3, for a file 2 % larger (bench/bench_rating.py).
PARQUET_COMPRESSION_LEVEL = 1
# DuckDB's default, named: a backend that hands DuckDB its rows in batches of exactly this
# size gets the same row groups, so the same bytes, as a query DuckDB runs itself.
PARQUET_ROW_GROUP_ROWS = 122_880


@dataclass(frozen=True)
class RatedMonth:
    month: str
    lines_path: Path
    totals_path: Path
    line_count: int
    organization_count: int
    amount: Decimal


class RatingBackend(Protocol):
    """Where the rating expressions run. Everything a backend does besides running them is
    here, so that no rule is written twice: ``rating.engine`` builds the expressions, the
    backend evaluates them."""

    @property
    def connection(self) -> ibis.BaseBackend:
        """The Ibis backend the expressions are compiled for (memory tables go to it)."""
        ...

    @property
    def overflow_errors(self) -> tuple[type[Exception], ...]:
        """What the backend raises when an exact integer or decimal leaves its range."""
        ...

    def read_parquet(self, files: Sequence[Path]) -> ir.Table:
        """The stored usage files as one table (the caller selects the columns)."""
        ...

    def create_scratch(self, name: str, table: ir.Table) -> ir.Table:
        """``table`` computed once and kept under ``name`` until ``drop_scratch``."""
        ...

    def drop_scratch(self, name: str) -> None: ...

    def fetch(self, table: ir.Table) -> pa.Table:
        """A result as Arrow, in the expression's order and of its types."""
        ...

    def write(self, table: ir.Table, path: Path) -> None:
        """``table`` as one Parquet file, written by ``local`` (``DuckDBRating.write``)."""
        ...

    @property
    def local(self) -> DuckDBRating:
        """The embedded DuckDB of this machine, which writes the rated files and reads them
        back (for the checks and totals that follow, on every backend)."""
        ...


class DuckDBRating:
    """The embedded DuckDB: bounded memory, spilling to ``state/``."""

    def __init__(self, connection: ibis.BaseBackend) -> None:
        self._connection = connection

    @property
    def connection(self) -> ibis.BaseBackend:
        return self._connection

    @property
    def overflow_errors(self) -> tuple[type[Exception], ...]:
        return (duckdb.OutOfRangeException, duckdb.ConversionException)

    def read_parquet(self, files: Sequence[Path]) -> ir.Table:
        return self._connection.read_parquet([str(path) for path in files], hive_partitioning=False)

    def create_scratch(self, name: str, table: ir.Table) -> ir.Table:
        return self._connection.create_table(name, table)

    def drop_scratch(self, name: str) -> None:
        # Ibis's drop_table emits broken SQL with this sqlglot; the runner owns the backend.
        self._connection.raw_sql(f'DROP TABLE IF EXISTS "{name}"')

    def fetch(self, table: ir.Table) -> pa.Table:
        return self._connection.to_pyarrow(table)

    def write(self, table: ir.Table, path: Path) -> None:
        """The one Parquet writer of rated output: DuckDB's, zstd level 1. Rows, their order and
        their types decide the bytes, whichever backend computed them (tests/test_spark.py
        compares the files of both backends)."""
        self._connection.to_parquet(
            table,
            str(path),
            compression=PARQUET_COMPRESSION,
            compression_level=PARQUET_COMPRESSION_LEVEL,
            row_group_size=PARQUET_ROW_GROUP_ROWS,
        )

    @property
    def local(self) -> DuckDBRating:
        return self


def rating_backend(workspace: Workspace) -> RatingBackend:
    """The backend ``[engine] backend`` names (Spark is imported only when chosen)."""
    if workspace.settings.engine.backend == "spark":
        from beanbill.rating.spark import SparkRating

        return SparkRating(workspace)
    return DuckDBRating(ibis.duckdb.connect(**workspace.duckdb_config()))


def _as_backend(connection: ibis.BaseBackend | RatingBackend) -> RatingBackend:
    """A plain Ibis connection (provisional rating passes its DuckDB) runs as DuckDB."""
    if isinstance(connection, ibis.BaseBackend):
        if connection.name != "duckdb":
            raise RatingError(f"cannot rate on a bare {connection.name} connection")
        return DuckDBRating(connection)
    return connection


def load_events(connection: ibis.BaseBackend | RatingBackend, files: Sequence[Path]) -> ir.Table:
    if not files:
        return typed_memtable({name: [] for name in EVENT_SCHEMA.names}, EVENT_SCHEMA)
    return _as_backend(connection).read_parquet(files).select(*EVENT_SCHEMA.names)


def check_references(backend: RatingBackend, events: ir.Table, rating_input: RatingInput) -> None:
    """Events must still match the configuration they were accepted under."""
    known_orgs = {customer.id for customer in rating_input.customers.customer}
    known_meters = {meter.id for meter in rating_input.catalog.rated_meters()}
    pairs = backend.fetch(events.select("org", "meter").distinct()).to_pylist()
    orgs = {row["org"] for row in pairs}
    meters = {row["meter"] for row in pairs}
    problems = [
        f"organization {org!r} has usage but is no longer a customer"
        for org in sorted(orgs - known_orgs)
    ]
    problems += [
        f"meter {meter!r} has usage but is no longer in the catalog"
        for meter in sorted(meters - known_meters)
    ]
    _raise_problems(rating_input, problems)


def check_priced(backend: RatingBackend, lines: ir.Table, rating_input: RatingInput) -> None:
    """Every line must have found a price version (band -1 marks one that did not)."""
    unpriced = lines.filter(lines.band < 0).select("meter", "day").distinct()
    first = unpriced.order_by(["meter", "day"]).limit(MAX_PROBLEMS_SHOWN)
    _raise_problems(
        rating_input,
        [
            f"meter {row['meter']!r} has usage on {row['day']} but no price in force that day"
            for row in backend.fetch(first).to_pylist()
        ],
    )


def _raise_problems(rating_input: RatingInput, problems: list[str]) -> None:
    if problems:
        listing = "\n".join(f"  - {problem}" for problem in problems[:MAX_PROBLEMS_SHOWN])
        raise RatingError(f"cannot rate {rating_input.month.key}:\n{listing}")


def rate_month(
    workspace: Workspace,
    month: Month,
    connection: ibis.BaseBackend | RatingBackend | None = None,
    folder: Path | None = None,
) -> RatedMonth:
    """Rate ``month`` into ``folder`` (default: the rated store ``post`` reads; provisional
    rating of open periods passes its own folder, so the same engine writes both).

    ``connection``: the backend to run on (default: the workspace's ``[engine]``); a bare
    Ibis connection is taken as DuckDB."""
    backend = rating_backend(workspace) if connection is None else _as_backend(connection)
    settings = workspace.settings.billing
    rating_input = month_input(month, settings.timezone, workspace.catalog, workspace.customers)
    files = usage_files(
        workspace.usage_dir, source_months(rating_input, settings.max_event_duration_days)
    )
    events = load_events(backend, files)
    check_references(backend, events, rating_input)
    folder = folder or rated_store.month_folder(workspace, month)
    lines_path = folder / rated_store.LINES_FILE
    totals_path = folder / rated_store.TOTALS_FILE
    lines_temporary = temporary_sibling(lines_path)
    totals_temporary = temporary_sibling(totals_path)
    scratch = f"usage_lines_{month.year}_{month.month:02d}"

    def materialize(table: ir.Table) -> ir.Table:
        return backend.create_scratch(scratch, table)

    try:
        backend.write(rate(events, rating_input, materialize), lines_temporary)
    except backend.overflow_errors as error:
        raise RatingError(
            f"cannot rate {month.key} exactly: a usage total exceeds the int64 range of "
            f"micro units (9.2e12 unit-seconds per organization, period and meter): {error}"
        ) from error
    finally:
        backend.drop_scratch(scratch)
    # What follows reads the lines file, on this machine's DuckDB whatever the backend: the
    # totals are a small aggregation of the lines, and written by the one writer from the
    # one reader they are the same bytes on every backend (DuckDB marks a group key of the
    # totals REQUIRED in Parquet when the Parquet statistics it read show no NULL in it).
    local = backend.local
    lines = local.connection.read_parquet(str(lines_temporary))
    try:
        check_priced(local, lines, rating_input)
    except RatingError:
        lines_temporary.unlink()
        raise
    local.write(totals(lines), totals_temporary)
    # The summary from the totals (a row per organization, period and family), which hold
    # every line's count and amount: reading the lines once more cost 0.3-0.4 s at 10M.
    written = local.connection.read_parquet(str(totals_temporary))
    [summary] = local.fetch(
        written.aggregate(
            line_count=written.line_count.sum(),
            organization_count=written.org.nunique(),
            amount_atto=written.amount_atto.sum(),
        )
    ).to_pylist()
    publish(lines_temporary, lines_path)
    publish(totals_temporary, totals_path)
    amount = summary["amount_atto"]
    return RatedMonth(
        month=month.key,
        lines_path=lines_path,
        totals_path=totals_path,
        line_count=int(summary["line_count"] or 0),
        organization_count=int(summary["organization_count"]),
        amount=from_scaled_integer(int(amount), AMOUNT_SCALE) if amount is not None else Decimal(0),
    )


def rate_months(
    workspace: Workspace, months: Sequence[Month], progress: Progress = no_progress
) -> list[RatedMonth]:
    """Rate each month in turn; ``progress`` hears of each month done."""
    results: list[RatedMonth] = []
    backend = rating_backend(workspace)
    with workspace.writing():
        for index, month in enumerate(months, start=1):
            results.append(rate_month(workspace, month, backend))
            progress(index, len(months))
    return results

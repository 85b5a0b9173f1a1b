"""Run the rating expressions on the embedded backend and write the rated output.

Output, per calendar month in which billing periods start:
``rated/month=YYYY-MM/lines.parquet`` (detail lines) and ``totals.parquet`` (per
organization, period, product family). Files are replaced atomically; rating the same
usage twice writes byte-identical files.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import duckdb
import ibis
import ibis.expr.types as ir

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


@dataclass(frozen=True)
class RatedMonth:
    month: str
    lines_path: Path
    totals_path: Path
    line_count: int
    organization_count: int
    amount: Decimal


def load_events(connection: ibis.BaseBackend, files: Sequence[Path]) -> ir.Table:
    if not files:
        return typed_memtable({name: [] for name in EVENT_SCHEMA.names}, EVENT_SCHEMA)
    table = connection.read_parquet([str(path) for path in files], hive_partitioning=False)
    return table.select(*EVENT_SCHEMA.names)


def check_references(
    connection: ibis.BaseBackend, events: ir.Table, rating_input: RatingInput
) -> None:
    """Events must still match the configuration they were accepted under."""
    known_orgs = {customer.id for customer in rating_input.customers.customer}
    known_meters = {meter.id for meter in rating_input.catalog.rated_meters()}
    pairs = connection.to_pyarrow(events.select("org", "meter").distinct()).to_pylist()
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


def check_priced(connection: ibis.BaseBackend, lines: ir.Table, rating_input: RatingInput) -> None:
    """Every line must have found a price version (band -1 marks one that did not)."""
    unpriced = lines.filter(lines.band < 0).select("meter", "day").distinct()
    first = unpriced.order_by(["meter", "day"]).limit(MAX_PROBLEMS_SHOWN)
    _raise_problems(
        rating_input,
        [
            f"meter {row['meter']!r} has usage on {row['day']} but no price in force that day"
            for row in connection.to_pyarrow(first).to_pylist()
        ],
    )


def _raise_problems(rating_input: RatingInput, problems: list[str]) -> None:
    if problems:
        listing = "\n".join(f"  - {problem}" for problem in problems[:MAX_PROBLEMS_SHOWN])
        raise RatingError(f"cannot rate {rating_input.month.key}:\n{listing}")


def rate_month(
    workspace: Workspace,
    month: Month,
    connection: ibis.BaseBackend | None = None,
    folder: Path | None = None,
) -> RatedMonth:
    """Rate ``month`` into ``folder`` (default: the rated store ``post`` reads; provisional
    rating of open periods passes its own folder, so the same engine writes both)."""
    connection = connection or ibis.duckdb.connect(**workspace.duckdb_config())
    settings = workspace.settings.billing
    rating_input = month_input(month, settings.timezone, workspace.catalog, workspace.customers)
    files = usage_files(
        workspace.usage_dir, source_months(rating_input, settings.max_event_duration_days)
    )
    events = load_events(connection, files)
    check_references(connection, events, rating_input)
    folder = folder or rated_store.month_folder(workspace, month)
    lines_path = folder / rated_store.LINES_FILE
    totals_path = folder / rated_store.TOTALS_FILE
    lines_temporary = temporary_sibling(lines_path)
    totals_temporary = temporary_sibling(totals_path)
    scratch = f"usage_lines_{month.year}_{month.month:02d}"

    def materialize(table: ir.Table) -> ir.Table:
        return connection.create_table(scratch, table)

    try:
        connection.to_parquet(
            rate(events, rating_input, materialize), str(lines_temporary), compression="zstd"
        )
    except (duckdb.OutOfRangeException, duckdb.ConversionException) as error:
        raise RatingError(
            f"cannot rate {month.key} exactly: a usage total exceeds the int64 range of "
            f"micro units (9.2e12 unit-seconds per organization, period and meter): {error}"
        ) from error
    finally:
        # Ibis's drop_table emits broken SQL with this sqlglot; the runner owns the backend.
        connection.raw_sql(f'DROP TABLE IF EXISTS "{scratch}"')
    lines = connection.read_parquet(str(lines_temporary))
    try:
        check_priced(connection, lines, rating_input)
    except RatingError:
        lines_temporary.unlink()
        raise
    connection.to_parquet(totals(lines), str(totals_temporary), compression="zstd")
    [summary] = connection.to_pyarrow(
        lines.aggregate(
            line_count=lines.count(),
            organization_count=lines.org.nunique(),
            amount_atto=lines.amount_atto.sum(),
        )
    ).to_pylist()
    publish(lines_temporary, lines_path)
    publish(totals_temporary, totals_path)
    amount = summary["amount_atto"]
    return RatedMonth(
        month=month.key,
        lines_path=lines_path,
        totals_path=totals_path,
        line_count=int(summary["line_count"]),
        organization_count=int(summary["organization_count"]),
        amount=from_scaled_integer(int(amount), AMOUNT_SCALE) if amount is not None else Decimal(0),
    )


def rate_months(
    workspace: Workspace, months: Sequence[Month], progress: Progress = no_progress
) -> list[RatedMonth]:
    """Rate each month in turn; ``progress`` hears of each month done."""
    results: list[RatedMonth] = []
    connection = ibis.duckdb.connect(**workspace.duckdb_config())
    with workspace.writing():
        for index, month in enumerate(months, start=1):
            results.append(rate_month(workspace, month, connection))
            progress(index, len(months))
    return results

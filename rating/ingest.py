"""Ingest usage events into the workspace's usage store, with DuckDB, never a Python loop.

The integration contract (keep these field names):

- interval events: ``id, org, resource, meter, start, end, quantity`` (quantity defaults to 1)
- counter events:  ``id, org, resource, meter, at, quantity``

in JSON Lines, CSV or Parquet. ``id`` is the idempotency key within its organization: the
same (org, id) with the same content counts once; with other content it is rejected; the
same id under two organizations is two events (ids are each organization's own, so one
tenant's ids never collide with another's). Every event that is not stored is either a
counted duplicate or a reject written to ``rejects/`` with its file, line, field and
reason. Nothing is dropped silently.

Stored events are normalized: whole epoch seconds (sub-second parts are cut, the named
rounding point for time), quantity in micro units, a content hash, and the local month
of the start as the partition (``usage/month=YYYY-MM/part-<batch>.parquet``).
"""

from __future__ import annotations

import csv
import hashlib
import json
import zoneinfo
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, NamedTuple

import duckdb
import pyarrow as pa

from beanbill.rating.characters import REFUSED_CHARACTERS_RE2
from beanbill.rating.closures import ClosedPeriods
from beanbill.rating.config import Meter, MeterKind
from beanbill.rating.errors import BeanbillError, IngestError
from beanbill.rating.money import QUANTITY_SCALE, SECONDS_PER_DAY
from beanbill.rating.periods import OffsetChange, local_midnight_epoch, offset_changes
from beanbill.rating.storage import fsync_directory, publish, sql_string, temporary_sibling
from beanbill.rating.usage_store import compact, stored_parts
from beanbill.rating.workspace import Workspace

FIELDS = ("id", "org", "resource", "meter", "start", "end", "at", "quantity")
JSON_SUFFIXES = (".jsonl", ".ndjson", ".json")
MAX_FILES_PER_INGEST = 1_000
FREE_MEMORY_ABOVE_BYTES = 64 * 1024 * 1024  # of input files: see _Ingestion.frees_memory
MAX_ID_LENGTH = 128
MAX_RESOURCE_LENGTH = 256
MAX_QUANTITY_INTEGER_DIGITS = 12
# One interval event uses at most this many unit-seconds (quantity × seconds): rating counts
# usage in int64 micro units (9.2e12 unit-seconds), so no single event can make a month
# unrateable (many large ones still can, and rating then stops with that error).
MAX_EVENT_UNIT_SECONDS = (2**63 - 1) // 10**QUANTITY_SCALE
EARLIEST_YEAR = 2000
LATEST_YEAR = 2100
REASONS_SHOWN = 10
# A record's place in a run, as one number: source × SOURCE_STRIDE + line (files of up to
# 2^32 lines), so that "first seen" is the smallest.
SOURCE_STRIDE = 2**32
EARLIEST_EPOCH = int(datetime(EARLIEST_YEAR, 1, 1, tzinfo=UTC).timestamp())
LATEST_EPOCH = int(datetime(LATEST_YEAR, 1, 1, tzinfo=UTC).timestamp())

# RFC 3339 section 5.6: hours 00-23 (24:00 is refused: write 00:00 of the next day),
# offsets within ±23:59; a leap second (:60) is then refused as not a valid time. "T" and
# "Z" may be lower case (the RFC's note to 5.6), and a fraction of a second may have any
# number of digits: it is cut (billing is per whole second), never rounded.
HOUR_MINUTE = r"([01]\d|2[0-3]):[0-5]\d"
RFC3339 = (
    rf"\d{{4}}-\d{{2}}-\d{{2}}[Tt ]{HOUR_MINUTE}:([0-5]\d|60)(\.\d+)?"
    rf"([Zz]|[+-]{HOUR_MINUTE})"
)
SECOND_FRACTION = r"\.\d+"
NAIVE_TIMESTAMP = r"\d{4}-\d{2}-\d{2}([Tt ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?"
PLAIN_DECIMAL = r"-?\d+(\.\d+)?"
# The limit is on the value (below 10^12), not on its spelling: leading zeros are not digits.
VALID_QUANTITY = rf"-?0(\.0+)?|0*\d{{1,{MAX_QUANTITY_INTEGER_DIGITS}}}(\.\d{{1,{QUANTITY_SCALE}}})?"


class FileCounts(NamedTuple):
    """What one input file of a run brought; its rejects name it in the rejects file."""

    read: int
    accepted: int
    duplicates: int
    late: int


@dataclass(frozen=True)
class IngestSummary:
    files: tuple[str, ...]
    read: int
    accepted: int
    duplicates: int
    rejected: int
    late: int
    months: tuple[str, ...]
    rejects_path: Path | None
    late_path: Path | None
    reasons: tuple[tuple[str, int], ...]
    by_file: tuple[FileCounts, ...] = ()  # in the order of ``files``
    # The events are stored, but merging the store's small parts failed (it is tried
    # again by the next ingest): why, for a human to look at.
    compaction_problem: str | None = None

    @property
    def exit_code(self) -> int:
        """0 when everything was taken, 1 when some events were rejected or the store's
        upkeep failed after storing them (scripts can tell)."""
        return 1 if self.rejected or self.compaction_problem else 0


def _sql_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _csv_header_width(path: Path) -> int:
    """How many fields the CSV file's header names (RFC 4180, as DuckDB reads it)."""
    with path.open(newline="", encoding="utf-8", errors="replace") as handle:
        return len(next(csv.reader(handle), []))


# A JSON number is read as the exact text it is written with, never through a float:
# the quantity's token is taken from the line itself (JSON's grammar: a string value
# cannot hold an unescaped quote, so the pattern cannot match inside one). The pattern
# also finds a "quantity" key nested in another field (extra fields are ignored), so a
# token is the event's quantity only when the top-level "quantity" is a number, and only
# a token of the same value as that number; two such tokens spelled differently (a nested
# or repeated key) leave the line rejected rather than guessed.


def _json_spellings(name: str) -> str:
    """A regular expression for every way JSON can write the key ``name`` (letters):
    each letter as itself or as a ``\\uXXXX`` escape (hex digits in either case)."""

    def escaped(letter: str) -> str:
        digits = f"{ord(letter):04x}"
        return "".join(f"[{d}{d.upper()}]" if d.isalpha() else d for d in digits)

    return "".join(f"(?:{letter}|\\\\u{escaped(letter)})" for letter in name)


# A number's text next to its key, however the key is spelled: the number is kept as
# written, and a key spelled with escapes ("quantit\u0079") must not leave only the
# approximation a JSON reader makes of it (a double).
QUANTITY_TOKEN = '"' + _json_spellings("quantity") + r'"\s*:\s*(-?[0-9][0-9.eE+-]*)'
JSON_NUMBER_TYPES = "('BIGINT', 'UBIGINT', 'DOUBLE')"
AMBIGUOUS_QUANTITY = "quantity: written more than once in the line, with different spellings"
# Extra fields are ignored, but one that differs from a contract name only in case
# ("Quantity") is a mistake that would bill silently wrong (an interval at quantity 1).
CASE_LOOKALIKE = "fields: a name differs from a contract name only in case"
_FIELD_LIST = ", ".join(f"'{field}'" for field in FIELDS)


def _case_lookalikes(names: Sequence[str]) -> list[str]:
    return [name for name in names if name.lower() in FIELDS and name not in FIELDS]


def _json_lines_select(numbered: str) -> str:
    """Fields of each non-blank line of the JSON Lines files loaded into ``table`` (one line
    a row, all files in one table); ``numbered`` gives each its ``source``, ``line`` and
    ``text``.

    The text is parsed once (twice for a line whose quantity is a JSON number: to tell the
    event's own quantity from a nested one); only a line that fails is looked at again to
    say why.
    """
    paths = ", ".join(f"'$.{field}'" for field in FIELDS)
    fields = ", ".join(
        f'coalesce(numbers[1], f[{index + 1}]) AS "{name}"'
        if name == "quantity"
        else f'f[{index + 1}] AS "{name}"'
        for index, name in enumerate(FIELDS)
    )
    return f"""
        SELECT source, line, problem,
               CASE WHEN problem IS NOT NULL THEN text END AS raw_text, {fields}
        FROM (
            SELECT source, line, text, f, numbers,
                   CASE WHEN f IS NULL AND json_valid(text) THEN 'not a JSON object'
                        WHEN f IS NULL THEN 'malformed JSON'
                        WHEN left(ltrim(text), 1) <> '{{' THEN 'not a JSON object'
                        WHEN len(list_distinct(numbers)) > 1 THEN '{AMBIGUOUS_QUANTITY}'
                        WHEN len(list_filter(coalesce(try(json_keys(text)), []), lambda key:
                                 lower(key) IN ({_FIELD_LIST}) AND key NOT IN ({_FIELD_LIST})))
                             > 0 THEN '{CASE_LOOKALIKE}' END
                       AS problem
            FROM (
                SELECT source, line, text, f,
                       CASE WHEN json_type(top) IN {JSON_NUMBER_TYPES}
                            THEN list_filter(tokens, lambda token:
                                 try_cast(token AS DOUBLE) = CAST(top AS DOUBLE)) END AS numbers
                FROM (
                    SELECT source, line, text, f, tokens,
                           CASE WHEN f IS NOT NULL AND len(tokens) > 0
                                THEN json_extract(text, '$.quantity') END AS top
                    FROM (
                        SELECT source, line, text,
                               try(json_extract_string(text, [{paths}])) AS f,
                               regexp_extract_all(text, '{QUANTITY_TOKEN}', 1) AS tokens
                        FROM ({numbered})
                        WHERE text IS NOT NULL AND trim(text) <> ''
                    )
                )
            )
        )
        UNION ALL {_rejected_lines_select(JSON_LINES, JSON_LINE_ERRORS)}"""


# The JSON Lines files of a run are read together, by one statement: their tables are named
# by this word where a CSV file's are named by its source number.
JSON_LINES = "json"


def _lines_table(source: int | str) -> str:
    return f"line_numbers_{source}"


def _rejects_table(source: int | str) -> str:
    return f"rejected_lines_{source}"


# What DuckDB's CSV reader says of a line it could not read, said for a user.
JSON_LINE_ERRORS = {
    "INVALID ENCODING": "record: not UTF-8 text",
    "TOO MANY COLUMNS": "record: contains the control character U+001F",
}
CSV_LINE_ERRORS = {
    "INVALID ENCODING": "record: not UTF-8 text",
    "TOO MANY COLUMNS": "record: more fields than the header names",
    "MISSING COLUMNS": "record: fewer fields than the header names",
    "UNQUOTED VALUE": "record: a quote inside an unquoted field",
    "LINE SIZE OVER MAXIMUM": "record: line too long",
}


def _rejected_lines_select(source: int | str, reasons: dict[str, str]) -> str:
    """The lines DuckDB's reader refused, as records with their problem and raw text (the
    rejects table has a ``source`` column: every file's refused lines in one table)."""
    cases = " ".join(f"WHEN {sql_string(k)} THEN {sql_string(v)}" for k, v in reasons.items())
    fields = ", ".join(f'NULL::VARCHAR AS "{name}"' for name in FIELDS)
    return f"""
        SELECT source, line,
               CASE error_type {cases} ELSE 'record: malformed: ' || error_message END
                   AS problem,
               csv_line AS raw_text, {fields}
        FROM (SELECT DISTINCT ON (source, line) source, line, error_type, error_message,
                     csv_line
              FROM {_rejects_table(source)} ORDER BY source, line)"""


def _tabular_select(
    table: str, source: int, line_offset: int, columns: list[str], header_width: int
) -> str:
    """Fields of a CSV or Parquet file loaded into ``table``; rowid keeps the file's order.

    Columns other than the contract's are ignored (extra fields, as in JSON Lines and
    Parquet); only the columns DuckDB's reader added after the header's (``column7``...,
    for rows longer than the header, seen in its sample) hold fields the header does not
    name.
    """
    fields = ", ".join(
        f'CAST("{name}" AS VARCHAR) AS "{name}"' if name in columns else f'NULL AS "{name}"'
        for name in FIELDS
    )
    unnamed = columns[header_width:] if line_offset else []
    unnamed_check = " OR ".join(f"{_sql_identifier(name)} IS NOT NULL" for name in unnamed)
    problem = (
        f"CASE WHEN {unnamed_check} THEN 'more fields than the header names' END"
        if unnamed
        else "NULL"
    )
    if _case_lookalikes(columns[:header_width]):  # the header misnames a field: every row
        problem = f"'{CASE_LOOKALIKE}'"
    if not line_offset:  # Parquet: records, not lines
        return f"""
            SELECT {source} AS source, rowid + 1 AS line,
                   {problem} AS problem, NULL AS raw_text, {fields}
            FROM {table}"""
    return f"""
        SELECT {source} AS source, n.line, {problem} AS problem, NULL AS raw_text, {fields}
        FROM {table} t JOIN {_lines_table(source)} n ON n.ord = t.rowid
        UNION ALL {_rejected_lines_select(source, CSV_LINE_ERRORS)}"""


class Check(NamedTuple):
    """A rejection rule: when ``condition`` holds, the event is rejected for ``rule``.

    ``rule`` is a fixed text (counted in summaries); ``detail`` a SQL expression that
    quotes the offending value in the reject's reason; ``reason``, when given, a SQL
    expression for the whole reason instead.
    """

    condition: str
    rule: str
    detail: str | None = None
    reason: str | None = None


UNPRICED_RULE = "'meter: no price in force'"


def _local_date_sql(epoch: str, changes: Sequence[OffsetChange]) -> str:
    """The local date of ``epoch`` (UTC seconds, SQL) with the zone's offsets as computed in
    Python (``offset_changes``): DuckDB's time zone functions are not used."""
    offset = (
        "CASE "
        + " ".join(
            f"WHEN {epoch} >= {change.since_epoch} THEN {change.offset_seconds}"
            for change in reversed(changes)
        )
        + " END"
    )
    return f"(DATE '1970-01-01' + CAST(({epoch} + {offset}) // {SECONDS_PER_DAY} AS INTEGER))"


def _epoch_range_offsets(zone: zoneinfo.ZoneInfo, first: int, last: int) -> list[OffsetChange]:
    return offset_changes(
        zone,
        datetime.fromtimestamp(first, tz=UTC).date(),
        datetime.fromtimestamp(last, tz=UTC).date(),
    )


def _first_priced_day(meter: Meter) -> date:
    """The day the meter's first price version takes effect; none is in force before it."""
    return min(version.effective for version in meter.price)


def _timestamp_checks(field: str, kind: str) -> list[Check]:
    """Checks on one timestamp, using the columns ``_prepared_columns`` computes once."""
    text, micros, rfc3339 = f"{field}_text", f"{field}_us", f"{field}_rfc3339"
    return [
        Check(f"{kind} AND ({text} IS NULL OR {text} = '')", f"{field}: missing"),
        Check(
            f"{kind} AND NOT {rfc3339} AND regexp_full_match({text}, '{NAIVE_TIMESTAMP}')",
            f"{field}: timestamp has no UTC offset (add Z or +HH:MM)",
            text,
        ),
        Check(f"{kind} AND NOT {rfc3339}", f"{field}: not an RFC 3339 timestamp", text),
        Check(f"{kind} AND {micros} IS NULL", f"{field}: not a valid date and time", text),
        Check(
            f"{kind} AND NOT {micros} // 1000000 BETWEEN {EARLIEST_EPOCH} AND {LATEST_EPOCH - 1}",
            f"{field}: outside the years {EARLIEST_YEAR}-{LATEST_YEAR - 1}",
            text,
        ),
    ]


def _prepared_columns() -> str:
    """Parse each text field once; the checks and the normalized values reuse the results."""
    columns = []
    for field in ("start", "end", "at"):
        text = f'trim("{field}")'
        columns += [
            f"{text} AS {field}_text",
            # Whole seconds: the fraction is cut before DuckDB reads the text, and "t"/"z"
            # are read as "T"/"Z" (DuckDB's cast knows only the upper-case letters).
            f"epoch_us(try_cast(regexp_replace(upper({text}), '{SECOND_FRACTION}', '') "
            f"AS TIMESTAMPTZ)) AS {field}_us",
            f"regexp_full_match({text}, '{RFC3339}') AS {field}_rfc3339",
        ]
    columns += [
        "trim(quantity) AS quantity_text",
        f"regexp_full_match(trim(quantity), '{VALID_QUANTITY}') AS quantity_valid",
    ]
    return ", ".join(columns)


def _checks(max_duration_seconds: int) -> list[Check]:
    """The rules, checked in order; the first that holds rejects the event."""
    interval = f"kind = '{MeterKind.INTERVAL.value}'"
    counter = f"kind = '{MeterKind.COUNTER.value}'"
    quantity = "quantity_text"
    checks = [
        Check("problem IS NOT NULL", "problem"),
        Check("id IS NULL OR trim(id) = ''", "'id: missing'"),
        Check(f"length(id) > {MAX_ID_LENGTH}", f"'id: longer than {MAX_ID_LENGTH} characters'"),
        Check(
            f"regexp_matches(id, '{REFUSED_CHARACTERS_RE2}')", "'id: contains control characters'"
        ),
        Check("org IS NULL OR trim(org) = ''", "'org: missing'"),
        Check("org_known IS NULL", "'org: unknown organization'", "org"),
        Check("resource IS NULL OR trim(resource) = ''", "'resource: missing'"),
        Check(
            f"length(resource) > {MAX_RESOURCE_LENGTH}",
            f"'resource: longer than {MAX_RESOURCE_LENGTH} characters'",
        ),
        Check(
            f"regexp_matches(resource, '{REFUSED_CHARACTERS_RE2}')",
            "'resource: contains control characters'",
        ),
        Check("meter IS NULL OR trim(meter) = ''", "'meter: missing'"),
        Check("kind IS NULL", "'meter: unknown meter'", "meter"),
        Check(f'{interval} AND "at" IS NOT NULL', "'at: interval meters take start and end'"),
        Check(
            f'{counter} AND (start IS NOT NULL OR "end" IS NOT NULL)',
            "'start: counter meters take at, not start and end'",
        ),
    ]
    checks += [
        check._replace(rule=sql_string(check.rule))
        for field, kind in (("start", interval), ("end", interval), ("at", counter))
        for check in _timestamp_checks(field, kind)
    ]
    checks += [
        Check(
            f"{interval} AND end_s < start_s", "'end: before start'", "\"end\" || ' < ' || start"
        ),
        Check(
            f"{interval} AND end_s - start_s > {max_duration_seconds}",
            f"'end: longer than the maximum event duration of "
            f"{max_duration_seconds // SECONDS_PER_DAY} days'",
            "(end_s - start_s) || ' s'",
        ),
        # A price version is in force from its effective day (local midnight, billing time
        # zone) on, with no end: an event starting before the meter's first one could never
        # be rated. (An interval event is split by day, but no part of it may be unpriced.)
        Check(
            "start_s < priced_from_s",
            UNPRICED_RULE,
            reason=(
                f"{UNPRICED_RULE} || ' for meter ' || meter || ' on ' || start_local_day "
                "|| ' (its first price is effective ' || priced_from_day || ')'"
            ),
        ),
        Check(f"{counter} AND (quantity IS NULL OR {quantity} = '')", "'quantity: missing'"),
        Check(
            f"NOT quantity_valid AND NOT regexp_full_match({quantity}, '{PLAIN_DECIMAL}')",
            "'quantity: not a plain decimal number'",
            "quantity",
        ),
        Check(
            f"NOT quantity_valid AND starts_with({quantity}, '-') "
            f"AND try_cast({quantity} AS DECIMAL(38, 10)) <> 0",
            "'quantity: negative'",
            "quantity",
        ),
        Check(
            f"NOT quantity_valid AND length(regexp_extract({quantity}, '\\.(\\d+)$', 1)) "
            f"> {QUANTITY_SCALE}",
            f"'quantity: more than {QUANTITY_SCALE} decimal places'",
            "quantity",
        ),
        Check(
            f"NOT quantity_valid AND length(regexp_extract({quantity}, '^-?0*(\\d+)', 1)) "
            f"> {MAX_QUANTITY_INTEGER_DIGITS}",
            "'quantity: too large'",
            "quantity",
        ),
        Check(
            f"{interval} AND try_cast(coalesce({quantity}, '1') AS DECIMAL(38, 6)) "
            f"* (end_s - start_s) > {MAX_EVENT_UNIT_SECONDS}",
            f"'quantity: more than {MAX_EVENT_UNIT_SECONDS:,} unit-seconds in one event'",
            f"coalesce({quantity}, '1') || ' for ' || (end_s - start_s) || ' s'",
        ),
    ]
    return checks


class _Ingestion:
    """One ingest run: a private in-memory DuckDB holding the batch while it is checked."""

    def __init__(
        self,
        workspace: Workspace,
        files: Sequence[Path],
        show_progress: bool,
        database: duckdb.DuckDBPyConnection | None,
    ) -> None:
        self.workspace = workspace
        self.files = [path.resolve() for path in files]
        # A cursor is a connection of its own (its own temporary tables), to a database
        # opened once: opening one costs ~20 ms, which a caller ingesting often (the
        # events API) should not pay each time.
        self.connection = (
            database.cursor()
            if database is not None
            else duckdb.connect(config=workspace.duckdb_config())
        )
        if show_progress:
            self.connection.execute("SET enable_progress_bar = true")
            self.connection.execute("SET enable_progress_bar_print = true")
        max_duration = workspace.settings.billing.max_event_duration_days * SECONDS_PER_DAY
        self.checks = _checks(max_duration)
        self.zone = zoneinfo.ZoneInfo(workspace.settings.billing.timezone)
        self.any_late_possible = False  # set when some period is closed
        self.compaction_problem: str | None = None
        # A large run lets its big tables go as soon as they are no longer needed (they
        # would spill to disk beside each other); a small one (the events API's) keeps
        # them: freeing costs statements that cost more than the memory is worth.
        self.frees_memory = sum(path.stat().st_size for path in self.files if path.is_file()) > (
            FREE_MEMORY_ABOVE_BYTES
        )

    def sql(self, query: str) -> duckdb.DuckDBPyConnection:
        return self.connection.execute(query)

    def table(self, name: str, columns: dict[str, list[Any]]) -> None:
        """A small reference table, handed over through Arrow (executemany is row by row)."""
        # Registered, not copied: read in place for as long as this run's cursor lives (a
        # copy into a table was a statement each, ~0.7 ms of every small ingest).
        self.connection.register(name, pa.Table.from_pydict(columns))

    def load_reference_tables(self) -> None:
        customers = self.workspace.customers.customer
        meters = self.workspace.catalog.rated_meters()
        self.table(
            "known_orgs",
            {
                "org": [customer.id for customer in customers],
                "billing_period": [customer.billing_period.value for customer in customers],
            },
        )
        first_days = [_first_priced_day(meter) for meter in meters]
        self.table(
            "known_meters",
            {
                "meter": [meter.id for meter in meters],
                "kind": [meter.kind.value for meter in meters],
                "priced_from_s": pa.array(
                    [local_midnight_epoch(day, self.zone) for day in first_days], pa.int64()
                ),
                "priced_from_day": [day.isoformat() for day in first_days],
            },
        )

    def read_files(self) -> None:
        """Load the files (rowid = record index, in each file's order), then extract fields in
        parallel. The JSON Lines files are read together, by one statement: a file costs its
        lines, not a statement of its own (the events API ingests many small batch files).

        A window such as ``row_number() OVER ()`` would number lines too, but runs on one
        thread; an insertion-ordered table gives the same numbers for free.
        """
        for path in self.files:
            if not path.is_file():
                raise IngestError(f"{path}: no such file")
        files: dict[str, list[Any]] = {
            "source": list(range(len(self.files))),
            "file": [str(path) for path in self.files],
        }
        self.table("input_files", files)
        json_sources = [
            source for source, path in enumerate(self.files) if path.suffix.lower() in JSON_SUFFIXES
        ]
        selects = [self.load_json_files(json_sources)] if json_sources else []
        selects += [
            self.load_file(path, source)
            for source, path in enumerate(self.files)
            if source not in json_sources
        ]
        try:
            self.sql(f"CREATE TEMP TABLE raw AS {' UNION ALL '.join(selects)}")
        except duckdb.Error as error:
            raise IngestError(f"cannot read input: {error}") from error
        for source in range(len(self.files)):
            if source not in json_sources:
                self.sql(f"DROP TABLE file_{source}")
        if json_sources:
            self.sql(f"DROP TABLE file_{JSON_LINES}")

    def reader_rejects(self, source: int | str) -> str:
        """``read_csv`` options that keep the lines it cannot take (bad UTF-8, a ragged row)
        aside, with their numbers, to be rejected alone: they never block the lines beside."""
        return (
            f"store_rejects = true, ignore_errors = true, "
            f"rejects_table = 'reader_rejects_{source}', rejects_scan = 'reader_scans_{source}'"
        )

    def keep_reader_rejects(self, source: int | str) -> int:
        """The reader's refused lines as ``(source, line, error_type, error_message,
        csv_line)``, the file found by its path (one scan may read several files); how many."""
        # The reader makes both tables; should a version not when nothing was refused,
        # they are made empty here.
        self.sql(f"CREATE TEMP TABLE IF NOT EXISTS reader_rejects_{source} (scan_id UBIGINT, "
                 "file_id UBIGINT, line BIGINT, error_type VARCHAR, error_message VARCHAR, "
                 "csv_line VARCHAR)")  # fmt: skip
        self.sql(f"CREATE TEMP TABLE IF NOT EXISTS reader_scans_{source} (scan_id UBIGINT, "
                 "file_id UBIGINT, file_path VARCHAR)")  # fmt: skip
        self.sql(f"""
            CREATE TEMP TABLE {_rejects_table(source)} AS
            SELECT f.source, r.line, r.error_type::VARCHAR AS error_type, r.error_message,
                   r.csv_line
            FROM reader_rejects_{source} r
            JOIN reader_scans_{source} s USING (scan_id, file_id)
            JOIN input_files f ON f.file = s.file_path""")
        counts = self.sql(
            f"SELECT (SELECT count(*) FROM reader_rejects_{source}), "
            f"(SELECT count(*) FROM {_rejects_table(source)})"
        ).fetchone()
        if counts is None or counts[0] != counts[1]:
            raise IngestError("internal error: a refused line was not traced to its file")
        return int(counts[0])

    def load_json_files(self, sources: Sequence[int]) -> str:
        """Every JSON Lines file of the run, one text column a line, in one table."""
        listing = ", ".join(sql_string(str(self.files[source])) for source in sources)
        table = f"file_{JSON_LINES}"
        # Each line's file by its place in the listing (the reader's ``file_index``), not
        # by its name: a name a line would hold hundreds of MB at 10M lines.
        self.table(
            "json_inputs", {"file_index": list(range(len(sources))), "source": list(sources)}
        )
        try:
            self.sql(f"""
                CREATE TEMP TABLE {table} AS
                SELECT text, file_index FROM read_csv([{listing}], columns = {{'text': 'VARCHAR'}},
                    delim = '\x1f', quote = '', escape = '', header = false, auto_detect = false,
                    {self.reader_rejects(JSON_LINES)})""")
        except duckdb.Error as error:
            where = f"{self.files[sources[0]]}: " if len(sources) == 1 else ""
            raise IngestError(f"{where}cannot be read: {error}") from error
        refused = self.keep_reader_rejects(JSON_LINES)
        self.sql(f"""
            CREATE TEMP TABLE json_files AS
            SELECT i.source, i.file_index, count(*) AS n, min(t.rowid) AS first_ord,
                   max(t.rowid) - min(t.rowid) + 1 AS span
            FROM {table} t LEFT JOIN json_inputs i USING (file_index)
            GROUP BY i.source, i.file_index""")
        # Each file's rows are contiguous (insertion order is kept) and every row is traced
        # to a file given: checked, since a line numbered wrong would name a wrong line.
        misplaced = self.sql(
            "SELECT count(*) FROM json_files WHERE source IS NULL OR n <> span"
        ).fetchone()
        if misplaced is None or misplaced[0]:
            raise IngestError("internal error: the JSON Lines files were not read in order")
        if not refused:  # every line was read: a row's line is its place in its file
            return _json_lines_select(f"""
                SELECT j.source, t.rowid - j.first_ord + 1 AS line, t.text
                FROM {table} t JOIN json_files j USING (file_index)""")
        self.sql(f"""
            CREATE TEMP TABLE {_lines_table(JSON_LINES)} AS
            WITH refused AS (SELECT DISTINCT source, line FROM {_rejects_table(JSON_LINES)}),
            candidates AS (
                SELECT r.source, r.first_ord,
                       unnest(range(1, r.n + 1 + (SELECT count(*) FROM refused x
                                                 WHERE x.source = r.source))) AS line
                FROM json_files r
            )
            SELECT source, line,
                   first_ord + row_number() OVER (PARTITION BY source ORDER BY line) - 1 AS ord
            FROM candidates ANTI JOIN refused USING (source, line)""")
        return _json_lines_select(f"""
            SELECT n.source, n.line, t.text
            FROM {table} t JOIN {_lines_table(JSON_LINES)} n ON n.ord = t.rowid""")

    def load_file(self, path: Path, source: int) -> str:
        """A CSV or Parquet file in a table of its own (a CSV header is each file's)."""
        quoted = sql_string(str(path))
        suffix = path.suffix.lower()
        if suffix == ".csv":
            # RFC 4180: fields separated by commas, quoted with '"', a quote inside a
            # quoted field doubled ("evt-""q""-1" is evt-"q"-1), no comment lines. Each
            # is set, so that DuckDB's sniffer decides none of them from the data (it
            # would try ; | and tab, and '#' comments). (``skip = 0`` is not set: with
            # it, the sniffer fails on a sample holding a row longer than the header.)
            # A row with more fields than the header is refused, the millionth as the
            # first (no sniffing sample decides); a shorter one lacks its last fields,
            # which the checks name.
            reader = (
                f"read_csv({quoted}, all_varchar = true, header = true, delim = ',', "
                f"quote = '\"', escape = '\"', comment = '', null_padding = true, "
                f"{self.reader_rejects(source)})"
            )
        elif suffix == ".parquet":
            reader = f"read_parquet({quoted})"
        else:
            raise IngestError(f"{path}: unknown format; use .jsonl, .csv or .parquet")
        table = f"file_{source}"
        try:
            self.sql(f"CREATE TEMP TABLE {table} AS SELECT * FROM {reader}")
        except duckdb.Error as error:
            raise IngestError(f"{path}: cannot be read: {error}") from error
        columns = [str(row[0]) for row in self.sql(f"DESCRIBE {table}").fetchall()]
        if suffix == ".parquet":
            return _tabular_select(table, source, 0, columns, len(columns))
        self.keep_reader_rejects(source)
        self.number_lines(table, source, first_line=2)
        return _tabular_select(table, source, 1, columns, _csv_header_width(path))

    def number_lines(self, table: str, source: int, first_line: int) -> None:
        """The file line of each row read: the lines left once the refused ones are taken out.

        (One record a line: a quoted CSV field holding a newline shifts later numbers.)
        """
        self.sql(f"""
            CREATE TEMP TABLE {_lines_table(source)} AS
            WITH refused AS (SELECT DISTINCT line FROM {_rejects_table(source)}),
            candidates AS (
                SELECT range + {first_line} AS line
                FROM range((SELECT count(*) FROM {table}) + (SELECT count(*) FROM refused))
            )
            SELECT row_number() OVER (ORDER BY line) - 1 AS ord, line
            FROM candidates ANTI JOIN refused USING (line)""")

    def prepared(self, relation: str) -> str:
        """``relation`` (shaped like ``raw``) with references resolved and fields parsed once."""
        return f"""
            SELECT *,
                   CASE WHEN kind = 'counter' THEN at_us ELSE start_us END // 1000000 AS start_s,
                   CASE WHEN kind = 'counter' THEN at_us ELSE end_us END // 1000000 AS end_s
            FROM (
                SELECT r.*, o.org AS org_known, m.kind, m.priced_from_s, m.priced_from_day,
                       {_prepared_columns()}
                FROM {relation} r
                LEFT JOIN known_orgs o ON o.org = r.org
                LEFT JOIN known_meters m ON m.meter = r.meter
            )"""

    def rule_number(self) -> str:
        """The index of the first check that holds, NULL for a valid event."""
        whens = " ".join(f"WHEN {check.condition} THEN {i}" for i, check in enumerate(self.checks))
        return f"CASE {whens} END"

    def check(self) -> None:
        rule_number = self.rule_number()
        self.sql(f"""
            CREATE TEMP TABLE checked AS
            SELECT source, line, id, org, resource, meter, kind, start_s, end_s, quantity_text,
                   {rule_number} AS rule_number
            FROM ({self.prepared("raw")})""")
        self.sql(f"""
            CREATE TEMP TABLE valid AS
            SELECT *, left(md5(concat_ws('|', kind, org, resource, meter, start_s, end_s,
                                         quantity_micro)), 16) AS content_hash
            FROM (
                SELECT source, line, source * {SOURCE_STRIDE} + line AS ord,
                       trim(id) AS id, org, resource, meter, kind, start_s, end_s,
                       CAST(CAST(coalesce(quantity_text, '1') AS DECIMAL(38, {QUANTITY_SCALE}))
                            * {10**QUANTITY_SCALE} AS BIGINT) AS quantity_micro,
                       strftime(make_timestamp(start_s * 1000000), '%Y-%m') AS month
                FROM checked WHERE rule_number IS NULL
            )""")
        # From here on only the refused rows of ``checked`` are read (rejects, reasons):
        # the rest is let go now, as each big table is once it is no longer needed, so
        # that a large batch stays in memory rather than spilling to disk (10M events:
        # ~4 GB less at once).
        if self.frees_memory:
            self.keep_only("checked", "rule_number IS NOT NULL")

    def keep_only(self, table: str, condition: str) -> None:
        """Keep the rows of temporary ``table`` that meet ``condition``, freeing the rest."""
        self.sql(f"CREATE TEMP TABLE kept AS SELECT * FROM {table} WHERE {condition}")
        self.sql(f"DROP TABLE {table}")
        self.sql(f"ALTER TABLE kept RENAME TO {table}")

    def existing_store(self) -> str | None:
        files = stored_parts(self.workspace.usage_dir)
        if not files:
            return None
        listing = ", ".join(sql_string(str(path)) for path in files)
        return f"read_parquet([{listing}], hive_partitioning = false)"

    def classify(self) -> None:
        """Each valid event as new, a duplicate or a conflict, by its idempotency key.

        The key is (organization, id): ids are each organization's own, so that one
        tenant's id never collides with (nor reveals) another's. The same key with the same
        content (``content_hash``) is a duplicate, with other content a conflict, whether
        its first copy is earlier in this run or already stored.
        """
        self.sql("""
            CREATE TEMP TABLE repeated AS
            SELECT org, id, arg_min(content_hash, ord) AS first_hash, min(ord) AS first_ord
            FROM valid GROUP BY org, id HAVING count(*) > 1""")
        store = self.existing_store()
        stored = (
            f"(SELECT org, id, content_hash FROM {store})"
            if store
            else "(SELECT NULL::VARCHAR AS org, NULL::VARCHAR AS id, "
            "NULL::VARCHAR AS content_hash WHERE false)"
        )
        # The id is quoted (JSON) in reasons: an id may hold quotes, spaces or words.
        key = "'id: ' || to_json(c.id)::VARCHAR || ' of organization ' || c.org"
        self.sql(f"""
            CREATE TEMP TABLE classified AS
            SELECT c.* EXCLUDE (stored, first_ord), false AS late,
                CASE WHEN c.status <> 'conflict' THEN NULL
                     WHEN c.stored THEN {key} || ' is already stored with different content'
                     ELSE {key} || ' was first seen with different content at line '
                          || (c.first_ord % {SOURCE_STRIDE})
                          || CASE WHEN f.source <> c.source THEN ' of ' || f.file ELSE '' END
                     END AS conflict_reason
            FROM (
                SELECT v.*, s.id IS NOT NULL AS stored, r.first_ord,
                    CASE WHEN s.id IS NOT NULL AND s.content_hash <> v.content_hash
                              THEN 'conflict'
                         WHEN s.id IS NOT NULL THEN 'duplicate'
                         WHEN r.id IS NOT NULL AND v.ord <> r.first_ord
                              AND v.content_hash <> r.first_hash THEN 'conflict'
                         WHEN r.id IS NOT NULL AND v.ord <> r.first_ord THEN 'duplicate'
                         ELSE 'new' END AS status
                FROM valid v
                LEFT JOIN repeated r ON r.org = v.org AND r.id = v.id
                LEFT JOIN {stored} s ON s.org = v.org AND s.id = v.id
            ) c
            LEFT JOIN input_files f ON f.source = c.first_ord // {SOURCE_STRIDE}""")
        if not self.frees_memory:
            return
        # Each file's count of records read, which ``counts_by_file`` answers with.
        self.sql(
            "CREATE TEMP TABLE read_counts AS SELECT source, count(*) AS n FROM raw GROUP BY source"
        )
        self.sql("DROP TABLE valid")
        self.sql("DROP TABLE repeated")
        # Of the records as read, what is still needed: the text fields of the refused and
        # the conflicting ones (their rejects quote them).
        self.keep_only(
            "raw",
            "(source, line) IN (SELECT source, line FROM checked "
            "UNION ALL SELECT source, line FROM classified WHERE status = 'conflict')",
        )

    def mark_late(self, closed: ClosedPeriods) -> None:
        """Mark the new events of a closed period (``late`` is false until then)."""
        keys = closed.all_keys()
        if not keys:
            return
        self.any_late_possible = True
        self.table("closed", {"org": [org for org, _ in keys], "period": [p for _, p in keys]})
        bounds = self.sql(
            "SELECT min(start_s), max(end_s) FROM classified WHERE status = 'new'"
        ).fetchone()
        if bounds is None or bounds[0] is None:
            return
        changes = _epoch_range_offsets(self.zone, bounds[0], bounds[1])

        def local_date(epoch: str) -> str:
            return _local_date_sql(epoch, changes)

        key_of = (
            "CASE k.billing_period WHEN 'daily' THEN strftime({day}, '%Y-%m-%d') "
            "WHEN 'weekly' THEN strftime({day}, '%G-W%V') ELSE strftime({day}, '%Y-%m') END"
        )
        first = key_of.format(day=local_date("c.start_s"))
        last = key_of.format(day=local_date("greatest(c.start_s, c.end_s - 1)"))
        self.sql(f"""
            UPDATE classified SET late = true
            FROM (
                SELECT c.ord FROM classified c JOIN known_orgs k ON k.org = c.org
                WHERE c.status = 'new' AND EXISTS (
                    SELECT 1 FROM closed p WHERE p.org = c.org AND p.period IN ({first}, {last}))
            ) AS l
            WHERE classified.ord = l.ord""")

    def batch_id(self) -> str:
        row = self.sql(
            "SELECT count(*), coalesce(bit_xor(hash(id, content_hash)), 0) "
            "FROM classified WHERE status = 'new'"
        ).fetchone()
        names = "|".join(str(path) for path in self.files)
        return hashlib.sha256(f"{row}|{names}".encode()).hexdigest()[:16]

    def write_store(self, batch: str) -> tuple[str, ...]:
        months = tuple(
            row[0]
            for row in self.sql(
                "SELECT DISTINCT month FROM classified WHERE status = 'new' ORDER BY month"
            ).fetchall()
        )
        if not months:
            return months
        for month in months:
            final = self.workspace.usage_dir / f"month={month}" / f"part-{batch}.parquet"
            temporary = temporary_sibling(final)
            self.sql(f"""
                COPY (
                    SELECT id, org, resource, meter, kind, start_s, end_s, quantity_micro,
                           content_hash, late, '{batch}' AS batch,
                           f.file AS source_file, line AS source_line
                    FROM classified c JOIN input_files f USING (source)
                    WHERE status = 'new' AND month = '{month}'
                ) TO {sql_string(str(temporary))} (FORMAT parquet, COMPRESSION zstd)""")
            publish(temporary, final)
        fsync_directory(self.workspace.usage_dir)
        for month in months:  # many small parts (the events API's) merged now and then
            self.compact(self.workspace.usage_dir / f"month={month}")
        return months

    def compact(self, folder: Path) -> None:
        """Merge small parts, never failing the run: the events are stored and published
        by now, so a failed merge (a full disk, say) is said, not raised; it is left as a
        crash would leave it, which the next compaction or listing recovers from."""
        try:
            compact(folder, self.connection)
        except (OSError, duckdb.Error, BeanbillError) as error:
            self.compaction_problem = f"{folder}: merging the stored parts failed: {error}"

    def write_rejects(self, fingerprint: str) -> tuple[Path | None, int]:
        refused = self.sql(
            "SELECT (SELECT count(*) FROM checked WHERE rule_number IS NOT NULL) "
            "+ (SELECT count(*) FROM classified WHERE status = 'conflict')"
        ).fetchone()
        if refused is None or not refused[0]:
            # Nothing to say (the common case): no record is parsed again for a reason.
            self.sql("CREATE TEMP TABLE rejects (rule VARCHAR)")
            return None, 0
        names = ", ".join(sql_string(str(path)) for path in self.files)
        rule = " ".join(f"WHEN {i} THEN {check.rule}" for i, check in enumerate(self.checks))
        reason = " ".join(
            f"WHEN {i} THEN {check.reason}"
            if check.reason
            else f"WHEN {i} THEN {check.rule}"
            + (f" || ': ' || coalesce({check.detail}, '')" if check.detail else "")
            for i, check in enumerate(self.checks)
        )
        rejected_raw = """(SELECT r.* FROM raw r SEMI JOIN
                              (SELECT source, line FROM checked WHERE rule_number IS NOT NULL) c
                           ON c.source = r.source AND c.line = r.line)"""
        self.sql(f"""
            CREATE TEMP TABLE rejects AS
            SELECT file, line, CASE WHEN contains(rule, ':') THEN split_part(rule, ':', 1)
                                    ELSE 'record' END AS field,
                   rule, reason, raw_text, record
            FROM (
                SELECT [{names}][source + 1] AS file, line,
                       CASE rule_number {rule} END AS rule,
                       CASE rule_number {reason} END AS reason, raw_text,
                       {{'id': id, 'org': org, 'resource': resource, 'meter': meter,
                         'start': start, 'end': "end", 'at': "at",
                         'quantity': quantity}} AS record
                FROM (SELECT *, {self.rule_number()} AS rule_number,
                             {self.unpriced_local_day()} AS start_local_day
                      FROM ({self.prepared(rejected_raw)}))
                UNION ALL
                SELECT [{names}][c.source + 1], c.line, 'id: conflicting duplicate',
                       c.conflict_reason, NULL,
                       {{'id': c.id, 'org': c.org, 'resource': c.resource, 'meter': c.meter,
                         'start': r.start, 'end': r."end", 'at': r."at",
                         'quantity': r.quantity}}
                FROM classified c JOIN raw r ON r.source = c.source AND r.line = c.line
                WHERE c.status = 'conflict'
            )""")
        count = self._count("rejects")
        if not count:
            return None, 0
        path = self.workspace.rejects_dir / f"rejects-{fingerprint}.jsonl"
        temporary = temporary_sibling(path)
        self.sql(
            f"COPY (SELECT * FROM rejects ORDER BY file, line) TO {sql_string(str(temporary))} "
            "(FORMAT json)"
        )
        publish(temporary, path)
        return path, count

    def unpriced_local_day(self) -> str:
        """SQL for the local day an unpriced event starts on (its reason names it)."""
        [unpriced] = [i for i, check in enumerate(self.checks) if check.rule == UNPRICED_RULE]
        bounds = self.sql(
            f"SELECT min(start_s), max(start_s) FROM checked WHERE rule_number = {unpriced}"
        ).fetchone()
        if bounds is None or bounds[0] is None:
            return "NULL::DATE"
        return _local_date_sql("start_s", _epoch_range_offsets(self.zone, bounds[0], bounds[1]))

    def write_late_report(self, fingerprint: str) -> tuple[Path | None, int]:
        count = self._count("classified WHERE late") if self.any_late_possible else 0
        if not count:
            return None, 0
        path = self.workspace.reports_dir / f"late-{fingerprint}.csv"
        temporary = temporary_sibling(path)
        self.sql(f"""
            COPY (SELECT org, meter, resource, id, to_timestamp(start_s) AS start,
                         to_timestamp(end_s) AS "end", quantity_micro
                  FROM classified WHERE late ORDER BY org, start_s, id)
            TO {sql_string(str(temporary))} (FORMAT csv, HEADER true)""")
        publish(temporary, path)
        return path, count

    def _count(self, relation: str) -> int:
        row = self.sql(f"SELECT count(*) FROM {relation}").fetchone()
        return int(row[0]) if row else 0

    def counts_by_file(self) -> tuple[FileCounts, ...]:
        """Per input file: read, accepted, duplicates, late (the API answers each batch of
        a group commit with its own)."""
        read_counts = (
            "read_counts"  # kept by classify: raw holds only some records now
            if self.frees_memory
            else "(SELECT source, count(*) AS n FROM raw GROUP BY source)"
        )
        rows = self.sql(f"""
            SELECT f.source, coalesce(r.n, 0), coalesce(c.new, 0), coalesce(c.duplicates, 0),
                   coalesce(c.late, 0)
            FROM input_files f
            LEFT JOIN {read_counts} r USING (source)
            LEFT JOIN (SELECT source, count(*) FILTER (status = 'new') AS new,
                              count(*) FILTER (status = 'duplicate') AS duplicates,
                              count(*) FILTER (late) AS late
                       FROM classified GROUP BY source) c USING (source)
            ORDER BY f.source""").fetchall()
        return tuple(FileCounts(int(r[1]), int(r[2]), int(r[3]), int(r[4])) for r in rows)

    def reasons(self) -> tuple[tuple[str, int], ...]:
        rows = self.sql(
            "SELECT rule, count(*) FROM rejects "
            f"GROUP BY rule ORDER BY count(*) DESC, rule LIMIT {REASONS_SHOWN}"
        ).fetchall()
        return tuple((str(kind), int(count)) for kind, count in rows)

    def fingerprint(self) -> str:
        """Same input files, unchanged → same report names, so a re-run rewrites, not adds."""
        parts = []
        for path in self.files:
            status = path.stat()
            parts.append(f"{path}|{status.st_size}|{status.st_mtime_ns}")
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def ingest_database(workspace: Workspace) -> duckdb.DuckDBPyConnection:
    """A database for many ingests of one workspace (each runs on a cursor of its own),
    warmed: what a process loads at its first ingest (the Arrow hand-over, DuckDB's JSON
    functions, ~0.3 s) is loaded now, not while a caller waits."""
    database = duckdb.connect(config=workspace.duckdb_config())
    database.register("warm_arrow", pa.Table.from_pydict({"text": ['{"id": "warm"}']}))
    database.execute("SELECT json_extract_string(text, ['$.id']) FROM warm_arrow").fetchall()
    database.unregister("warm_arrow")
    return database


def ingest(
    workspace: Workspace,
    files: Sequence[Path],
    show_progress: bool = False,
    database: duckdb.DuckDBPyConnection | None = None,
) -> IngestSummary:
    """Validate, deduplicate and store events; write rejects and late-event reports.

    ``show_progress`` lets DuckDB draw its progress bar (for a terminal, not for scripts);
    ``database`` (from ``ingest_database``) spares a frequent caller opening one each time.
    """
    if not files:
        raise IngestError("no input files given")
    if len(files) > MAX_FILES_PER_INGEST:
        raise IngestError(f"at most {MAX_FILES_PER_INGEST} files per ingest")
    run = _Ingestion(workspace, files, show_progress, database)
    try:
        return _ingest(workspace, run)
    finally:
        run.connection.close()  # its temporary tables go with it


def _ingest(workspace: Workspace, run: _Ingestion) -> IngestSummary:
    # Reading and checking depend on the input and the settings only: the workspace lock
    # is taken after them, for what depends on the store and the closed periods (another
    # process, an API server's other worker, checks its files while this one stores).
    run.load_reference_tables()
    run.read_files()
    run.check()
    with workspace.writing():
        run.classify()
        run.mark_late(ClosedPeriods(workspace.state_dir))
        fingerprint = run.fingerprint()
        rejects_path, rejected = run.write_rejects(fingerprint)
        late_path, late = run.write_late_report(fingerprint)
        months = run.write_store(run.batch_id())
        reasons = run.reasons() if rejected else ()
        by_file = run.counts_by_file()
    read = sum(counts.read for counts in by_file)
    accepted = sum(counts.accepted for counts in by_file)
    duplicates = sum(counts.duplicates for counts in by_file)
    if accepted + duplicates + rejected != read:
        raise IngestError(
            f"internal accounting error: read {read} events but accepted {accepted}, "
            f"duplicates {duplicates}, rejected {rejected}"
        )
    return IngestSummary(
        files=tuple(str(path) for path in run.files),
        read=read,
        accepted=accepted,
        duplicates=duplicates,
        rejected=rejected,
        late=late,
        months=months,
        rejects_path=rejects_path,
        late_path=late_path,
        reasons=reasons,
        by_file=by_file,
        compaction_problem=run.compaction_problem,
    )


def summary_as_json(summary: IngestSummary) -> str:
    return json.dumps(
        {
            "read": summary.read,
            "accepted": summary.accepted,
            "duplicates": summary.duplicates,
            "rejected": summary.rejected,
            "late": summary.late,
            "months": list(summary.months),
            "rejects": str(summary.rejects_path) if summary.rejects_path else None,
            "late_report": str(summary.late_path) if summary.late_path else None,
            "compaction_problem": summary.compaction_problem,
        }
    )

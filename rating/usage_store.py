"""The usage store's files: which ones hold the stored events, and compaction.

Every ingest publishes one Parquet part per month it touched. A file of a million events
makes one part; the events API makes one part per group of batches, thousands a day. Each
reader (the ingest's id classification, rating) opens every part of a month, so many
small parts make both slower by the day. Compaction merges a month's small parts into
one, under the workspace lock, without ever showing an event twice or losing one. Parts
are merged with parts of their own level (64 ingest parts make a level-1 part, 64 of
those a level-2 part, ...), so the work stays proportional to what comes in. A merge:

1. a journal (``compaction.json`` in the month folder) names the inputs and the output,
   published durably before anything else;
2. the output is written to a temporary file, synced and published;
3. the inputs are deleted, then the journal.

Readers list parts through ``stored_parts``, which honours a journal: once its output
exists, its inputs are not read (even if a crash left them behind), and before that the
output does not exist. The next compaction of the month, or ``recover``, finishes what a
crash interrupted. Nothing is rewritten in place: a part is immutable once published.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import duckdb

from beanbill.rating.errors import IngestError
from beanbill.rating.storage import (
    fsync_directory,
    publish,
    sql_string,
    temporary_sibling,
    write_bytes_atomically,
)

JOURNAL = "compaction.json"
PART_GLOB = "part-*.parquet"
# A month is compacted when it holds this many small parts; a part is small below this
# size (big parts, a large file's, are left alone: compaction never rewrites a month).
COMPACT_AT_PARTS = 64
SMALL_PART_BYTES = 64 * 1024 * 1024
MAX_PARTS_PER_COMPACTION = 10_000
LEVEL_PATTERN = re.compile(r"part-c(\d+)-[0-9a-f]+\.parquet")


def _journal(folder: Path) -> tuple[str, frozenset[str]] | None:
    """(output, inputs) of the month's unfinished compaction, if any."""
    path = folder / JOURNAL
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        return str(record["output"]), frozenset(str(name) for name in record["inputs"])
    except (ValueError, KeyError, TypeError) as error:
        raise IngestError(
            f"{path}: unreadable ({error}); it names the parts a compaction merged: "
            "restore it from a backup, or remove it once the parts it names are checked"
        ) from None


def month_parts(folder: Path) -> list[Path]:
    """The parts holding a month's stored events, each event in one of them."""
    parts = sorted(folder.glob(PART_GLOB))
    journal = _journal(folder)
    if journal is None:
        return parts
    output, inputs = journal
    if (folder / output).exists():
        return [part for part in parts if part.name not in inputs]
    return [part for part in parts if part.name != output]


def stored_parts(usage_dir: Path, months: Iterable[str] | None = None) -> list[Path]:
    """Every part to read, of the given months (``YYYY-MM``) or of all."""
    if months is None:
        folders = sorted(usage_dir.glob("month=*"))
    else:
        folders = [usage_dir / f"month={month}" for month in months]
    return [part for folder in folders if folder.is_dir() for part in month_parts(folder)]


def recover(folder: Path) -> None:
    """Finish or drop a compaction a crash interrupted (under the workspace lock)."""
    journal = _journal(folder)
    if journal is None:
        return
    output, inputs = journal
    if (folder / output).exists():
        for name in sorted(inputs):
            (folder / name).unlink(missing_ok=True)
    for partial in folder.glob(f".{output}.tmp-*"):  # an output never published
        partial.unlink()
    fsync_directory(folder)
    (folder / JOURNAL).unlink()
    fsync_directory(folder)


def level(part: Path) -> int:
    """A part's compaction level: 0 as an ingest wrote it, n + 1 when merged from level n."""
    match = LEVEL_PATTERN.fullmatch(part.name)
    return int(match.group(1)) if match else 0


def compact(folder: Path, connection: duckdb.DuckDBPyConnection) -> int:
    """Merge one level's small parts into a part of the next level when there are enough
    (under the workspace lock); how many parts were merged (0: nothing to do).

    Parts are merged with parts of their own level only, so an event is rewritten once
    per level (a few times in all), never each time a few new parts come.
    """
    recover(folder)
    by_level: dict[int, list[Path]] = {}
    for part in sorted(folder.glob(PART_GLOB)):
        if part.stat().st_size < SMALL_PART_BYTES:
            by_level.setdefault(level(part), []).append(part)
    full = [number for number, parts in sorted(by_level.items()) if len(parts) >= COMPACT_AT_PARTS]
    if not full:
        return 0
    inputs = by_level[full[0]][:MAX_PARTS_PER_COMPACTION]
    output = folder / f"part-c{full[0] + 1}-{_digest(part.name for part in inputs)}.parquet"
    record = {"output": output.name, "inputs": [part.name for part in inputs]}
    write_bytes_atomically(folder / JOURNAL, json.dumps(record).encode())
    temporary = temporary_sibling(output)
    listing = ", ".join(sql_string(part) for part in inputs)
    connection.execute(
        f"COPY (SELECT * FROM read_parquet([{listing}], hive_partitioning = false)) "
        f"TO {sql_string(temporary)} (FORMAT parquet, COMPRESSION zstd)"
    )
    _check_rows(connection, inputs, temporary)
    publish(temporary, output)
    recover(folder)  # the inputs go, then the journal
    return len(inputs)


def _check_rows(
    connection: duckdb.DuckDBPyConnection, inputs: Sequence[Path], output: Path
) -> None:
    listing = ", ".join(sql_string(part) for part in inputs)
    row = connection.execute(
        f"SELECT (SELECT count(*) FROM read_parquet([{listing}], hive_partitioning = false)), "
        f"(SELECT count(*) FROM read_parquet({sql_string(output)}))"
    ).fetchone()
    if row is None or row[0] != row[1]:
        output.unlink(missing_ok=True)
        raise IngestError(f"{output.parent}: compaction wrote {row} rows: nothing was changed")


def _digest(names: Iterable[str]) -> str:
    return hashlib.sha256("\n".join(names).encode()).hexdigest()[:16]

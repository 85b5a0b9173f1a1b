"""Group commit for the events API: batches that arrive together are ingested together.

An ingest costs a fixed ~100-200 ms (a DuckDB connection, the reference tables, ~20
statements, a fsync'd Parquet file) whether it holds ten events or ten thousand; one
ingest per request made the API pay it per batch. With ``rating.group_commit``, the
batches waiting while an ingest runs are ingested together in the next one, one file per
batch, so each keeps its own line numbers, counts and rejects, and each request is
answered when the ingest holding its batch has returned: when its events are durable.
The rules are the file ingest's, once: the same run, with several files.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from beanbill.rating.group_commit import GroupCommit
from beanbill.rating.ingest import FileCounts, IngestSummary

MAX_BATCHES_PER_GROUP = 64  # a group's files; far under the ingest's own limit
# Senders answered by one ingest send again within a few ms; waiting this long for them
# (only when batches have been arriving together) makes one full group of them rather
# than two halves, each paying the ingest's fixed cost (bench/bench_api.py).
LINGER_SECONDS = 0.05
# Two ingests at once: one runs a small group on one DuckDB thread and a good part of its
# time is fixed cost, so a second, checking its files while the first stores (the
# workspace lock serializes the store), uses the other core (bench/bench_api.py).
CONCURRENT_INGESTS = 2

Ingested = tuple[FileCounts, IngestSummary]


def ingest_group_commit(
    ingest: Callable[[Sequence[Path]], IngestSummary],
) -> GroupCommit[Path, Ingested]:
    """Batch files in, each one's counts and the group's summary (whose rejects file
    holds that batch's rejects under its path) out."""

    def commit(paths: Sequence[Path]) -> list[Ingested]:
        summary = ingest(paths)
        return [(counts, summary) for counts in summary.by_file]

    return GroupCommit(commit, MAX_BATCHES_PER_GROUP, LINGER_SECONDS, CONCURRENT_INGESTS)

"""Group commit for the events API: batches that arrive together are ingested together.

An ingest costs a fixed ~100-200 ms (a DuckDB connection, the reference tables, ~20
statements, a fsync'd Parquet file) whether it holds ten events or ten thousand. One
ingest per request made the API pay it per batch. Here the first request to arrive
becomes the *leader*: it takes every batch waiting (its own included, up to
``MAX_BATCHES_PER_GROUP``) and ingests them as one run, one file per batch, so each
batch keeps its own line numbers, counts and rejects. Requests arriving meanwhile wait
for the next group, led by the first of them. Every request is answered only when the
ingest that took its batch has returned, that is when its events are durable.

The rules are the file ingest's, once: the same run, with several files.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from beanbill.rating.errors import BeanbillError
from beanbill.rating.ingest import FileCounts, IngestSummary

MAX_BATCHES_PER_GROUP = 64  # a group's files; far under the ingest's own limit
MAX_WAITING_BATCHES = 4_096  # beyond this, requests are refused (503) rather than queued


class GroupCommitFull(BeanbillError):
    """Too many batches wait for an ingest: the sender should retry later."""


@dataclass
class Ticket:
    """One batch waiting: its file, then its counts and the ingest's summary (or error)."""

    path: Path
    done: bool = False
    counts: FileCounts | None = None
    summary: IngestSummary | None = None
    error: BeanbillError | None = None


@dataclass
class GroupCommit:
    """Takes batch files and ingests those waiting together with ``ingest``."""

    ingest: Callable[[Sequence[Path]], IngestSummary]
    lock: threading.Lock = field(default_factory=threading.Lock)
    waiting: list[Ticket] = field(default_factory=list)
    running: bool = False
    groups: int = 0  # ingests run, for tests and benchmarks
    condition: threading.Condition = field(init=False)

    def __post_init__(self) -> None:
        self.condition = threading.Condition(self.lock)

    def submit(self, path: Path) -> tuple[FileCounts, IngestSummary]:
        """Ingest the batch in ``path`` (with whatever else waits); its counts and the
        group's summary (whose rejects file holds this batch's rejects under ``path``)."""
        ticket = Ticket(path)
        with self.condition:
            if len(self.waiting) >= MAX_WAITING_BATCHES:
                raise GroupCommitFull(f"{len(self.waiting):,} batches are waiting to be ingested")
            self.waiting.append(ticket)
            while not ticket.done:
                if self.running:
                    self.condition.wait()
                    continue
                self._lead()
        if ticket.error is not None:
            raise ticket.error
        if ticket.counts is None or ticket.summary is None:
            raise BeanbillError(f"{path}: the group commit gave no answer")  # pragma: no cover
        return ticket.counts, ticket.summary

    def _lead(self) -> None:
        """Run one group (called holding the lock; released while ingesting)."""
        group = self.waiting[:MAX_BATCHES_PER_GROUP]
        del self.waiting[: len(group)]
        self.running = True
        self.lock.release()
        try:
            summary = self.ingest([ticket.path for ticket in group])
            failure: BeanbillError | None = None
            if len(summary.by_file) != len(group):
                failure = BeanbillError("the ingest did not count every batch of the group")
        except BeanbillError as error:
            failure = error
        except Exception as error:  # every waiting request gets an answer, never a hang
            failure = BeanbillError(f"the ingest failed: {type(error).__name__}: {error}")
        finally:
            self.lock.acquire()
            self.running = False
            self.groups += 1
        for index, ticket in enumerate(group):
            if failure is None:
                ticket.counts, ticket.summary = summary.by_file[index], summary
            else:
                ticket.error = failure
            ticket.done = True
        self.condition.notify_all()

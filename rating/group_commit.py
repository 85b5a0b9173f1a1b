"""Group commit: what arrives while a durable write runs is written together in the next.

A durable write (an fsync'd transaction, an ingest that writes and syncs a Parquet file)
costs a fixed time whether it holds one item or a hundred. Callers that each need their
item durable before answering (a webhook's 200, an events batch's answer) would pay it
one by one. Here the first caller to arrive while no write runs becomes the *leader*: it
takes every item waiting (its own included, up to ``max_items``), writes them with one
call of ``commit`` and hands each caller its own result. Callers arriving meanwhile wait
for the next write, led by the first of them (or, with ``max_writes`` above one, write
beside it: a write that is part fixed cost and part one thread's work, such as a DuckDB
ingest, leaves a core idle otherwise). Nobody is answered before the write that
holds its item has returned; a failed write fails every caller of it, and nobody hangs.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

from beanbill.rating.errors import BeanbillError

Item = TypeVar("Item")
Result = TypeVar("Result")

MAX_WAITING = 100_000  # beyond this, callers are refused rather than queued
MAX_LINGER_SECONDS = 1.0
PEAK_WINDOW_SECONDS = 1.0  # how long callers seen in at once are expected back
MAX_WRITES = 8


class GroupCommitFull(BeanbillError):
    """Too many items wait for a write: the caller should answer "try again later"."""


class GroupCommitFailed(BeanbillError):
    """The write holding this item failed: nothing of it may be taken as written."""


@dataclass
class _Ticket(Generic[Item, Result]):
    item: Item
    taken: bool = False  # into a write (under way or done)
    done: bool = False
    result: Result | None = None
    error: BeanbillError | None = None


class GroupCommit(Generic[Item, Result]):
    """``commit(items)`` writes items durably and returns one result per item, in order."""

    def __init__(
        self,
        commit: Callable[[Sequence[Item]], Sequence[Result]],
        max_items: int,
        linger_seconds: float = 0.0,
        max_writes: int = 1,
    ) -> None:
        """``linger_seconds``: a leader waits up to this long for its share of as many
        callers as were lately seen in at once (writing or waiting), so that callers
        answered by one write and sending again join the next rather than splitting into
        smaller groups that each pay the write's fixed cost; a lone caller never waits.
        ``max_writes``: how many writes may run at once (``commit`` must allow it); each
        leader's share is then that many-th of the callers."""
        if max_items < 1:
            raise ValueError("a group holds at least one item")
        if not 0 <= linger_seconds <= MAX_LINGER_SECONDS:
            raise ValueError(f"linger_seconds is between 0 and {MAX_LINGER_SECONDS}")
        if not 1 <= max_writes <= MAX_WRITES:
            raise ValueError(f"max_writes is between 1 and {MAX_WRITES}")
        self.commit = commit
        self.max_items = max_items
        self.linger_seconds = linger_seconds
        self.max_writes = max_writes
        self.condition = threading.Condition()
        self.waiting: list[_Ticket[Item, Result]] = []
        self.running = 0  # writes under way
        self.inside = 0  # callers in ``submit``: waiting or in the write running
        self.peaks = [0, 0]  # the most inside at once: this window and the one before
        self.window_started = time.monotonic()
        self.groups = 0  # writes done, for tests and benchmarks

    def submit(self, item: Item) -> Result:
        """Write ``item`` (with whatever else waits) and return its result once durable."""
        ticket: _Ticket[Item, Result] = _Ticket(item)
        with self.condition:
            if len(self.waiting) >= MAX_WAITING:
                raise GroupCommitFull(f"{len(self.waiting):,} items are waiting to be written")
            self.waiting.append(ticket)
            self.inside += 1
            self._note_peak()
            self.condition.notify_all()  # a lingering leader counts arrivals
            try:
                while not ticket.done:
                    # Lead a write if one may start and this caller's item still waits
                    # (taken into a write under way, it waits for that write's end).
                    if self.running < self.max_writes and not ticket.taken:
                        self._lead(ticket)
                    else:
                        self.condition.wait()
            finally:
                self.inside -= 1
        if ticket.error is not None:
            raise ticket.error
        return ticket.result  # type: ignore[return-value]  # set with done, unless error

    def _note_peak(self) -> None:
        now = time.monotonic()
        if now - self.window_started >= PEAK_WINDOW_SECONDS:
            self.peaks = [0, self.peaks[0]]
            self.window_started = now
        self.peaks[0] = max(self.peaks[0], self.inside)

    def _linger(self, own: _Ticket[Item, Result]) -> None:
        """Wait (the lock released) until as many callers wait as were lately in at once,
        or ``linger_seconds`` have passed, or another write took this leader's own item."""
        self._note_peak()
        share = -(-max(self.peaks) // self.max_writes)  # rounded up
        expected = min(self.max_items, share)
        deadline = time.monotonic() + self.linger_seconds
        while len(self.waiting) < expected and not own.taken:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self.condition.wait(left)

    def _lead(self, own: _Ticket[Item, Result]) -> None:
        """Write one group: called holding the lock, which is released while writing."""
        self.running += 1
        self._linger(own)
        if own.taken:  # another write, started while this one lingered, took this item
            self.running -= 1
            self.condition.notify_all()
            return
        group = self.waiting[: self.max_items]
        del self.waiting[: len(group)]
        for taken in group:
            taken.taken = True
        failure: BeanbillError | None = None
        results: Sequence[Result] = ()
        interrupted: BaseException | None = None
        self.condition.release()
        try:
            results = self.commit([ticket.item for ticket in group])
            if len(results) != len(group):
                failure = GroupCommitFailed(
                    f"the write answered for {len(results)} of {len(group)} items"
                )
        except BeanbillError as error:
            failure = error
        except Exception as error:  # every caller gets an answer, never a hang
            failure = GroupCommitFailed(f"the write failed: {type(error).__name__}: {error}")
        except BaseException as error:  # an interrupt: the others are answered, then it goes on
            failure = GroupCommitFailed(f"the write was interrupted: {type(error).__name__}")
            interrupted = error
        finally:
            self.condition.acquire()
            self.running -= 1
            self.groups += 1
        for index, ticket in enumerate(group):
            if failure is None:
                ticket.result = results[index]
            else:
                ticket.error = failure
            ticket.done = True
        self.condition.notify_all()
        if interrupted is not None:
            # This caller goes with the interrupt: its own item, if another group was to
            # hold it, is not written later behind its back.
            self.waiting = [ticket for ticket in self.waiting if ticket is not own]
            raise interrupted


class AsyncGroupCommit(Generic[Item, Result]):
    """The same group commit for callers that are coroutines of one event loop.

    ``GroupCommit`` parks every caller on a thread of its own (the loop's thread pool)
    and wakes them all after each write: with webhooks of ~1 ms of work each, those
    thread switches and the interpreter lock they contend for cost more than the write.
    Here the callers are futures of the loop: the loop's own thread keeps the queue (no
    lock), and one write at a time runs on a worker thread, handing its results back in
    one hop. Same contract: nobody is answered before the write holding its item has
    returned, a failed write fails each of its callers, nobody hangs.
    """

    def __init__(self, commit: Callable[[Sequence[Item]], Sequence[Result]], max_items: int):
        if max_items < 1:
            raise ValueError("a group holds at least one item")
        self.commit = commit
        self.max_items = max_items
        self.waiting: list[tuple[Item, asyncio.Future[Result]]] = []
        self.running = False
        self.groups = 0  # writes done, for tests and benchmarks
        # One thread for the writes, which run one at a time: a store that keeps a
        # connection per thread (rating.storage.KeptSqlite) keeps one.
        self.writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="group-commit")

    async def submit(self, item: Item) -> Result:
        """Write ``item`` (with whatever else waits) and return its result once durable."""
        if len(self.waiting) >= MAX_WAITING:
            raise GroupCommitFull(f"{len(self.waiting):,} items are waiting to be written")
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self.waiting.append((item, future))
        if not self.running:
            self._start()
        # The write goes on if this caller goes away (a closed connection): its item
        # is still written, and the next group is still started.
        return await asyncio.shield(future)

    def _start(self) -> None:
        """Take a group and write it on a worker thread (called on the loop's thread)."""
        group = self.waiting[: self.max_items]
        del self.waiting[: len(group)]
        self.running = True
        loop = asyncio.get_running_loop()
        write = loop.run_in_executor(self.writer, self.commit, [item for item, _ in group])
        write.add_done_callback(lambda done: self._finish(group, done))

    def _finish(
        self,
        group: list[tuple[Item, asyncio.Future[Result]]],
        done: asyncio.Future[Sequence[Result]],
    ) -> None:
        """Answer a group's callers and start the next group (on the loop's thread)."""
        self.running = False
        self.groups += 1
        failure: BeanbillError | None = None
        results: Sequence[Result] = ()
        error = done.exception()
        if isinstance(error, BeanbillError):
            failure = error
        elif error is not None:  # every caller gets an answer, never a hang
            failure = GroupCommitFailed(f"the write failed: {type(error).__name__}: {error}")
        else:
            results = done.result()
            if len(results) != len(group):
                failure = GroupCommitFailed(
                    f"the write answered for {len(results)} of {len(group)} items"
                )
        for index, (_, future) in enumerate(group):
            if future.cancelled():
                continue
            if failure is None:
                future.set_result(results[index])
            else:
                future.set_exception(failure)
        if self.waiting:
            self._start()

"""The event loop's group commit (webhooks): callers that arrive while a write runs share
the next write; each is answered with its own result only once its write has returned; a
failed write fails each of its callers; a caller that goes away does not stop the others."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence

import pytest

from beanbill.rating.errors import BeanbillError
from beanbill.rating.group_commit import AsyncGroupCommit, GroupCommitFailed

WRITE_SECONDS = 0.02


class SlowStore:
    """Writes take a while, as an fsync does; remembers each group and when it ended."""

    def __init__(self) -> None:
        self.groups: list[list[int]] = []
        self.ended: dict[int, float] = {}
        self.threads: set[str] = set()

    def write(self, items: Sequence[int]) -> list[int]:
        self.threads.add(threading.current_thread().name)
        time.sleep(WRITE_SECONDS)
        self.groups.append(list(items))
        for item in items:
            self.ended[item] = time.monotonic()
        return [item * 10 for item in items]


def test_callers_arriving_together_share_writes_and_get_their_own_results() -> None:
    store = SlowStore()

    async def main() -> list[tuple[int, int, float]]:
        commit: AsyncGroupCommit[int, int] = AsyncGroupCommit(store.write, max_items=16)

        async def call(item: int) -> tuple[int, int, float]:
            result = await commit.submit(item)
            return item, result, time.monotonic()

        answers = await asyncio.gather(*(call(item) for item in range(50)))
        assert commit.groups == len(store.groups)
        return answers

    answers = asyncio.run(main())
    assert [(item, result) for item, result, _ in answers] == [(i, i * 10) for i in range(50)]
    # Answered only after the write that held the item had returned.
    assert all(answered >= store.ended[item] for item, _, answered in answers)
    assert sorted(item for group in store.groups for item in group) == list(range(50))
    assert len(store.groups) < 50  # the first alone, the others in groups
    assert max(len(group) for group in store.groups) <= 16
    assert len(store.threads) == 1  # one writing thread: one kept connection


def test_a_failed_write_fails_each_of_its_callers_and_the_next_group_still_runs() -> None:
    calls: list[list[int]] = []

    def flaky(items: Sequence[int]) -> list[int]:
        calls.append(list(items))
        time.sleep(WRITE_SECONDS)
        if len(calls) == 2:
            raise OSError("disk full")
        if len(calls) == 3:
            raise BeanbillError("the store refused")
        return list(items)

    async def main() -> list[object]:
        commit: AsyncGroupCommit[int, int] = AsyncGroupCommit(flaky, max_items=4)
        first = asyncio.ensure_future(commit.submit(0))
        await asyncio.sleep(0)  # the first write starts with item 0 alone
        rest = [asyncio.ensure_future(commit.submit(item)) for item in range(1, 9)]
        return list(await asyncio.gather(first, *rest, return_exceptions=True))

    answers = asyncio.run(main())
    assert calls == [[0], [1, 2, 3, 4], [5, 6, 7, 8]]
    assert answers[0] == 0
    assert all(isinstance(answer, GroupCommitFailed) for answer in answers[1:5])
    assert "OSError: disk full" in str(answers[1])
    assert all(str(answer) == "the store refused" for answer in answers[5:])


def test_a_caller_that_goes_away_does_not_stop_its_write_or_the_next() -> None:
    store = SlowStore()

    async def main() -> list[int]:
        commit: AsyncGroupCommit[int, int] = AsyncGroupCommit(store.write, max_items=8)
        leaving = asyncio.ensure_future(commit.submit(1))
        staying = asyncio.ensure_future(commit.submit(2))
        await asyncio.sleep(0)
        later = asyncio.ensure_future(commit.submit(3))
        await asyncio.sleep(0)
        leaving.cancel()  # the client closed its connection
        with pytest.raises(asyncio.CancelledError):
            await leaving
        return [await staying, await later]

    assert asyncio.run(main()) == [20, 30]
    assert sorted(item for group in store.groups for item in group) == [1, 2, 3]


def test_a_group_holds_at_least_one_item() -> None:
    with pytest.raises(ValueError, match="at least one"):
        AsyncGroupCommit(lambda items: list(items), max_items=0)

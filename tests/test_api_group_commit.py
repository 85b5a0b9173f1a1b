"""Group commit of the events API: batches sent together are ingested in one run, each
answered with its own counts and rejects once its events are durable, never naming a
server file, and a failed group answers every request of it (no request hangs)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from beanbill.api.app import create_app
from beanbill.api.keys import KeyStore
from beanbill.rating.errors import BeanbillError
from beanbill.rating.group_commit import GroupCommit, GroupCommitFailed
from beanbill.rating.ingest import IngestSummary, ingest
from beanbill.rating.workspace import Workspace
from tests.support import SMALL_CATALOG, write_workspace
from tests.test_api import TODAY, UNLIMITED, bearer, billed_customers, billed_settings

SENDERS = 8


def egress(org: str, identifier: str, quantity: str = "1") -> dict[str, str]:
    return {"id": identifier, "org": org, "resource": f"{org}/lb", "meter": "egress",
            "at": "2026-11-03T00:00:00Z", "quantity": quantity}  # fmt: skip


@pytest.fixture
def served(tmp_path: Path) -> tuple[Workspace, Any, str]:
    workspace = write_workspace(
        tmp_path / "ws", billed_settings(), SMALL_CATALOG, billed_customers()
    )
    orgs = [c.id for c in workspace.customers.customer]
    key = KeyStore(workspace.state_dir).create(None, orgs).secret_key
    return workspace, create_app(workspace, UNLIMITED, lambda: TODAY), key


def post_all(app: Any, key: str, batches: Sequence[list[dict[str, str]]]) -> list[Any]:
    """Each batch from its own client and thread, all at once."""
    start = threading.Barrier(len(batches))

    def send(batch: list[dict[str, str]]) -> Any:
        with TestClient(app) as client:
            start.wait()
            response = client.post("/v1/events", headers=bearer(key), json={"events": batch})
            assert response.status_code == 200, response.text
            return response.json()

    with ThreadPoolExecutor(len(batches)) as pool:
        return list(pool.map(send, batches))


def group_commit_of(app: Any) -> GroupCommit[Any, Any]:
    commit = app.state.context.group_commit  # create_app keeps the context on the app
    assert isinstance(commit, GroupCommit)
    return commit


def test_batches_sent_together_share_ingests_and_each_gets_its_own_answer(
    served: tuple[Workspace, Any, str],
) -> None:
    workspace, app, key = served
    orgs = ["fr-post", "team-a", "de-pre", "us-prov"]
    batches = [
        [egress(orgs[s % 4], f"s{s}-{n}") for n in range(200)]
        + ([egress(orgs[s % 4], "bad", "-1")] if s % 2 else [])
        for s in range(SENDERS)
    ]
    answers = post_all(app, key, batches)
    for sender, answer in enumerate(answers):
        assert (answer["received"], answer["accepted"]) == (200 + sender % 2, 200)
        assert answer["rejected"] == sender % 2
        if sender % 2:
            (reject,) = answer["rejects"]
            assert reject["index"] == 200 and reject["field"] == "quantity"
    commit = group_commit_of(app)
    assert commit.groups < SENDERS  # some batches were ingested together
    # Durable and complete: a file of every event finds them all stored.
    again = workspace.root / "again.jsonl"
    again.write_text("".join(json.dumps(e) + "\n" for b in batches for e in b))
    summary = ingest(workspace, [again])
    assert (summary.duplicates, summary.rejected) == (200 * SENDERS, SENDERS // 2)


def test_a_conflict_within_one_group_names_no_server_file(
    served: tuple[Workspace, Any, str],
) -> None:
    workspace, app, key = served
    commit = group_commit_of(app)
    # Large files (beyond a request's limit) keep every write of the group commit busy
    # meanwhile.
    slow = []
    for writer in range(commit.max_writes):
        path = workspace.root / f"slow-{writer}.jsonl"
        lines = (json.dumps(egress("fr-post", f"s{writer}-{n}")) + "\n" for n in range(50_000))
        path.write_text("".join(lines))
        slow.append(path)
    first = egress("team-a", "same", "1")
    other = egress("team-a", "same", "2")
    answers: list[Any] = []
    with ThreadPoolExecutor(commit.max_writes) as pool:
        leading = [pool.submit(commit.submit, path) for path in slow]
        deadline = time.monotonic() + 30
        while commit.running < commit.max_writes and time.monotonic() < deadline:
            time.sleep(0.001)
        assert commit.running == commit.max_writes  # the next batches wait for one group
        answers = post_all(app, key, [[first], [other]])
        for write in leading:
            write.result()
    verdicts = sorted((a["accepted"], a["rejected"]) for a in answers)
    assert verdicts == [(0, 1), (1, 0)]
    (reject,) = next(a for a in answers if a["rejected"])["rejects"]
    assert "another batch sent at the same time" in reject["reason"]
    assert str(workspace.root) not in json.dumps(answers) and ".jsonl" not in json.dumps(answers)


def test_a_failed_group_answers_every_request_and_the_next_group_runs(tmp_path: Path) -> None:
    calls: list[int] = []
    gate = threading.Event()

    def flaky(paths: Sequence[Path]) -> list[IngestSummary]:
        calls.append(len(paths))
        if len(calls) == 1:
            gate.wait(5)  # the others queue behind this group
            raise RuntimeError("disk full")
        raise BeanbillError("the store is read-only")

    commit: GroupCommit[Path, IngestSummary] = GroupCommit(flaky, 64)
    outcomes: list[str] = []

    def submit(index: int) -> None:
        try:
            commit.submit(tmp_path / f"{index}.jsonl")
        except BeanbillError as error:
            outcomes.append(str(error))

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(5)]
    threads[0].start()
    while not commit.running:
        time.sleep(0.001)
    for thread in threads[1:]:
        thread.start()
    time.sleep(0.05)
    gate.set()
    for thread in threads:
        thread.join(10)
    assert not any(thread.is_alive() for thread in threads)  # nobody hangs
    assert len(outcomes) == 5 and calls == [1, 4]
    assert sum("RuntimeError: disk full" in o for o in outcomes) == 1
    assert sum("read-only" in o for o in outcomes) == 4


def closed_loop_groups(linger_seconds: float, callers: int, rounds: int) -> tuple[int, float]:
    """``callers`` threads each submit ``rounds`` items one after another (each waits for
    its answer before sending the next, as a client does); writes made, seconds taken."""

    def write(items: Sequence[int]) -> list[int]:
        time.sleep(0.03)  # a durable write's fixed cost
        return [item * 2 for item in items]

    commit: GroupCommit[int, int] = GroupCommit(write, 64, linger_seconds)
    start = threading.Barrier(callers)

    def caller(index: int) -> None:
        start.wait()
        for round_number in range(rounds):
            item = index * 1_000 + round_number
            assert commit.submit(item) == item * 2

    started = time.monotonic()
    with ThreadPoolExecutor(callers) as pool:
        list(pool.map(caller, range(callers)))
    return commit.groups, time.monotonic() - started


def test_a_leader_lingers_for_the_callers_seen_together_and_a_lone_caller_never_waits() -> None:
    # Without lingering, callers answered by one write come back while the next runs and
    # split into two half groups each round; lingering keeps them together.
    lingering, _ = closed_loop_groups(0.3, callers=8, rounds=6)
    eager, _ = closed_loop_groups(0.0, callers=8, rounds=6)
    assert lingering <= 8 < eager
    # One caller is never kept waiting for company that is not there.
    groups, seconds = closed_loop_groups(0.5, callers=1, rounds=4)
    assert groups == 4 and seconds < 0.5


def test_linger_is_bounded() -> None:
    with pytest.raises(ValueError, match="linger_seconds"):
        GroupCommit(lambda items: list(items), 64, linger_seconds=5.0)


def test_two_writes_run_at_once_never_three_and_each_caller_gets_its_own_result() -> None:
    lock = threading.Lock()
    under_way = [0]
    most = [0]
    written: list[int] = []

    def write(items: Sequence[int]) -> list[int]:
        with lock:
            under_way[0] += 1
            most[0] = max(most[0], under_way[0])
        time.sleep(0.02)  # a write's fixed cost: the second runs meanwhile
        with lock:
            under_way[0] -= 1
            written.extend(items)
        return [item * 3 for item in items]

    commit: GroupCommit[int, int] = GroupCommit(write, 4, linger_seconds=0.0, max_writes=2)
    start = threading.Barrier(12)

    def caller(index: int) -> None:
        start.wait()
        for round_number in range(5):
            item = index * 100 + round_number
            assert commit.submit(item) == item * 3

    with ThreadPoolExecutor(12) as pool:
        list(pool.map(caller, range(12)))
    assert most[0] == 2
    assert sorted(written) == sorted(i * 100 + r for i in range(12) for r in range(5))
    assert not commit.waiting and commit.running == 0


def test_a_lingering_leader_whose_callers_were_taken_writes_nothing() -> None:
    """With two writes allowed, a second leader may take the items a first one lingers
    for: the first then writes no empty group, and every caller is still answered."""
    groups: list[list[int]] = []

    def write(items: Sequence[int]) -> list[int]:
        groups.append(list(items))
        return list(items)

    commit: GroupCommit[int, int] = GroupCommit(write, 64, linger_seconds=0.2, max_writes=2)
    commit.peaks = [6, 6]  # callers lately came six at a time: a leader lingers for three
    with ThreadPoolExecutor(6) as pool:
        assert sorted(pool.map(commit.submit, range(6))) == list(range(6))
    assert all(groups) and sorted(i for group in groups for i in group) == list(range(6))


def test_writes_at_once_are_bounded() -> None:
    with pytest.raises(ValueError, match="max_writes"):
        GroupCommit(lambda items: list(items), 64, max_writes=0)


def test_a_leader_whose_own_item_another_write_took_stops_lingering() -> None:
    commit: GroupCommit[int, int] = GroupCommit(
        lambda items: list(items), 64, linger_seconds=0.5, max_writes=2
    )
    commit.peaks = [4, 4]  # lately four at once: each leader lingers for two
    start = threading.Barrier(2)

    def call(item: int) -> float:
        start.wait()
        began = time.monotonic()
        assert commit.submit(item) == item
        return time.monotonic() - began

    with ThreadPoolExecutor(2) as pool:
        seconds = list(pool.map(call, range(2)))
    assert max(seconds) < 0.4  # neither waited out the linger for an item already written
    assert commit.running == 0


def test_an_interrupted_write_answers_its_other_callers_and_the_next_group_runs() -> None:
    calls: list[list[int]] = []
    gate = threading.Event()

    def write(items: Sequence[int]) -> list[int]:
        calls.append(list(items))
        if len(calls) == 1:
            gate.wait(5)  # the others queue behind this write
        if len(calls) == 2:
            raise KeyboardInterrupt  # in the thread of the second group's leader
        return list(items)

    commit: GroupCommit[int, int] = GroupCommit(write, 2)
    with ThreadPoolExecutor(4) as pool:
        first = pool.submit(commit.submit, 0)
        while not commit.running:
            time.sleep(0.001)
        second = pool.submit(commit.submit, 1)  # leads the next group: interrupted
        while len(commit.waiting) < 1:
            time.sleep(0.001)
        others = [pool.submit(commit.submit, item) for item in (2, 3)]
        while len(commit.waiting) < 3:
            time.sleep(0.001)
        gate.set()
        assert first.result(timeout=5) == 0
        outcomes = []
        for future in (second, *others):
            try:
                outcomes.append(future.result(timeout=5))  # none left hanging
            except KeyboardInterrupt:
                outcomes.append("interrupted")  # the thread that led the write
            except GroupCommitFailed as error:
                assert "interrupted: KeyboardInterrupt" in str(error)
                outcomes.append("failed")
        # The interrupted write held 1 and 2; whichever thread led it is interrupted,
        # the other callers of it are answered with the failure, and 3 is written next
        # (its caller answered, unless its thread was the one interrupted).
        assert outcomes.count("interrupted") == 1
        assert sorted(map(str, outcomes)) in (
            ["3", "failed", "interrupted"],
            ["failed", "failed", "interrupted"],
        )
    assert calls[:2] == [[0], [1, 2]]
    # Item 3 is written unless its own caller was the one interrupted.
    assert (calls[2:] == [[3]]) == (3 in outcomes)

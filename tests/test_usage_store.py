"""Compaction of the usage store: many small parts (the events API's) merged into one,
with every event still read exactly once, whatever a crash leaves behind."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import pytest

from beanbill.rating import usage_store
from beanbill.rating.errors import IngestError
from beanbill.rating.ingest import ingest
from beanbill.rating.periods import Month
from beanbill.rating.rate import rate_months
from beanbill.rating.usage_store import (
    JOURNAL,
    compact,
    level,
    month_parts,
    recover,
    stored_parts,
)
from beanbill.rating.workspace import Workspace
from tests.support import write_jsonl

OCTOBER = Month(2026, 10)
FOLDER = "month=2026-10"


def event(index: int) -> dict[str, Any]:
    day = f"2026-10-{1 + index % 28:02d}"
    return {"id": f"e{index}", "org": "acme", "resource": f"app-{index % 3}", "meter": "cpu",
            "start": f"{day}T10:00:00Z", "end": f"{day}T11:{index % 60:02d}:00Z",
            "quantity": "2"}  # fmt: skip


def stored_ids(workspace: Workspace) -> list[str]:
    parts = [str(path) for path in stored_parts(workspace.usage_dir)]
    return sorted(
        str(row[0])
        for row in duckdb.sql(
            f"SELECT id FROM read_parquet({parts}, hive_partitioning = false)"
        ).fetchall()
    )


def rated_bytes(workspace: Workspace) -> dict[str, bytes]:
    rate_months(workspace, [OCTOBER])
    return {
        str(path.relative_to(workspace.rated_dir)): path.read_bytes()
        for path in sorted(workspace.rated_dir.rglob("*.parquet"))
    }


@pytest.fixture
def small_parts(
    make_workspace: Callable[..., Workspace], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Callable[[str, int], Workspace]:
    """A workspace fed ``count`` one-event files, one ingest each (as the API would)."""
    monkeypatch.setattr(usage_store, "COMPACT_AT_PARTS", 6)

    def make(name: str, count: int) -> Workspace:
        workspace = make_workspace(name=name)
        for index in range(count):
            ingest(workspace, [write_jsonl(tmp_path / name / f"{index}.jsonl", [event(index)])])
        return workspace

    return make


def test_small_parts_are_merged_and_rate_to_the_bytes_of_one_file(
    small_parts: Callable[[str, int], Workspace],
    make_workspace: Callable[..., Workspace],
    tmp_path: Path,
) -> None:
    compacted = small_parts("parts", 14)
    folder = compacted.usage_dir / FOLDER
    # The 6th and the 12th ingests merged 6 parts each into a level-1 part; 2 came since.
    # (A merged part is merged again only with 5 more of its level: an event is rewritten
    # once a level, not every few ingests.)
    assert sorted(map(level, folder.glob("part-*.parquet"))) == [0, 0, 1, 1]
    assert not (folder / JOURNAL).exists()
    assert stored_ids(compacted) == sorted(f"e{index}" for index in range(14))
    whole = make_workspace(name="whole")
    ingest(whole, [write_jsonl(tmp_path / "all.jsonl", [event(i) for i in range(14)])])
    assert rated_bytes(compacted) == rated_bytes(whole) != {}
    again = ingest(
        compacted, [write_jsonl(tmp_path / "again.jsonl", [event(i) for i in range(14)])]
    )
    assert (again.accepted, again.duplicates) == (0, 14)


def interrupted(workspace: Workspace, published: bool) -> Path:
    """The month as a crash leaves it: the journal written, the output published or not,
    the inputs all still there."""
    folder = workspace.usage_dir / FOLDER
    inputs = sorted(folder.glob("part-*.parquet"))
    output = folder / "part-cinterrupted.parquet"
    listing = ", ".join(f"'{part}'" for part in inputs)
    target = output if published else folder / f".{output.name}.tmp-999"
    duckdb.sql(f"COPY (SELECT * FROM read_parquet([{listing}])) TO '{target}' (FORMAT parquet)")
    record = {"output": output.name, "inputs": [part.name for part in inputs]}
    (folder / JOURNAL).write_text(json.dumps(record))
    return folder


@pytest.mark.parametrize("published", [True, False])
def test_a_compaction_cut_short_shows_every_event_once_and_is_finished_later(
    small_parts: Callable[[str, int], Workspace], tmp_path: Path, published: bool
) -> None:
    workspace = small_parts(f"cut-{published}", 5)  # below the threshold: 5 parts
    before = rated_bytes(workspace)
    folder = interrupted(workspace, published)
    assert stored_ids(workspace) == sorted(f"e{index}" for index in range(5))  # not twice
    assert rated_bytes(workspace) == before
    again = ingest(workspace, [write_jsonl(tmp_path / "again.jsonl", [event(i) for i in range(5)])])
    assert (again.accepted, again.duplicates) == (0, 5)  # classified against each event once
    recover(folder)
    assert not (folder / JOURNAL).exists() and not list(folder.glob(".*tmp-*"))
    assert len(month_parts(folder)) == (1 if published else 5)
    assert stored_ids(workspace) == sorted(f"e{index}" for index in range(5))


def test_an_unreadable_journal_stops_the_ingest_with_the_fix(
    small_parts: Callable[[str, int], Workspace], tmp_path: Path
) -> None:
    workspace = small_parts("broken", 2)
    (workspace.usage_dir / FOLDER / JOURNAL).write_text('{"output": "part-c1.parquet"')
    with pytest.raises(IngestError, match=r"compaction\.json: unreadable"):
        ingest(workspace, [write_jsonl(tmp_path / "more.jsonl", [event(99)])])


KILLABLE = """
import sys, duckdb
from pathlib import Path
from beanbill.rating import usage_store
usage_store.COMPACT_AT_PARTS = 2
usage_store.compact(Path(sys.argv[1]), duckdb.connect())
"""


def test_compaction_killed_at_random_points_never_shows_an_event_twice_or_loses_one(
    small_parts: Callable[[str, int], Workspace], tmp_path: Path
) -> None:
    workspace = small_parts("killed", 1)
    folder = workspace.usage_dir / FOLDER
    [stored] = month_parts(folder)
    seed = tmp_path / "seed.parquet"  # the stored part is merged away in the first round
    seed.write_bytes(stored.read_bytes())
    ids = {"e0"}

    def add_parts(round_number: int, count: int) -> None:
        """One-event parts, made directly: work for the next compaction to do."""
        for index in range(count):
            name = f"e-{round_number}-{index}"
            duckdb.sql(
                f"COPY (SELECT * REPLACE ('{name}' AS id) FROM read_parquet('{seed}')) "
                f"TO '{folder / f'part-k{round_number:02d}{index:04d}.parquet'}' (FORMAT parquet)"
            )
            ids.add(name)

    generator = random.Random(7)
    landed = 0  # kills that cut a compaction short (its journal still there)
    for round_number in range(6):
        add_parts(round_number, 150)
        process = subprocess.Popen([sys.executable, "-c", KILLABLE, str(folder)])
        deadline = time.monotonic() + 30
        while not (folder / JOURNAL).exists() and process.poll() is None:
            assert time.monotonic() < deadline, "the compaction never started"
            time.sleep(0.001)
        time.sleep(generator.uniform(0.0, 0.15))  # somewhere inside the compaction
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        landed += (folder / JOURNAL).exists()
        found = stored_ids(workspace)
        assert len(found) == len(ids) and set(found) == ids  # once each, none lost
        if generator.random() < 0.5:
            recover(folder)
    assert landed >= 3  # the kills did cut compactions short, at various points
    compact(folder, duckdb.connect())  # finishes, from whatever state
    assert stored_ids(workspace) == sorted(ids)
    assert not (folder / JOURNAL).exists()


def test_a_failed_compaction_does_not_fail_the_ingest_that_stored_its_events(
    small_parts: Callable[[str, int], Workspace],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The events are published before the store's small parts are merged: a merge that
    fails (a full disk) is reported (exit 1), not raised, and tried again later."""
    workspace = small_parts("full-disk", 5)  # one more part and the month is merged

    def full_disk(folder: Path, connection: duckdb.DuckDBPyConnection) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("beanbill.rating.ingest.compact", full_disk)
    summary = ingest(workspace, [write_jsonl(tmp_path / "sixth.jsonl", [event(5)])])
    assert summary.accepted == 1 and summary.exit_code == 1
    assert summary.compaction_problem is not None
    assert "No space left on device" in summary.compaction_problem
    assert stored_ids(workspace) == sorted(f"e{index}" for index in range(6))
    monkeypatch.undo()
    monkeypatch.setattr(usage_store, "COMPACT_AT_PARTS", 6)
    later = ingest(workspace, [write_jsonl(tmp_path / "seventh.jsonl", [event(6)])])
    assert later.exit_code == 0 and later.compaction_problem is None
    assert [level(part) for part in month_parts(workspace.usage_dir / FOLDER)] == [1]
    assert stored_ids(workspace) == sorted(f"e{index}" for index in range(7))

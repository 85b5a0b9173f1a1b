"""The sync state store: push records, the webhook inbox, schema versions, concurrent writers."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from beanbill.sync.state import MIGRATIONS, PushStatus, SqliteSyncState, SyncStateError


def test_push_records_survive_reopening_and_dead_letters_can_be_requeued(tmp_path: Path) -> None:
    state = SqliteSyncState(tmp_path)
    state.record_attempt("INV-2026-000001", "stripe", "timeout")
    state.record_attempt("INV-2026-000001", "stripe", None)
    state.mark_synced("INV-2026-000001", "stripe", {"invoice": "in_123"})
    state.record_attempt("INV-2026-000002", "stripe", "HTTP 400: bad tax id")
    state.mark_dead("INV-2026-000002", "stripe", "HTTP 400: bad tax id")
    reopened = SqliteSyncState(tmp_path)
    first = reopened.get("INV-2026-000001", "stripe")
    assert first is not None and (first.status, first.attempts, first.remote_ids) == (
        PushStatus.SYNCED, 2, {"invoice": "in_123"},
    )  # fmt: skip
    assert [r.status for r in reopened.records("stripe")] == [PushStatus.SYNCED, PushStatus.DEAD]
    assert reopened.requeue_dead("stripe") == 1
    assert reopened.get("INV-2026-000002", "stripe").status is PushStatus.PENDING  # type: ignore[union-attr]
    assert reopened.schema_version() == len(MIGRATIONS)


def test_the_inbox_keeps_each_event_once_until_processed(tmp_path: Path) -> None:
    state = SqliteSyncState(tmp_path)
    assert state.store_event("stripe", "evt_1", "invoice.paid", {"id": "evt_1", "amount": 1234})
    assert not state.store_event("stripe", "evt_1", "invoice.paid", {"id": "evt_1", "amount": 1234})
    state.store_event("stripe", "evt_2", "charge.refunded", {"id": "evt_2"})
    assert [e.event_id for e in state.unprocessed_events("stripe", 10)] == ["evt_1", "evt_2"]
    state.mark_processed("stripe", {"evt_1": "posted"})
    assert [e.event_id for e in SqliteSyncState(tmp_path).unprocessed_events("stripe", 10)] == [
        "evt_2"
    ]


def test_a_store_from_a_newer_beanbill_is_refused(tmp_path: Path) -> None:
    SqliteSyncState(tmp_path)
    with sqlite3.connect(tmp_path / "sync.sqlite") as connection:
        connection.execute("PRAGMA user_version = 99")
    with pytest.raises(SyncStateError, match="schema version 99"):
        SqliteSyncState(tmp_path)


CONCURRENT = """
import sys
from pathlib import Path
from beanbill.sync.state import SqliteSyncState
state = SqliteSyncState(Path(sys.argv[1]))
for index in range(150):
    state.store_event("stripe", f"evt_{index}", "invoice.paid", {"n": index})
    state.record_attempt(f"INV-{index}", "stripe", None)
"""


def test_concurrent_writers_neither_lose_nor_duplicate(tmp_path: Path) -> None:
    processes = [
        subprocess.Popen([sys.executable, "-c", CONCURRENT, str(tmp_path)]) for _ in range(3)
    ]
    assert [p.wait(timeout=120) for p in processes] == [0, 0, 0]
    state = SqliteSyncState(tmp_path)
    assert len(state.unprocessed_events("stripe", 1000)) == 150
    assert {r.attempts for r in state.records("stripe")} == {3}

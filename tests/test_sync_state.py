"""The sync state store: push records, the webhook inbox, schema versions, concurrent writers.

Every test runs against both stores, SQLite and PostgreSQL (tests/peers/postgres.py), so
that the engine gets the same answers from either.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from beanbill.rating.config import StateSettings
from beanbill.rating.storage import KeptSqlite
from beanbill.sync import state_postgres
from beanbill.sync.state import (
    MIGRATIONS,
    NewEvent,
    PushStatus,
    SqliteSyncState,
    SyncStateError,
    open_sync_state,
    payload_text,
    sync_mark,
)
from beanbill.sync.state_postgres import PostgresSyncState
from tests.peers.postgres import BACKENDS, PASSWORD, backend_settings
from tests.support import BEANBILL


@dataclass
class Store:
    """One store under test, opened again as often as a test likes."""

    state_dir: Path
    settings: StateSettings

    def open(self) -> SqliteSyncState | PostgresSyncState:
        if self.settings.url is None:
            return SqliteSyncState(self.state_dir)
        return PostgresSyncState(self.settings.url, self.settings.password_env)

    @property
    def latest_version(self) -> int:
        return len(MIGRATIONS if self.settings.url is None else state_postgres.MIGRATIONS)

    def set_version(self, version: int) -> None:
        """Pretend a newer beanbill wrote the store."""
        if self.settings.url is None:
            with sqlite3.connect(self.state_dir / "sync.sqlite") as connection:
                connection.execute(f"PRAGMA user_version = {version}")
            return
        with psycopg.connect(self.settings.url, password=PASSWORD, autocommit=True) as connection:
            connection.execute(
                "UPDATE beanbill_schema SET version = %s WHERE component = 'sync'", (version,)
            )

    def arguments(self) -> list[str]:
        """How a script (below) opens the same store: its folder, and the URL or ''."""
        return [str(self.state_dir), self.settings.url or "", self.settings.password_env]


@pytest.fixture(params=BACKENDS)
def store(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Store]:
    with backend_settings(request.param, monkeypatch) as settings:
        yield Store(tmp_path, settings)


def test_push_records_survive_reopening_and_dead_letters_can_be_requeued(store: Store) -> None:
    state = store.open()
    state.record_attempt("INV-2026-000001", "stripe", "timeout")
    state.record_attempt("INV-2026-000001", "stripe", None)
    state.mark_synced("INV-2026-000001", "stripe", {"invoice": "in_123"})
    state.record_attempt("INV-2026-000002", "stripe", "HTTP 400: bad tax id")
    state.mark_dead("INV-2026-000002", "stripe", "HTTP 400: bad tax id")
    reopened = store.open()
    first = reopened.get("INV-2026-000001", "stripe")
    assert first is not None and (first.status, first.attempts, first.remote_ids) == (
        PushStatus.SYNCED, 2, {"invoice": "in_123"},
    )  # fmt: skip
    assert [r.status for r in reopened.records("stripe")] == [PushStatus.SYNCED, PushStatus.DEAD]
    assert reopened.requeue_dead("stripe") == 1
    assert reopened.get("INV-2026-000002", "stripe").status is PushStatus.PENDING  # type: ignore[union-attr]
    assert reopened.schema_version() == store.latest_version


def test_the_inbox_keeps_each_event_once_until_processed(store: Store) -> None:
    state = store.open()
    assert state.store_event("stripe", "evt_1", "invoice.paid", {"id": "evt_1", "amount": 1234})
    assert not state.store_event("stripe", "evt_1", "invoice.paid", {"id": "evt_1", "amount": 1234})
    state.store_event("stripe", "evt_2", "charge.refunded", {"id": "evt_2"})
    assert [e.event_id for e in state.unprocessed_events("stripe", 10)] == ["evt_1", "evt_2"]
    state.mark_processed("stripe", {"evt_1": "posted"})
    assert [e.event_id for e in store.open().unprocessed_events("stripe", 10)] == ["evt_2"]
    assert state.inbox_counts("stripe") == {"posted": 1, "waiting": 1}


def test_events_stored_together_are_one_transaction_each_answered(store: Store) -> None:
    state = store.open()
    state.store_event("stripe", "evt_0", "invoice.paid", {"id": "evt_0"})
    events = [
        NewEvent("stripe", f"evt_{n}", "invoice.paid", f'{{"id": "evt_{n}"}}') for n in range(4)
    ]
    events.append(NewEvent("stripe", "evt_2", "invoice.paid", '{"id": "evt_2"}'))  # twice
    assert state.store_events(events) == [False, True, True, True, False]
    assert [e.event_id for e in store.open().unprocessed_events("stripe", 10)] == [
        "evt_0",
        "evt_1",
        "evt_2",
        "evt_3",
    ]
    with pytest.raises(SyncStateError, match="payload over"):
        payload_text("evt_big", {"blob": "x" * 1_000_001})


def test_every_record_reads_back_as_it_was_written(store: Store) -> None:
    """The smaller tables, value for value and in the same order from either store."""
    state = store.open()
    state.record_intent("INV-2", "email", {"message_id": "<a@b>"})
    state.record_attempt("INV-2", "email", None)
    state.record_intent("INV-2", "email", {"message_id": "<c@d>"})  # still pending: replaced
    state.mark_synced("INV-2", "email", {"message_id": "<c@d>"})
    state.record_intent("INV-2", "email", {"message_id": "<e@f>"})  # synced: never touched
    state.record_attempt("INV-10", "stripe", "x" * 5_000)
    assert [(r.document, r.target) for r in state.records()] == [
        ("INV-2", "email"),
        ("INV-10", "stripe"),
    ]
    assert [r.document for r in state.records("stripe")] == ["INV-10"]
    assert state.get("INV-2", "email").remote_ids == {"message_id": "<c@d>"}  # type: ignore[union-attr]
    assert len(state.get("INV-10", "stripe").last_error or "") == 2_000  # type: ignore[union-attr]
    with pytest.raises(SyncStateError, match="no attempt recorded"):
        state.mark_dead("INV-404", "stripe", "never tried")
    state.remember("stripe", "customer", "acme", "cus_1")
    state.remember("stripe", "customer", "acme", "cus_2")
    assert state.remote_id("stripe", "customer", "acme") == "cus_2"
    assert state.local_id("stripe", "customer", "cus_2") == "acme"
    assert state.local_id("stripe", "customer", "cus_1") is None
    state.set_status("stripe", "in_1", "INV-2", "open", "sent")
    state.set_status("stripe", "in_1", None, "paid", "card")  # the document is kept
    state.set_status("stripe", "in_0", None, "void", "")
    assert sorted((s.remote_id, s.document, s.status) for s in state.statuses("stripe")) == [
        ("in_0", None, "void"),
        ("in_1", "INV-2", "paid"),
    ]
    assert state.next_delivery("INV-2", "email") == 1
    state.record_delivery("INV-2", "email", 1, {"message_id": "<g@h>"}, "asked again")
    assert state.next_delivery("INV-2", "email") == 2
    [delivery] = state.deliveries("INV-2")
    assert (delivery.sequence, delivery.remote_ids, delivery.reason) == (
        1, {"message_id": "<g@h>"}, "asked again",
    )  # fmt: skip
    assert state.deliveries() == [delivery] and state.deliveries("INV-10") == []
    state.record_crm("hubspot", "acme", "d1", "co_1", None)
    state.record_crm("hubspot", "acme", None, None, "HTTP 400")  # keeps the last upsert's
    company = state.crm_companies("hubspot")["acme"]
    assert (company.digest, company.remote_id, company.last_error) == ("d1", "co_1", "HTTP 400")


def test_a_store_from_a_newer_beanbill_is_refused(store: Store) -> None:
    store.open()
    store.set_version(99)
    with pytest.raises(SyncStateError, match="schema version 99"):
        store.open()


CONCURRENT = """
import sys
from pathlib import Path
from beanbill.rating.config import StateSettings
from beanbill.sync.state import state_at
settings = StateSettings(url=sys.argv[2] or None, password_env=sys.argv[3])
state = state_at(Path(sys.argv[1]), settings)
for index in range(150):
    state.store_event("stripe", f"evt_{index}", "invoice.paid", {"n": index})
    state.record_attempt(f"INV-{index}", "stripe", None)
"""


def test_concurrent_writers_neither_lose_nor_duplicate(store: Store) -> None:
    store.open()  # created once: the writers race on the data, not on the schema
    processes = [
        subprocess.Popen([sys.executable, "-c", CONCURRENT, *store.arguments()]) for _ in range(3)
    ]
    assert [p.wait(timeout=120) for p in processes] == [0, 0, 0]
    state = store.open()
    assert len(state.unprocessed_events("stripe", 1000)) == 150
    assert {r.attempts for r in state.records("stripe")} == {3}


def test_a_kept_connection_is_handed_on_clean_after_a_failure(tmp_path: Path) -> None:
    """The server keeps one connection per thread: a transaction a failure left open is
    rolled back when its caller leaves, so the next caller neither fails ("cannot start a
    transaction within a transaction") nor commits half of another's work."""
    kept = KeptSqlite(tmp_path / "kept.sqlite", "CREATE TABLE IF NOT EXISTS t (x INTEGER);")
    with pytest.raises(sqlite3.IntegrityError), kept.connection() as connection:
        connection.execute("BEGIN IMMEDIATE")
        connection.execute("INSERT INTO t VALUES (1)")
        raise sqlite3.IntegrityError("a statement failed mid-transaction")
    with kept.connection() as connection:
        assert not connection.in_transaction
        connection.execute("BEGIN IMMEDIATE")
        connection.execute("INSERT INTO t VALUES (2)")
        connection.execute("COMMIT")
        first = connection
    with kept.connection() as connection:
        assert connection is first  # kept, not opened again
        assert connection.execute("SELECT x FROM t").fetchall() == [(2,)]
    (tmp_path / "kept.sqlite").unlink()  # another file in its place: opened again
    with kept.connection() as connection:
        assert connection is not first
        assert connection.execute("SELECT count(*) FROM t").fetchone() == (0,)


def test_a_forked_child_opens_its_own_kept_connection(tmp_path: Path) -> None:
    kept = KeptSqlite(tmp_path / "kept.sqlite", "CREATE TABLE IF NOT EXISTS t (x INTEGER);")
    with kept.connection() as connection:
        parents = id(connection)
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through the pipe
        try:
            with kept.connection() as connection:
                connection.execute("INSERT INTO t VALUES (1)")
                answer = b"own" if id(connection) != parents else b"parent's"
        except BaseException:
            answer = b"failed"
        os.write(write, answer)
        os._exit(0)
    os.close(write)
    assert os.read(read, 16) == b"own"
    os.waitpid(child, 0)
    with kept.connection() as connection:
        assert connection.execute("SELECT x FROM t").fetchall() == [(1,)]


def test_a_kept_connection_used_within_itself_keeps_the_outer_transaction(
    tmp_path: Path,
) -> None:
    kept = KeptSqlite(tmp_path / "kept.sqlite", "CREATE TABLE IF NOT EXISTS t (x INTEGER);")
    with kept.connection() as outer:
        outer.execute("BEGIN IMMEDIATE")
        outer.execute("INSERT INTO t VALUES (1)")
        with kept.connection() as inner:  # a method calling another
            assert inner is outer and inner.in_transaction
        assert outer.in_transaction  # the inner caller's leaving rolled nothing back
        outer.execute("COMMIT")
    with kept.connection() as connection:
        assert connection.execute("SELECT x FROM t").fetchall() == [(1,)]


def test_a_damaged_sqlite_state_is_refused_with_its_fix_in_one_line(
    make_workspace: Any, tmp_path: Path
) -> None:
    """Not "an unexpected error, a bug": what to do, and what moving it aside would cost."""
    workspace = make_workspace()
    damaged = workspace.state_dir / "sync.sqlite"
    damaged.parent.mkdir(parents=True, exist_ok=True)
    damaged.write_bytes(b"this is not a database" * 200)
    with pytest.raises(SyncStateError, match=r"sync\.sqlite cannot be read .*restore it"):
        SqliteSyncState(workspace.state_dir)
    result = subprocess.run(
        [BEANBILL, "sync", "status", "-w", str(workspace.root)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and len(result.stderr.splitlines()) == 1
    assert "restore it from a backup" in result.stderr
    assert "issued_since" in result.stderr


def test_a_lost_sqlite_state_is_refused_not_started_afresh(
    make_workspace: Any, tmp_path: Path
) -> None:
    """The file says what each target already has, which the ledger does not: an empty
    one would send every document again (e-mails to customers among them)."""
    workspace = make_workspace()
    state = open_sync_state(workspace)
    state.record_attempt("INV-2026-000001", "email", None)
    state.mark_synced("INV-2026-000001", "email", {"message": "<m@x>"})
    mark = sync_mark(workspace)
    assert mark.is_file()  # beside the ledger: kept with the books
    (workspace.state_dir / "sync.sqlite").unlink()
    for suffix in ("-wal", "-shm"):
        (workspace.state_dir / f"sync.sqlite{suffix}").unlink(missing_ok=True)
    with pytest.raises(SyncStateError, match=r"sync\.sqlite is lost .*restore it from a backup"):
        open_sync_state(workspace)
    result = subprocess.run(
        [BEANBILL, "sync", "status", "-w", str(workspace.root)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1, result.stderr
    assert "is lost" in result.stderr and str(mark) in result.stderr
    assert not (workspace.state_dir / "sync.sqlite").exists()  # nothing made meanwhile
    mark.unlink()  # the fix given for starting afresh, knowingly
    assert open_sync_state(workspace).records() == []
    assert mark.is_file()

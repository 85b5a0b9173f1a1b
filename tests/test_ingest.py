"""Ingest: a clear, kept reject per bad event; duplicates count once; re-runs change nothing."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import duckdb
import pytest

from beanbill.rating.closures import ClosedPeriods
from beanbill.rating.errors import IngestError
from beanbill.rating.ingest import _Ingestion, ingest
from beanbill.rating.periods import Month
from beanbill.rating.rate import rate_months
from beanbill.rating.workspace import Workspace
from tests.support import customer, read_rejects, write_jsonl

GOOD = {
    "id": "e1",
    "org": "acme",
    "resource": "app-1",
    "meter": "cpu",
    "start": "2026-11-03T10:00:00Z",
    "end": "2026-11-03T11:00:00Z",
    "quantity": "2",
}


def stored(workspace: Workspace) -> list[tuple[object, ...]]:
    files = sorted(str(p) for p in workspace.usage_dir.glob("month=*/*.parquet"))
    if not files:
        return []
    return duckdb.sql(
        f"SELECT id, start_s, end_s, quantity_micro, late FROM read_parquet({files}, "
        "hive_partitioning = false) ORDER BY id"
    ).fetchall()


def with_fields(**changes: object) -> dict[str, object]:
    record: dict[str, object] = {**GOOD, **changes}
    return {key: value for key, value in record.items() if value is not None}


BAD_CASES = [
    ("unknown org", with_fields(org="nobody"), "org", "unknown organization"),
    ("unknown meter", with_fields(meter="gpu"), "meter", "unknown meter"),
    ("missing id", with_fields(id=None), "id", "missing"),
    ("missing start", with_fields(start=None), "start", "missing"),
    ("naive start", with_fields(start="2026-11-03T10:00:00"), "start", "no UTC offset"),
    ("naive end", with_fields(end="2026-11-03 11:00"), "end", "no UTC offset"),
    ("not a timestamp", with_fields(start="yesterday"), "start", "not an RFC 3339"),
    ("impossible date", with_fields(start="2026-02-30T10:00:00Z"), "start", "not a valid date"),
    ("end before start", with_fields(end="2026-11-03T09:59:59Z"), "end", "before start"),
    ("absurd duration", with_fields(end="2027-01-03T11:00:00Z"), "end", "maximum event duration"),
    ("negative quantity", with_fields(quantity="-1"), "quantity", "negative"),
    ("non-numeric quantity", with_fields(quantity="two"), "quantity", "not a plain decimal"),
    ("exponent quantity", with_fields(quantity=1e-7), "quantity", "not a plain decimal"),
    ("too precise quantity", with_fields(quantity="0.0000001"), "quantity", "more than 6 decimal"),
    ("counter with start", with_fields(meter="egress"), "start", "counter meters take at"),
    ("interval with at", with_fields(at="2026-11-03T10:00:00Z"), "at", "interval meters take"),
    ("year out of range", with_fields(start="1999-12-31T10:00:00Z"), "start", "outside the years"),
    ("control character", with_fields(resource="app\u0001"), "resource", "control characters"),
]


@pytest.mark.parametrize(
    ("case", "record", "field", "reason"), BAD_CASES, ids=[c[0] for c in BAD_CASES]
)
def test_bad_event_is_rejected_with_file_line_field_and_reason(
    make_workspace: Callable[..., Workspace],
    tmp_path: Path,
    case: str,
    record: dict[str, object],
    field: str,
    reason: str,
) -> None:
    workspace = make_workspace()
    good_line = with_fields(id="good")
    source = write_jsonl(tmp_path / "in.jsonl", [good_line, record])
    summary = ingest(workspace, [source])
    assert (summary.read, summary.accepted, summary.rejected) == (2, 1, 1), case
    assert summary.exit_code == 1
    [reject] = read_rejects(summary.rejects_path)
    assert reject["file"] == str(source)
    assert reject["line"] == 2
    assert reject["field"] == field
    assert reason in reject["reason"]
    assert [row[0] for row in stored(workspace)] == ["good"]


def test_malformed_json_keeps_raw_text_and_exact_line_numbers(
    make_workspace: Callable[..., Workspace], tmp_path: Path
) -> None:
    workspace = make_workspace()
    source = write_jsonl(
        tmp_path / "in.jsonl",
        [with_fields(id="a"), "", '{"id": "b", "org": ', "[1, 2]", "", with_fields(id="c")],
    )
    summary = ingest(workspace, [source])
    rejects = read_rejects(summary.rejects_path)
    assert [(r["line"], r["reason"]) for r in rejects] == [
        (3, "malformed JSON"),
        (4, "not a JSON object"),
    ]
    assert rejects[0]["raw_text"] == '{"id": "b", "org": '
    assert summary.accepted == 2


def test_same_id_same_content_counts_once_even_with_other_spelling(
    make_workspace: Callable[..., Workspace], tmp_path: Path
) -> None:
    workspace = make_workspace()
    same_instant = with_fields(start="2026-11-03T12:00:00+02:00", quantity="2.000")
    source = write_jsonl(tmp_path / "in.jsonl", [GOOD, GOOD, same_instant])
    summary = ingest(workspace, [source])
    assert (summary.accepted, summary.duplicates, summary.rejected) == (1, 2, 0)
    assert stored(workspace) == [("e1", 1793700000, 1793703600, 2_000_000, False)]


def test_same_id_other_content_is_rejected_within_a_batch_and_against_the_store(
    make_workspace: Callable[..., Workspace], tmp_path: Path
) -> None:
    workspace = make_workspace()
    first = write_jsonl(tmp_path / "a.jsonl", [GOOD, with_fields(quantity="3")])
    summary = ingest(workspace, [first])
    [reject] = read_rejects(summary.rejects_path)
    assert (reject["line"], reject["field"]) == (2, "id")
    assert "first seen with different content" in reject["reason"]
    second = write_jsonl(tmp_path / "b.jsonl", [with_fields(end="2026-11-03T12:00:00Z")])
    summary = ingest(workspace, [second])
    [reject] = read_rejects(summary.rejects_path)
    assert "already stored with different content" in reject["reason"]
    assert reject["file"] == str(second)
    assert stored(workspace) == [("e1", 1793700000, 1793703600, 2_000_000, False)]


def test_reingesting_changes_nothing(
    make_workspace: Callable[..., Workspace], tmp_path: Path
) -> None:
    workspace = make_workspace()
    source = write_jsonl(tmp_path / "in.jsonl", [GOOD, with_fields(id="bad", org="x")])
    first = ingest(workspace, [source])
    files_before = {
        p: p.read_bytes()
        for p in workspace.root.rglob("*")
        if p.is_file() and "state" not in p.parts
    }
    second = ingest(workspace, [source])
    files_after = {
        p: p.read_bytes()
        for p in workspace.root.rglob("*")
        if p.is_file() and "state" not in p.parts
    }
    assert (first.accepted, second.accepted, second.duplicates) == (1, 0, 1)
    assert files_before == files_after


def test_csv_and_parquet_inputs(make_workspace: Callable[..., Workspace], tmp_path: Path) -> None:
    workspace = make_workspace()
    csv_path = tmp_path / "counters.csv"
    csv_path.write_text(
        "id,org,resource,meter,at,quantity\n"
        "c1,acme,lb,egress,2026-11-03T23:59:59Z,12.5\n"
        "c2,acme,lb,egress\n"
        "c3,acme,lb,egress,2026-11-04T23:59:59Z,1,surplus\n"
    )
    parquet_path = tmp_path / "intervals.parquet"
    duckdb.sql(
        "COPY (SELECT 'p' || i AS id, 'acme' AS org, 'app' AS resource, 'cpu' AS meter, "
        "'2026-11-05T00:00:00Z' AS start, '2026-11-05T01:00:00Z' AS \"end\", 1.5 AS quantity "
        f"FROM range(3) t(i)) TO '{parquet_path}' (FORMAT parquet)"
    )
    summary = ingest(workspace, [csv_path, parquet_path])
    assert (summary.accepted, summary.rejected) == (4, 2)
    rejects = read_rejects(summary.rejects_path)
    assert [(r["line"], r["field"]) for r in rejects] == [(3, "at"), (4, "record")]
    assert "more fields than the header" in rejects[1]["reason"]
    quantities = {row[0]: row[3] for row in stored(workspace)}
    assert quantities == {"c1": 12_500_000, "p0": 1_500_000, "p1": 1_500_000, "p2": 1_500_000}


def test_late_events_for_closed_periods_are_kept_and_reported(
    make_workspace: Callable[..., Workspace], tmp_path: Path
) -> None:
    workspace = make_workspace(customers=[customer("acme"), customer("daily-co", "daily")])
    ClosedPeriods(workspace.state_dir).close([("acme", "2026-10"), ("daily-co", "2026-11-02")])
    source = write_jsonl(
        tmp_path / "late.jsonl",
        [
            with_fields(id="late-month", start="2026-10-31T23:00:00Z", end="2026-11-01T01:00:00Z"),
            with_fields(id="on-time", start="2026-11-01T01:00:00Z", end="2026-11-01T02:00:00Z"),
            with_fields(
                id="late-day",
                org="daily-co",
                start="2026-11-02T05:00:00Z",
                end="2026-11-02T06:00:00Z",
            ),
        ],
    )
    summary = ingest(workspace, [source])
    assert (summary.accepted, summary.late) == (3, 2)
    assert {row[0]: row[4] for row in stored(workspace)} == {
        "late-day": True,
        "late-month": True,
        "on-time": False,
    }
    assert summary.late_path is not None
    assert "late-month" in summary.late_path.read_text()


def test_missing_file_and_unknown_format_are_errors(
    make_workspace: Callable[..., Workspace], tmp_path: Path
) -> None:
    workspace = make_workspace()
    with pytest.raises(IngestError, match="no such file"):
        ingest(workspace, [tmp_path / "absent.jsonl"])
    odd = tmp_path / "events.xml"
    odd.write_text("<events/>")
    with pytest.raises(IngestError, match="unknown format"):
        ingest(workspace, [odd])


def test_line_numbers_hold_on_a_large_file(
    make_workspace: Callable[..., Workspace], tmp_path: Path
) -> None:
    """Parallel reading must not shuffle line numbers: the bad line is found where it is."""
    workspace = make_workspace()
    records: list[dict[str, object] | str] = [with_fields(id=f"e{i}") for i in range(200_000)]
    records[150_123] = with_fields(id="bad", quantity="-3")
    summary = ingest(workspace, [write_jsonl(tmp_path / "big.jsonl", records)])
    [reject] = read_rejects(summary.rejects_path)
    assert (reject["line"], reject["record"]["id"]) == (150_124, "bad")


def test_the_largest_quantity_is_stored_exactly(
    make_workspace: Callable[..., Workspace], tmp_path: Path
) -> None:
    workspace = make_workspace()
    counter = with_fields(start=None, end=None, meter="egress", at="2026-11-03T23:59:59Z")
    largest = {**counter, "quantity": "999999999999.999999"}  # on an interval, beyond rating
    source = write_jsonl(tmp_path / "in.jsonl", [largest])
    assert ingest(workspace, [source]).accepted == 1
    assert stored(workspace)[0][3] == 999_999_999_999_999_999


# --- ids are each organization's own ----------------------------------------------------------


def two_organizations(make_workspace: Callable[..., Workspace]) -> Workspace:
    return make_workspace(customers=[customer("acme"), customer("globex")])


def test_the_same_id_under_two_organizations_is_two_events_both_rated(
    make_workspace: Callable[..., Workspace], tmp_path: Path
) -> None:
    """The idempotency key is (org, id): globex reusing acme's id is its own event, stored
    and rated for globex, in the same file, in another file of the run, or later."""
    workspace = two_organizations(make_workspace)
    source = write_jsonl(
        tmp_path / "in.jsonl", [GOOD, with_fields(org="globex", quantity="3"), GOOD]
    )
    summary = ingest(workspace, [source])
    assert (summary.accepted, summary.duplicates, summary.rejected) == (2, 1, 0)
    later = write_jsonl(tmp_path / "later.jsonl", [with_fields(org="globex", quantity="3")])
    assert ingest(workspace, [later]).duplicates == 1
    files = sorted(str(p) for p in workspace.usage_dir.glob("month=*/*.parquet"))
    rows = duckdb.sql(
        f"SELECT org, id, quantity_micro FROM read_parquet({files}, hive_partitioning = false) "
        "ORDER BY org"
    ).fetchall()
    assert rows == [("acme", "e1", 2_000_000), ("globex", "e1", 3_000_000)]
    rate_months(workspace, [Month(2026, 11)])
    totals = workspace.rated_dir / "month=2026-11" / "totals.parquet"
    rated = dict(
        duckdb.sql(
            f"SELECT org, sum(amount_atto) FROM read_parquet('{totals}') GROUP BY org"
        ).fetchall()
    )
    assert set(rated) == {"acme", "globex"}
    assert rated["globex"] * 2 == rated["acme"] * 3  # 3 vCPU-hours against 2, same price


def test_another_organizations_stored_id_is_no_conflict_and_no_hint(
    make_workspace: Callable[..., Workspace], tmp_path: Path
) -> None:
    """Against the store, too, only the same organization's id counts: globex sending an id
    acme already stored, with other content, is accepted; acme doing so is rejected."""
    workspace = two_organizations(make_workspace)
    ingest(workspace, [write_jsonl(tmp_path / "a.jsonl", [GOOD])])
    other = with_fields(end="2026-11-03T12:00:00Z")
    summary = ingest(
        workspace,
        [write_jsonl(tmp_path / "b.jsonl", [{**other, "org": "globex"}, other])],
    )
    assert (summary.accepted, summary.duplicates, summary.rejected) == (1, 0, 1)
    [reject] = read_rejects(summary.rejects_path)
    assert (reject["line"], reject["field"], reject["rule"]) == (
        2,
        "id",
        "id: conflicting duplicate",
    )
    assert (
        reject["reason"] == 'id: "e1" of organization acme is already stored with different content'
    )
    assert reject["record"]["org"] == "acme"


def test_a_conflict_in_another_file_of_the_run_names_that_file(
    make_workspace: Callable[..., Workspace], tmp_path: Path
) -> None:
    """file, line, field and why: a first copy in another file is named with its file."""
    workspace = make_workspace()
    first = write_jsonl(tmp_path / "first.jsonl", [with_fields(id="x"), GOOD])
    second = write_jsonl(tmp_path / "second.jsonl", [with_fields(quantity="5")])
    summary = ingest(workspace, [first, second])
    [reject] = read_rejects(summary.rejects_path)
    assert (reject["file"], reject["line"], reject["field"]) == (str(second.resolve()), 1, "id")
    assert reject["reason"] == (
        'id: "e1" of organization acme was first seen with different content at line 2 of '
        f"{first.resolve()}"
    )


@pytest.mark.parametrize(
    "hostile",
    [
        'evt "1" of organization globex',  # quotes and words that read like a reason
        "it's; DROP TABLE usage; --",
        "back\\slash",
        "\u0435vt-1",  # a Cyrillic е: looks like e1's "e", is another id
        "ｅ1",  # a fullwidth e: another id too (ids are matched whole, never folded)
        "e1 ",  # trailing space: trimmed, the same id as e1
    ],
)
def test_hostile_ids_are_keys_like_any_other(
    make_workspace: Callable[..., Workspace], tmp_path: Path, hostile: str
) -> None:
    """Quoting and look-alikes change nothing: an id is its exact text (spaces around it
    trimmed) within its organization, and a reason quotes it unambiguously (JSON)."""
    workspace = two_organizations(make_workspace)
    records = [GOOD, with_fields(id=hostile, quantity="7"), with_fields(id=hostile, org="globex"),
               with_fields(id=hostile, quantity="8")]  # fmt: skip
    summary = ingest(workspace, [write_jsonl(tmp_path / "in.jsonl", records)])
    rejects = read_rejects(summary.rejects_path)
    if hostile.strip() == "e1":  # the same key as GOOD's, with other content
        assert (summary.accepted, summary.rejected) == (2, 2)
        assert [r["line"] for r in rejects] == [2, 4]
        return
    assert (summary.accepted, summary.rejected) == (3, 1)
    [reject] = rejects
    assert (reject["line"], reject["field"], reject["record"]["id"]) == (4, "id", hostile)
    assert reject["reason"] == (
        f"id: {json.dumps(hostile, ensure_ascii=False)} of organization acme was first seen "
        "with different content at line 2"
    )


@pytest.mark.parametrize("frees_memory", [False, True], ids=["small", "large"])
def test_a_large_run_that_frees_its_tables_as_it_goes_says_and_stores_the_same(
    make_workspace: Callable[..., Workspace],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    frees_memory: bool,
) -> None:
    """A run over 64 MB of input lets its big tables go once used (so as not to spill);
    forced here on small files, every figure, reject and stored event is the same."""
    if frees_memory:
        monkeypatch.setattr("beanbill.rating.ingest.FREE_MEMORY_ABOVE_BYTES", 0)
    kept: list[str] = []
    keep_only = _Ingestion.keep_only

    def spy(run: _Ingestion, table: str, condition: str) -> None:
        kept.append(table)
        keep_only(run, table, condition)

    monkeypatch.setattr(_Ingestion, "keep_only", spy)
    workspace = make_workspace(customers=[customer("acme"), customer("daily-co", "daily")])
    ClosedPeriods(workspace.state_dir).close([("acme", "2026-10")])
    ingest(workspace, [write_jsonl(tmp_path / "stored.jsonl", [with_fields(id="kept")])])
    first = write_jsonl(
        tmp_path / "a.jsonl",
        [
            GOOD,
            with_fields(id="late", start="2026-10-31T23:00:00Z", end="2026-11-01T01:00:00Z"),
            '{"id": "broken", ',
            with_fields(id="bad", meter="gpu"),
            with_fields(quantity="3"),  # e1 again, other content: a conflict in the run
            with_fields(id="kept", quantity="5"),  # a conflict with the store
            GOOD,  # a duplicate
        ],
    )
    second = tmp_path / "b.csv"
    second.write_text(
        "id,org,resource,meter,start,end,quantity\n"
        "c1,acme,app-2,cpu,2026-11-04T10:00:00Z,2026-11-04T11:00:00Z,1\n"
        "e1,acme,app-1,cpu,2026-11-03T10:00:00Z,2026-11-03T11:00:00Z,7\n"
        "c2,nobody,app-2,cpu,2026-11-04T10:00:00Z,2026-11-04T11:00:00Z,1\n"
    )
    summary = ingest(workspace, [first, second])
    assert (summary.read, summary.accepted, summary.duplicates, summary.rejected) == (10, 3, 1, 6)
    assert summary.late == 1
    assert [tuple(counts) for counts in summary.by_file] == [(7, 2, 1, 1), (3, 1, 0, 0)]
    rejects = read_rejects(summary.rejects_path)
    assert [(Path(r["file"]).name, r["line"], r["field"]) for r in rejects] == [
        ("a.jsonl", 3, "record"),
        ("a.jsonl", 4, "meter"),
        ("a.jsonl", 5, "id"),
        ("a.jsonl", 6, "id"),
        ("b.csv", 3, "id"),
        ("b.csv", 4, "org"),
    ]
    assert rejects[0]["raw_text"] == '{"id": "broken", '
    assert rejects[3]["record"]["quantity"] == "5"  # the conflicting record, as sent
    assert [row[0] for row in stored(workspace)] == ["c1", "e1", "kept", "late"]
    assert kept == (["checked", "raw"] * 2 if frees_memory else [])  # both runs freed, or none

"""Input that used to be silently changed or let through: now kept exactly or rejected alone."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from beanbill.rating.errors import ConfigError
from beanbill.rating.ingest import ingest
from beanbill.rating.periods import Month
from beanbill.rating.rate import rate_months
from beanbill.rating.workspace import Workspace
from tests.support import customer, read_rejects, write_jsonl

COUNTER = {"org": "acme", "resource": "lb", "meter": "egress", "at": "2026-11-03T23:59:59Z"}
INTERVAL = {
    "org": "acme",
    "resource": "app-1",
    "meter": "cpu",
    "start": "2026-11-03T10:00:00Z",
    "end": "2026-11-03T13:00:00Z",
}


def stored(workspace: Workspace) -> dict[str, tuple[Any, ...]]:
    files = sorted(str(p) for p in workspace.usage_dir.glob("month=*/*.parquet"))
    if not files:
        return {}
    rows = duckdb.sql(
        f"SELECT id, resource, start_s, quantity_micro FROM read_parquet({files}, "
        "hive_partitioning = false)"
    ).fetchall()
    return {str(row[0]): row[1:] for row in rows}


def reasons(summary_path: Path | None) -> dict[int, str]:
    return {r["line"]: r["reason"] for r in read_rejects(summary_path)}


def test_json_numbers_are_read_as_written_never_through_a_float(
    make_workspace: Callable[..., Workspace], tmp_path: Path
) -> None:
    workspace = make_workspace()
    lines = [
        '{"id": "exact", "quantity": 123456789012.123456, ' + json.dumps(COUNTER)[1:],
        '{"id": "too-fine", "quantity": 1.00000000000000001, ' + json.dumps(COUNTER)[1:],
        '{"id": "exponent", "quantity": 1e2, ' + json.dumps(COUNTER)[1:],
        '{"id": "as-text", "quantity": "2.5", ' + json.dumps(COUNTER)[1:],
    ]
    summary = ingest(workspace, [write_jsonl(tmp_path / "numbers.jsonl", lines)])
    assert stored(workspace)["exact"][2] == 123_456_789_012_123_456
    assert stored(workspace)["as-text"][2] == 2_500_000
    found = reasons(summary.rejects_path)
    assert set(found) == {2, 3}
    assert "more than 6 decimal places" in found[2]
    assert "not a plain decimal number" in found[3]


@pytest.mark.parametrize(
    ("start", "accepted"),
    [
        ("2026-11-03T10:00:00+99:99", False),
        ("2026-11-03T10:00:00+24:00", False),
        ("2026-11-03T24:00:00Z", False),
        ("2026-11-03T10:60:00Z", False),
        ("2026-11-03T10:00:60Z", False),
        ("2026-11-03T10:00:00+14:00", True),
        ("2026-11-03T10:00:00-09:30", True),
    ],
)
def test_timestamps_outside_rfc_3339_are_refused(
    make_workspace: Callable[..., Workspace], tmp_path: Path, start: str, accepted: bool
) -> None:
    workspace = make_workspace()
    event = {**INTERVAL, "id": "e1", "start": start, "end": "2026-11-04T10:00:00Z"}
    summary = ingest(workspace, [write_jsonl(tmp_path / "t.jsonl", [event])])
    assert summary.accepted == int(accepted), read_rejects(summary.rejects_path)


def test_a_doubled_quote_in_csv_is_one_quote_and_the_same_event_counts_once(
    make_workspace: Callable[..., Workspace], tmp_path: Path
) -> None:
    workspace = make_workspace()
    csv_path = tmp_path / "quoted.csv"
    csv_path.write_text(
        'id,org,resource,meter,at,quantity\n"evt-""q""-1",acme,"lb ""north""",egress,'
        "2026-11-03T23:59:59Z,12.5\n"
    )
    jsonl = write_jsonl(
        tmp_path / "same.jsonl",
        [{**COUNTER, "id": 'evt-"q"-1', "resource": 'lb "north"', "quantity": "12.5"}],
    )
    parquet_path = tmp_path / "same.parquet"
    record = {**COUNTER, "id": 'evt-"q"-1', "resource": 'lb "north"', "quantity": "12.50"}
    pq.write_table(pa.table({key: [value] for key, value in record.items()}), parquet_path)
    summary = ingest(workspace, [csv_path, jsonl, parquet_path])
    assert (summary.accepted, summary.duplicates, summary.rejected) == (1, 2, 0)
    assert stored(workspace) == {'evt-"q"-1': ('lb "north"', 1_793_750_399, 12_500_000)}


def test_a_ragged_row_far_down_a_csv_is_rejected_alone(
    make_workspace: Callable[..., Workspace], tmp_path: Path
) -> None:
    workspace = make_workspace()
    rows = ["id,org,resource,meter,at,quantity"]
    rows += [f"c{index},acme,lb,egress,2026-11-03T23:59:59Z,1" for index in range(30_000)]
    rows[25_001] = "ragged,acme,lb,egress,2026-11-03T23:59:59Z,1,surplus"
    path = tmp_path / "long.csv"
    path.write_text("\n".join(rows) + "\n")
    summary = ingest(workspace, [path])
    assert (summary.accepted, summary.rejected) == (29_999, 1)
    [reject] = read_rejects(summary.rejects_path)
    assert reject["line"] == 25_002 and "more fields than the header" in reject["reason"]
    assert reject["raw_text"].startswith("ragged,")


def test_a_line_that_is_not_utf8_is_rejected_alone_with_its_number(
    make_workspace: Callable[..., Workspace], tmp_path: Path
) -> None:
    workspace = make_workspace()
    good = [json.dumps({**COUNTER, "id": f"g{index}", "quantity": "1"}) for index in range(5)]
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(
        "\n".join(good[:2]).encode()
        + b'\n{"id": "bad", "org": "acme\xff\xfe"}\n'
        + "\n".join(good[2:]).encode()
        + b"\n"
    )
    summary = ingest(workspace, [path])
    assert (summary.accepted, summary.rejected) == (5, 1)
    assert reasons(summary.rejects_path) == {3: "record: not UTF-8 text"}
    assert sorted(stored(workspace)) == [f"g{index}" for index in range(5)]


def test_characters_an_invoice_cannot_carry_are_refused_at_ingest(
    make_workspace: Callable[..., Workspace], tmp_path: Path
) -> None:
    workspace = make_workspace()
    events = [
        {**INTERVAL, "id": "nonchar", "resource": "app-\uffff"},
        {**INTERVAL, "id": "plane-1", "resource": "app-\U0001fffe"},
        {**INTERVAL, "id": "fine", "resource": "app-é-😀"},
    ]
    summary = ingest(workspace, [write_jsonl(tmp_path / "chars.jsonl", events)])
    assert sorted(stored(workspace)) == ["fine"]
    assert set(reasons(summary.rejects_path)) == {1, 2}


def test_one_oversized_event_is_rejected_and_the_month_still_rates(
    make_workspace: Callable[..., Workspace], tmp_path: Path
) -> None:
    workspace = make_workspace()
    events = [
        {**INTERVAL, "id": "huge", "quantity": "999999999999"},
        {**INTERVAL, "id": "normal", "quantity": "2"},
    ]
    summary = ingest(workspace, [write_jsonl(tmp_path / "big.jsonl", events)])
    assert "unit-seconds in one event" in reasons(summary.rejects_path)[1]
    [rated] = rate_months(workspace, [Month(2026, 11)])
    assert rated.line_count >= 1


def test_an_id_with_a_trailing_newline_is_refused_by_check(
    make_workspace: Callable[..., Workspace],
) -> None:
    with pytest.raises(ConfigError, match="not a valid id"):
        make_workspace(customers=[customer("acme\n")])


def test_names_are_bounded_at_check(make_workspace: Callable[..., Workspace]) -> None:
    with pytest.raises(ConfigError, match="990 characters long; at most 200"):
        make_workspace(customers=[{**customer("acme"), "name": "N" * 990}])


def test_several_json_lines_files_read_together_keep_each_files_line_numbers(
    make_workspace: Callable[..., Workspace], tmp_path: Path
) -> None:
    """JSON Lines files are read by one statement; every reject and every stored event
    still names its own file and line, refused lines (bad UTF-8, U+001F) included."""
    workspace = make_workspace()

    def line(identifier: str, quantity: str = "1") -> bytes:
        return json.dumps({"id": identifier, **COUNTER, "quantity": quantity}).encode()

    a = tmp_path / "a.jsonl"
    a.write_bytes(line("e1") + b"\n\n{not json\n" + line("e2") + b"\n")
    b = tmp_path / "b.jsonl"
    b.write_bytes(
        line("e3") + b'\n{"id": "\xff"}\n' + line("e4") + b'\n{"id": "x\x1fy"}\n' + line("e5")
    )  # no newline at the end
    empty = tmp_path / "c.jsonl"
    empty.write_bytes(b"")
    d = tmp_path / "d.jsonl"
    d.write_bytes(line("e6") + b"\n" + line("e1", "2") + b"\n")
    summary = ingest(workspace, [a, b, empty, d])
    rejects = {
        (Path(r["file"]).name, r["line"]): r["reason"] for r in read_rejects(summary.rejects_path)
    }
    assert set(rejects) == {("a.jsonl", 3), ("b.jsonl", 2), ("b.jsonl", 4), ("d.jsonl", 2)}
    assert rejects[("a.jsonl", 3)] == "malformed JSON"
    assert rejects[("b.jsonl", 2)] == "record: not UTF-8 text"
    assert "U+001F" in rejects[("b.jsonl", 4)]
    assert rejects[("d.jsonl", 2)].endswith(f"first seen with different content at line 1 of {a}")
    assert [counts.read for counts in summary.by_file] == [3, 5, 0, 2]
    assert [counts.accepted for counts in summary.by_file] == [2, 3, 0, 1]
    files = sorted(str(p) for p in workspace.usage_dir.glob("month=*/*.parquet"))
    where = duckdb.sql(
        f"SELECT id, source_file, source_line FROM read_parquet({files}) ORDER BY id"
    ).fetchall()
    assert [(i, Path(f).name, n) for i, f, n in where] == [
        ("e1", "a.jsonl", 1), ("e2", "a.jsonl", 4), ("e3", "b.jsonl", 1),
        ("e4", "b.jsonl", 3), ("e5", "b.jsonl", 5), ("e6", "d.jsonl", 1),
    ]  # fmt: skip

"""One event, whatever format it comes in: JSON Lines, RFC 4180 CSV and Parquet agree.

Also what ingest does with input the contract leaves open (extra fields, lower-case
``t``/``z``, ``24:00``, fractions of a second, the 12 integer digits of a quantity) and with
events whose meter has no price in force yet.
"""

from __future__ import annotations

import copy
import csv
import json
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from beanbill.examples import SETTINGS
from beanbill.rating.characters import REFUSED_CHARACTERS
from beanbill.rating.ingest import FIELDS, IngestSummary, ingest
from beanbill.rating.workspace import Workspace
from tests.support import SMALL_CATALOG, customer, read_rejects, write_jsonl, write_workspace

STORED_COLUMNS = (
    "id, org, resource, meter, kind, start_s, end_s, quantity_micro, content_hash, late"
)
COUNTER = {"org": "acme", "resource": "lb", "meter": "egress", "at": "2026-11-03T23:59:59Z"}
INTERVAL = {
    "org": "acme",
    "resource": "app-1",
    "meter": "cpu",
    "start": "2026-11-03T10:00:00Z",
    "end": "2026-11-03T11:00:00Z",
}


def stored(workspace: Workspace) -> list[tuple[Any, ...]]:
    files = sorted(str(p) for p in workspace.usage_dir.glob("month=*/*.parquet"))
    if not files:
        return []
    with duckdb.connect() as connection:
        return connection.execute(
            f"SELECT {STORED_COLUMNS} FROM read_parquet({files}, hive_partitioning = false) "
            "ORDER BY id"
        ).fetchall()


def stored_by_id(workspace: Workspace) -> dict[str, tuple[Any, ...]]:
    """id → (resource, start_s, end_s, quantity_micro)."""
    return {row[0]: (row[2], row[5], row[6], row[7]) for row in stored(workspace)}


def reasons(summary: IngestSummary) -> dict[int, str]:
    return {reject["line"]: reject["reason"] for reject in read_rejects(summary.rejects_path)}


def fresh_workspace(root: Path, timezone_name: str = "UTC") -> Workspace:
    settings_ = copy.deepcopy(SETTINGS)
    settings_["billing"]["timezone"] = timezone_name
    return write_workspace(root, settings_, SMALL_CATALOG, [customer("acme")])


# --- writers: one list of events, four files ------------------------------------------------


def write_events_jsonl(path: Path, events: list[dict[str, Any]], bare: list[bool]) -> Path:
    """JSON Lines; a quantity flagged ``bare`` is written as a JSON number, not a string."""
    lines = []
    for event, bare_number in zip(events, bare, strict=True):
        fields = {key: value for key, value in event.items() if value is not None}
        if bare_number and "quantity" in fields:
            quantity = fields.pop("quantity")
            lines.append(json.dumps(fields)[:-1] + f', "quantity": {quantity}}}')
        else:
            lines.append(json.dumps(fields, ensure_ascii=bare_number))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_events_csv(path: Path, events: list[dict[str, Any]], quote_all: bool) -> Path:
    """RFC 4180 as Python's csv module writes it (CRLF line ends, doubled quotes), quoting
    every field or only those that need it."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, quoting=csv.QUOTE_ALL if quote_all else csv.QUOTE_MINIMAL)
        writer.writerow(FIELDS)
        for event in events:
            writer.writerow([event.get(name) for name in FIELDS])
    return path


def write_events_parquet(path: Path, events: list[dict[str, Any]]) -> Path:
    columns = {
        name: pa.array([event.get(name) for event in events], pa.string()) for name in FIELDS
    }
    pq.write_table(pa.table(columns), path)
    return path


# --- the property ------------------------------------------------------------------------------

# Characters that CSV, JSON and SQL treat specially, beside any letter, digit, punctuation,
# symbol or space separator the refused set lets through.
SPECIAL = [*"\"',;| \\#=+-@{}[]:", "é", "ß", "€", "日", "😀", "\u00a0"]
CHARACTER = st.one_of(
    st.sampled_from(SPECIAL),
    st.characters(categories=("L", "N", "P", "S", "Zs")),
).filter(lambda character: not REFUSED_CHARACTERS.search(character))


def _kept(text: str) -> bool:
    return text.strip() != ""  # as DuckDB trims: spaces of every width


IDS = st.text(CHARACTER, min_size=1, max_size=24).filter(_kept)
RESOURCES = st.text(CHARACTER, min_size=1, max_size=40).filter(_kept)
FIRST = int(datetime(2026, 1, 1, tzinfo=UTC).timestamp())
LAST = int(datetime(2099, 1, 1, tzinfo=UTC).timestamp())


def rfc3339(epoch: int, offset_minutes: int, fraction: str, separator: str) -> str:
    zone = timezone(timedelta(minutes=offset_minutes))
    text = datetime.fromtimestamp(epoch, tz=zone).strftime(f"%Y-%m-%d{separator}%H:%M:%S")
    text += f".{fraction}" if fraction else ""
    if offset_minutes == 0:
        return text + "Z"
    sign = "+" if offset_minutes > 0 else "-"
    hours, minutes = divmod(abs(offset_minutes), 60)
    return f"{text}{sign}{hours:02d}:{minutes:02d}"


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any]:
    """One valid event (interval or counter) and what must be stored for it."""
    start = draw(st.integers(FIRST, LAST))
    duration = draw(st.integers(0, 86_400))
    quantity = draw(st.decimals(0, 999_999, places=draw(st.integers(0, 6))))

    def timestamp(epoch: int) -> str:
        return rfc3339(
            epoch,
            draw(st.integers(-(23 * 60 + 59), 23 * 60 + 59)),
            draw(st.sampled_from(["", "0", "5", "999999", "123456789", "9999999999"])),
            draw(st.sampled_from(["T", "t", " "])),
        )

    interval = draw(st.booleans())
    event: dict[str, Any] = {"id": draw(IDS), "org": "acme", "resource": draw(RESOURCES)}
    if interval:
        event |= {"meter": "cpu", "start": timestamp(start), "end": timestamp(start + duration)}
    else:
        event |= {"meter": "egress", "at": timestamp(start)}
    event["quantity"] = None if interval and draw(st.booleans()) else str(quantity)
    expected = (
        event["resource"],
        start,
        start + duration if interval else start,
        int(Decimal(event["quantity"] or 1) * 1_000_000),
    )
    return {"event": event, "expected": expected}


@settings(max_examples=20, deadline=None)
@given(
    drawn=st.lists(events(), min_size=1, max_size=4, unique_by=lambda e: e["event"]["id"].strip()),
    bare=st.lists(st.booleans(), min_size=4, max_size=4),
)
def test_any_event_is_stored_alike_from_jsonl_csv_and_parquet_and_counts_once(
    drawn: list[dict[str, Any]], bare: list[bool]
) -> None:
    records = [item["event"] for item in drawn]
    expected = {item["event"]["id"].strip(): item["expected"] for item in drawn}
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        files = [
            write_events_jsonl(root / "events.jsonl", records, bare[: len(records)]),
            write_events_csv(root / "minimal.csv", records, quote_all=False),
            write_events_csv(root / "all.csv", records, quote_all=True),
            write_events_parquet(root / "events.parquet", records),
        ]
        rows = []
        for index, path in enumerate(files):
            workspace = fresh_workspace(root / f"ws-{index}")
            summary = ingest(workspace, [path])
            assert (summary.accepted, summary.rejected) == (len(records), 0), (
                path.name,
                read_rejects(summary.rejects_path) if summary.rejects_path else None,
            )
            assert stored_by_id(workspace) == expected, path.name
            rows.append(stored(workspace))
        assert rows[1:] == rows[:1] * 3

        together = fresh_workspace(root / "ws-together")
        summary = ingest(together, files)
        assert (summary.accepted, summary.duplicates, summary.rejected) == (
            len(records),
            3 * len(records),
            0,
        )
        assert stored(together) == rows[0]


def test_a_doubled_quote_in_csv_is_the_quote_of_the_same_event_in_jsonl(
    make_workspace: Callable[..., Workspace], tmp_path: Path
) -> None:
    workspace = make_workspace()
    csv_path = tmp_path / "quoted.csv"
    csv_path.write_text(
        'id,org,resource,meter,at,quantity\n"evt-""q""-1",acme,lb,egress,2026-11-03T23:59:59Z,1\n'
    )
    jsonl = write_jsonl(tmp_path / "same.jsonl", [{**COUNTER, "id": 'evt-"q"-1', "quantity": "1"}])
    summary = ingest(workspace, [csv_path, jsonl])
    assert (summary.accepted, summary.duplicates, summary.rejected) == (1, 1, 0)
    assert list(stored_by_id(workspace)) == ['evt-"q"-1']


def test_csv_dialect_is_not_guessed_from_the_data(
    make_workspace: Callable[..., Workspace], tmp_path: Path
) -> None:
    """Semicolons, pipes and '#' in every row are data: the delimiter is the comma, and
    no line is a comment."""
    workspace = make_workspace()
    rows = [f"#{i};a|b;c,acme,lb;x|y,egress,2026-11-03T23:59:59Z,1" for i in range(30)]
    path = tmp_path / "odd.csv"
    path.write_text("id,org,resource,meter,at,quantity\n" + "\n".join(rows) + "\n")
    summary = ingest(workspace, [path])
    assert (summary.accepted, summary.rejected) == (30, 0)
    assert stored_by_id(workspace)["#0;a|b;c"][0] == "lb;x|y"


# --- defect: events no price is in force for are rejected at ingest ---------------------------


def test_an_event_before_the_meters_first_price_is_rejected_with_its_line_and_reason(
    make_workspace: Callable[..., Workspace], tmp_path: Path
) -> None:
    """The catalog's prices take effect on 2026-01-01, local midnight in Paris (23:00 UTC)."""
    workspace = make_workspace(timezone="Europe/Paris")
    new_year = "2026-01-01T05:00:00Z"
    jsonl = write_jsonl(
        tmp_path / "events.jsonl",
        [
            {**INTERVAL, "id": "priced", "start": "2025-12-31T23:00:00Z", "end": new_year},
            {**INTERVAL, "id": "unpriced", "start": "2025-12-31T22:59:59Z", "end": new_year},
        ],
    )
    csv_path = tmp_path / "events.csv"
    csv_path.write_text(
        "id,org,resource,meter,at,quantity\n"
        "early,acme,lb,egress,2024-07-01T22:30:00Z,1\n"
        "on-time,acme,lb,egress,2026-01-01T00:00:00+01:00,1\n"
    )
    summary = ingest(workspace, [jsonl, csv_path])
    assert (summary.accepted, summary.rejected) == (2, 2)
    assert summary.reasons == (("meter: no price in force", 2),)
    rejects = read_rejects(summary.rejects_path)
    found = {(r["file"], r["line"], r["field"], r["record"]["id"], r["reason"]) for r in rejects}
    assert found == {
        (
            str(jsonl),
            2,
            "meter",
            "unpriced",
            "meter: no price in force for meter cpu on 2025-12-31 "
            "(its first price is effective 2026-01-01)",
        ),
        (
            str(csv_path),
            2,
            "meter",
            "early",
            # 22:30 UTC on July 1 is 00:30 on July 2 in Paris
            "meter: no price in force for meter egress on 2024-07-02 "
            "(its first price is effective 2026-01-01)",
        ),
    }
    assert sorted(stored_by_id(workspace)) == ["on-time", "priced"]


# --- what the contract leaves open, as it is ----------------------------------------------------


def test_extra_fields_are_accepted_and_ignored_in_every_format(
    make_workspace: Callable[..., Workspace], tmp_path: Path
) -> None:
    workspace = make_workspace()
    jsonl = write_jsonl(
        tmp_path / "extra.jsonl",
        [{**COUNTER, "id": "j", "quantity": "2", "note": "hi", "tags": {"team": "a"}}],
    )
    csv_path = tmp_path / "extra.csv"
    csv_path.write_text(
        "id,org,resource,meter,at,quantity,note\nc,acme,lb,egress,2026-11-03T23:59:59Z,2,hi\n"
    )
    parquet = write_events_parquet(
        tmp_path / "extra.parquet", [{**COUNTER, "id": "p", "quantity": "1"}]
    )
    pq.write_table(
        pq.read_table(parquet).append_column("note", pa.array(["hi"])), parquet
    )  # an extra column
    summary = ingest(workspace, [jsonl, csv_path, parquet])
    assert (summary.accepted, summary.rejected) == (3, 0)
    assert {key: row[3] for key, row in stored_by_id(workspace).items()} == {
        "j": 2_000_000,
        "c": 2_000_000,
        "p": 1_000_000,
    }


def test_a_field_named_like_the_contract_but_for_its_case_is_refused_not_ignored(
    make_workspace: Callable[..., Workspace], tmp_path: Path
) -> None:
    """ "Quantity" is a typo of "quantity": ignored, the interval would bill at 1; refused,
    with its line, in every format, while the good records beside it are stored."""
    workspace = make_workspace()
    good = {**INTERVAL, "id": "good", "quantity": "4"}
    jsonl = write_jsonl(
        tmp_path / "case.jsonl",
        [good, {**INTERVAL, "id": "typo", "Quantity": "4"}, {**INTERVAL, "id": "n",
         "tags": {"Quantity": "4"}}],  # nested: an extra field's own business
    )  # fmt: skip
    csv_path = tmp_path / "case.csv"
    csv_path.write_text(
        "ID,org,resource,meter,start,end,quantity\n"
        "c1,acme,app-1,cpu,2026-11-03T10:00:00Z,2026-11-03T11:00:00Z,4\n"
    )
    parquet = write_events_parquet(tmp_path / "case.parquet", [{**good, "id": "p"}])
    pq.write_table(pq.read_table(parquet).rename_columns(
        [("Meter" if name == "meter" else name) for name in pq.read_table(parquet).column_names]
    ), parquet)  # fmt: skip
    summary = ingest(workspace, [jsonl, csv_path, parquet])
    assert (summary.accepted, summary.rejected) == (2, 3)
    assert sorted(stored_by_id(workspace)) == ["good", "n"]
    rejects = read_rejects(summary.rejects_path)
    assert sorted((Path(r["file"]).name, r["line"]) for r in rejects) == [
        ("case.csv", 2),
        ("case.jsonl", 2),
        ("case.parquet", 1),
    ]
    assert {r["reason"] for r in rejects} == {
        "fields: a name differs from a contract name only in case"
    }


def test_a_quantity_nested_in_an_extra_field_is_not_the_events_quantity(
    make_workspace: Callable[..., Workspace], tmp_path: Path
) -> None:
    workspace = make_workspace()
    counter = json.dumps({**COUNTER, "id": "c"})[1:-1]
    interval = json.dumps({**INTERVAL, "id": "i"})[1:-1]
    lines = [
        '{"meta": {"quantity": 7}, "quantity": 2, ' + counter + "}",  # the event's own: 2
        '{"meta": {"quantity": 7}, ' + interval + "}",  # none: an interval's default, 1
        '{"meta": {"quantity": 7}, ' + counter.replace('"c"', '"none"') + "}",  # none: missing
        '{"quantity": 2, "quantity": 2.0, ' + counter.replace('"c"', '"twice"') + "}",
        # The key in escapes: its number is still read as written, not as a double
        # (123456789012.000001 would be 123456789012.0).
        '{"quantit\\u0079": 123456789012.000001, ' + counter.replace('"c"', '"esc"') + "}",
        '{"meta": {"quantity": 3}, "\\u0071uantity": 3, ' + counter.replace('"c"', '"esc2"') + "}",
    ]
    summary = ingest(workspace, [write_jsonl(tmp_path / "nested.jsonl", lines)])
    assert {key: row[3] for key, row in stored_by_id(workspace).items()} == {
        "c": 2_000_000,
        "i": 1_000_000,
        "esc": 123_456_789_012_000_001,
        "esc2": 3_000_000,
    }
    assert reasons(summary) == {
        3: "quantity: missing",
        4: "quantity: written more than once in the line, with different spellings",
    }


@pytest.mark.parametrize(
    ("start", "stored_start"),
    [
        ("2026-11-03T10:00:00Z", 1_793_700_000),
        ("2026-11-03t10:00:00z", 1_793_700_000),  # RFC 3339 5.6: "t" and "z" may be lower case
        ("2026-11-03 10:00:00Z", 1_793_700_000),  # a space for the "T" (RFC 3339 5.6's note)
        ("2026-11-03T10:00:00.999999999Z", 1_793_700_000),  # cut, never rounded
        ("2026-11-03T10:00:00.12345678901234567890Z", 1_793_700_000),  # any number of digits
        ("2026-11-03T11:00:00.5+01:00", 1_793_700_000),
        ("2026-11-03T24:00:00Z", None),  # hours are 00-23: write 2026-11-04T00:00:00Z
        ("2026-11-03T10:00:60Z", None),  # no leap seconds
        ("2026-11-03T10:00Z", None),  # seconds are required
        ("2026-11-03T10:00:00+0100", None),  # the offset has a colon
        ("2026-11-03T10:00:00", None),  # and is required
    ],
)
def test_timestamps(
    make_workspace: Callable[..., Workspace], tmp_path: Path, start: str, stored_start: int | None
) -> None:
    workspace = make_workspace()
    event = {**INTERVAL, "id": "e", "start": start, "end": "2026-11-03T12:00:00Z"}
    summary = ingest(workspace, [write_jsonl(tmp_path / "t.jsonl", [event])])
    if stored_start is None:
        assert summary.accepted == 0
        assert reasons(summary)[1].startswith("start: ")
    else:
        assert stored_by_id(workspace)["e"][1] == stored_start


def test_sub_second_parts_are_cut_so_back_to_back_events_add_up(
    make_workspace: Callable[..., Workspace], tmp_path: Path
) -> None:
    workspace = make_workspace()
    day = "2026-11-03T10:00:"
    events_ = [
        {**INTERVAL, "id": "short", "start": f"{day}00.1Z", "end": f"{day}00.9Z"},
        {**INTERVAL, "id": "a", "start": f"{day}00.9Z", "end": f"{day}01.1Z"},
        {**INTERVAL, "id": "b", "start": f"{day}01.1Z", "end": f"{day}02.5Z"},
    ]
    summary = ingest(workspace, [write_jsonl(tmp_path / "s.jsonl", events_)])
    assert summary.accepted == 3
    seconds = {key: row[2] - row[1] for key, row in stored_by_id(workspace).items()}
    # 0.8 s within one second bills 0 s; 0.2 s across a second boundary bills 1 s;
    # the two back-to-back events bill 1 + 1 = 2 s, the whole seconds from :00 to :02.
    assert seconds == {"short": 0, "a": 1, "b": 1}


@pytest.mark.parametrize(
    ("quantity", "stored_micro"),
    [
        ("999999999999.999999", 999_999_999_999_999_999),  # 12 integer digits, 6 decimals
        ("0999999999999", 999_999_999_999_000_000),  # leading zeros are not digits of the value
        ("-0", 0),
        ("1000000000000", None),  # 13 integer digits: "quantity: too large"
        ("1.0000000", None),  # 7 decimal places
        ("1e3", None),  # not a plain decimal
    ],
)
def test_quantity_digits(
    make_workspace: Callable[..., Workspace],
    tmp_path: Path,
    quantity: str,
    stored_micro: int | None,
) -> None:
    """The same as a JSON number (when JSON has one: not with a leading zero) and as text."""
    workspace = make_workspace()
    records: list[dict[str, Any] | str] = [{**COUNTER, "id": "t", "quantity": quantity}]
    if quantity.lstrip("-")[:2] != "09":
        records.append('{"id": "n", "quantity": ' + quantity + ", " + json.dumps(COUNTER)[1:])
    summary = ingest(workspace, [write_jsonl(tmp_path / "q.jsonl", records)])
    found = {key: row[3] for key, row in stored_by_id(workspace).items()}
    if stored_micro is None:
        assert found == {}
        assert len(reasons(summary)) == len(records)
        assert all(reason.startswith("quantity: ") for reason in reasons(summary).values())
    else:
        assert found == {key: stored_micro for key in ("t", "n")[: len(records)]}

"""Rating through the workspace: output files, determinism, and clear errors."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import duckdb
import pytest
import tomli_w

from beanbill.rating.errors import RatingError
from beanbill.rating.ingest import ingest
from beanbill.rating.money import AMOUNT_SCALE, QUANTITY_SCALE, from_scaled_integer
from beanbill.rating.periods import Month
from beanbill.rating.rate import rate_months
from beanbill.rating.workspace import CATALOG_FILE, CUSTOMERS_FILE, Workspace
from tests.reference import Event, rate_reference
from tests.support import SMALL_CATALOG, customer, rated_demo, write_jsonl


def interval(event_id: str, org: str, start: str, end: str, quantity: str = "1") -> dict[str, str]:
    return {
        "id": event_id,
        "org": org,
        "resource": "app",
        "meter": "cpu",
        "start": start,
        "end": end,
        "quantity": quantity,
    }


def per_second_catalog() -> dict[str, Any]:
    """The tests' small catalog with its vCPU priced per vCPU-second, as written there."""
    catalog = copy.deepcopy(SMALL_CATALOG)
    catalog["meter"][0]["per"] = "second"
    return catalog


def lines_of(workspace: Workspace, month: str) -> list[dict[str, object]]:
    path = workspace.rated_dir / f"month={month}" / "lines.parquet"
    return duckdb.sql(f"SELECT * FROM read_parquet('{path}')").arrow().read_all().to_pylist()


def test_weekly_period_that_starts_in_a_month_is_rated_whole(
    make_workspace: Callable[..., Workspace], tmp_path: Path
) -> None:
    """Week 2026-W44 runs Mon 26 Oct - Sun 1 Nov: it belongs to October's run, all 7 days."""
    workspace = make_workspace(
        catalog=per_second_catalog(), customers=[customer("weekly", "weekly")]
    )
    source = write_jsonl(
        tmp_path / "u.jsonl",
        [
            interval("a", "weekly", "2026-10-31T23:00:00Z", "2026-11-01T01:00:00Z", "2"),
            interval("b", "weekly", "2026-11-02T00:00:00Z", "2026-11-02T00:00:10Z"),
        ],
    )
    ingest(workspace, [source])
    rate_months(workspace, [Month(2026, 10), Month(2026, 11)])
    october = lines_of(workspace, "2026-10")
    assert [(row["period"], row["day"], row["line_seconds"]) for row in october] == [
        ("2026-W44", date(2026, 10, 31), 3600),
        ("2026-W44", date(2026, 11, 1), 3600),
    ]
    assert sum(int(row["amount_atto"]) for row in october) == 2 * 7200 * 6_944_400 * 10**6
    november = lines_of(workspace, "2026-11")
    assert [(row["period"], row["line_seconds"]) for row in november] == [("2026-W45", 10)]


def test_rating_twice_writes_identical_bytes(
    make_workspace: Callable[..., Workspace], tmp_path: Path
) -> None:
    workspace = make_workspace()
    ingest(
        workspace,
        [
            write_jsonl(
                tmp_path / "u.jsonl",
                [interval("a", "acme", "2026-11-01T10:00:00Z", "2026-11-02T10:00:00Z")],
            )
        ],
    )
    rate_months(workspace, [Month(2026, 11)])
    folder = workspace.rated_dir / "month=2026-11"
    first = {p.name: p.read_bytes() for p in folder.iterdir()}
    rate_months(workspace, [Month(2026, 11)])
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == first
    assert sorted(first) == ["lines.parquet", "totals.parquet"]


def test_an_add_on_subscribed_several_times_in_a_period_rates_to_the_same_bytes(
    make_workspace: Callable[..., Workspace],
) -> None:
    """Three subscriptions of one add-on touch October: three lines, which used to share
    their sort key (organization, day, add-on, add-on, band 0) and so came out in any
    order (2 outputs in 15 ratings, measured). They are ordered by the seconds each covers."""
    subscriptions = [
        {"addon": "backup", "start": date(2026, 10, 1), "end": date(2026, 10, 10)},
        {"addon": "backup", "start": date(2026, 10, 20)},
        {"addon": "backup", "start": date(2026, 10, 5), "end": date(2026, 10, 6)},
    ]
    workspace = make_workspace(
        customers=[customer(f"org-{index:02d}", addons=subscriptions) for index in range(40)]
    )
    outputs = set()
    for _ in range(4):
        rate_months(workspace, [Month(2026, 10)])
        outputs.add((workspace.rated_dir / "month=2026-10" / "lines.parquet").read_bytes())
    assert len(outputs) == 1
    lines = lines_of(workspace, "2026-10")
    assert len(lines) == 40 * 3
    day_seconds = 86_400
    for index in range(40):
        seconds = [line["line_seconds"] for line in lines if line["org"] == f"org-{index:02d}"]
        assert seconds == [2 * day_seconds, 10 * day_seconds, 12 * day_seconds]


def test_usage_of_a_removed_customer_is_an_error_not_a_silent_drop(
    make_workspace: Callable[..., Workspace], tmp_path: Path
) -> None:
    workspace = make_workspace(customers=[customer("acme"), customer("gone")])
    ingest(
        workspace,
        [
            write_jsonl(
                tmp_path / "u.jsonl",
                [interval("a", "gone", "2026-11-01T10:00:00Z", "2026-11-01T11:00:00Z")],
            )
        ],
    )
    text = (workspace.root / CUSTOMERS_FILE).read_text()
    (workspace.root / CUSTOMERS_FILE).write_text(text[: text.index('[[customer]]\nid = "gone"')])
    with pytest.raises(RatingError, match="'gone' has usage but is no longer a customer"):
        rate_months(Workspace.load(workspace.root), [Month(2026, 11)])


def test_usage_before_the_first_price_is_an_error(
    make_workspace: Callable[..., Workspace], tmp_path: Path
) -> None:
    """Ingest refuses such events; rating still refuses usage stored before the catalog
    moved its first price later (the safety net behind ingest)."""
    workspace = make_workspace()
    ingest(
        workspace,
        [
            write_jsonl(
                tmp_path / "u.jsonl",
                [interval("a", "acme", "2026-11-05T10:00:00Z", "2026-11-05T11:00:00Z")],
            )
        ],
    )
    catalog = copy.deepcopy(SMALL_CATALOG)
    catalog["meter"][0]["price"][0]["effective"] = date(2026, 11, 10)
    (workspace.root / CATALOG_FILE).write_text(tomli_w.dumps(catalog))
    workspace = Workspace.load(workspace.root)
    with pytest.raises(RatingError, match="'cpu' has usage on 2026-11-05 but no price in force"):
        rate_months(workspace, [Month(2026, 11)])


def test_usage_beyond_exact_range_stops_instead_of_rounding(
    make_workspace: Callable[..., Workspace], tmp_path: Path
) -> None:
    workspace = make_workspace()
    # Each event is within what ingest accepts; their sum for a tiered meter's period is not.
    huge = [
        {"id": f"e{day}", "org": "acme", "resource": "lb", "meter": "egress",
         "at": f"2026-11-{day:02d}T12:00:00Z", "quantity": "999999999999"}
        for day in range(1, 11)
    ]  # fmt: skip
    assert ingest(workspace, [write_jsonl(tmp_path / "u.jsonl", huge)]).accepted == 10
    with pytest.raises(RatingError, match="exceeds the int64 range"):
        rate_months(workspace, [Month(2026, 11)])
    assert not (workspace.rated_dir / "month=2026-11" / "lines.parquet").exists()


def test_totals_reconcile_with_lines_to_the_last_digit(
    make_workspace: Callable[..., Workspace], tmp_path: Path
) -> None:
    workspace = make_workspace(
        customers=[customer("acme", addons=[{"addon": "backup", "start": date(2026, 1, 1)}])]
    )
    records = [
        interval(
            f"e{i}",
            "acme",
            "2026-11-01T10:00:00Z",
            f"2026-11-{2 + i % 20:02d}T10:00:07Z",
            "0.333333",
        )
        for i in range(30)
    ]
    records.append(
        {
            "id": "x",
            "org": "acme",
            "resource": "lb",
            "meter": "egress",
            "at": "2026-11-03T00:00:00Z",
            "quantity": "1234.5",
        }
    )
    ingest(workspace, [write_jsonl(tmp_path / "u.jsonl", records)])
    rate_months(workspace, [Month(2026, 11)])
    folder = workspace.rated_dir / "month=2026-11"
    by_family = dict(
        duckdb.sql(
            f"SELECT family, sum(amount_atto) FROM '{folder}/lines.parquet' GROUP BY family"
        ).fetchall()
    )
    totals = dict(
        duckdb.sql(f"SELECT family, amount_atto FROM '{folder}/totals.parquet'").fetchall()
    )
    assert by_family == totals
    assert totals["Addons"] == Decimal("9.90") * 10**AMOUNT_SCALE
    # egress: 100 GB free, 900 GB at 0.01, 234.5 GB at 0.008
    assert (
        totals["Network"]
        == (900 * Decimal("0.01") + Decimal("234.5") * Decimal("0.008")) * 10**AMOUNT_SCALE
    )


def test_demo_month_matches_the_reference_rater(tmp_path: Path) -> None:
    """The whole demo (tiers, volume, free allowance, price change, add-ons, 3 period kinds)."""
    root = tmp_path / "demo"
    workspace, files = rated_demo(root, 12, seed=3)
    events = []
    kinds = {meter.id: meter.kind for meter in workspace.catalog.rated_meters()}
    for line in files[0].read_text().splitlines():
        record = json.loads(line)
        start = datetime.fromisoformat(record.get("start") or record["at"])
        end = datetime.fromisoformat(record.get("end") or record["at"])
        events.append(
            Event(
                record["id"],
                record["org"],
                record["resource"],
                record["meter"],
                start,
                end,
                Decimal(record["quantity"]),
            )
        )
    for line in files[1].read_text().splitlines()[1:]:
        event_id, org, resource, meter, at, quantity = line.split(",")
        moment = datetime.fromisoformat(at).astimezone(UTC)
        events.append(Event(event_id, org, resource, meter, moment, moment, Decimal(quantity)))
    assert all(kinds[e.meter] for e in events)
    expected = rate_reference(
        events, workspace.catalog, workspace.customers, ZoneInfo("UTC"), (2026, 10)
    )
    actual = {
        (r["org"], r["period"], r["day"], r["meter"], r["resource"], r["band"]): (
            from_scaled_integer(int(r["quantity_micro"]), QUANTITY_SCALE),
            from_scaled_integer(int(r["amount_atto"]), AMOUNT_SCALE),
        )
        for r in lines_of(workspace, "2026-10")
    }
    assert len(actual) > 1000
    assert actual == expected


def test_rated_files_hold_exact_types_only(
    make_workspace: Callable[..., Workspace], tmp_path: Path
) -> None:
    """No float may slip into the money path, whatever the backend infers along the way."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    workspace = make_workspace(
        customers=[customer("acme", addons=[{"addon": "backup", "start": date(2026, 1, 1)}])]
    )
    records = [
        interval("a", "acme", "2026-11-01T10:00:00Z", "2026-11-03T10:00:00Z", "2.5"),
        {
            "id": "x",
            "org": "acme",
            "resource": "lb",
            "meter": "egress",
            "at": "2026-11-03T00:00:00Z",
            "quantity": "1234.5",
        },
    ]
    ingest(workspace, [write_jsonl(tmp_path / "u.jsonl", records)])
    rate_months(workspace, [Month(2026, 11)])
    folder = workspace.rated_dir / "month=2026-11"
    lines = pq.read_schema(folder / "lines.parquet")
    exact = pa.decimal128(38, 0)
    expected = {
        "quantity_micro": pa.int64(),
        "price_pico": exact,
        "amount_atto": exact,
        "line_usage_micro": pa.int64(),
        "line_seconds": pa.int64(),
        "event_count": pa.int64(),
    }
    assert {name: lines.field(name).type for name in expected} == expected
    assert pq.read_schema(folder / "totals.parquet").field("amount_atto").type == exact
    assert not any(pa.types.is_floating(field.type) for field in lines)


# Checksums of the rated lines below, as beanbill rated them before price bases existed
# (commit adeeb66): a per-second catalog must rate to the same lines, to the byte.
CHECKSUMS_BEFORE_PRICE_BASES = {
    ("acme", "2026-10"): "6fb1b2eb456d50068064d346ffffabe5",
    ("wk", "2026-W41"): "c0cc28a846e70495feee2950277a7d15",
    ("wk", "2026-W42"): "e0646d272b6cfc105adc77977126e48d",
    ("wk", "2026-W43"): "32441e03fced4debb9bb52db5c812069",
    ("wk", "2026-W44"): "243583b9e60a291712ab9071d34a3e85",
}


def test_a_per_second_catalog_rates_as_it_did_before_price_bases(
    make_workspace: Callable[..., Workspace], tmp_path: Path
) -> None:
    from beanbill.rating.rated_store import RatedStore

    workspace = make_workspace(
        catalog=per_second_catalog(),
        customers=[
            customer("acme", addons=[{"addon": "backup", "start": date(2026, 10, 20)}]),
            customer("wk", "weekly"),
        ],
    )
    events = [
        {"id": f"c{i}", "org": ("acme", "wk")[i % 2], "resource": f"app-{i % 3}", "meter": "cpu",
         "start": f"2026-10-{1 + i:02d}T{i % 24:02d}:17:00Z",
         "end": f"2026-10-{2 + i:02d}T03:00:09Z", "quantity": f"{1 + i * 0.37:.2f}"}
        for i in range(28)
    ] + [
        {"id": f"e{i}", "org": ("acme", "wk")[i % 2], "resource": "lb", "meter": "egress",
         "at": f"2026-10-{1 + i:02d}T12:00:00Z", "quantity": f"{37.123 * (i + 1):.3f}"}
        for i in range(30)
    ]  # fmt: skip
    ingest(workspace, [write_jsonl(tmp_path / "u.jsonl", events)])
    rate_months(workspace, [Month(2026, 10)])
    with RatedStore(workspace) as store:
        totals = store.closed_totals(Month(2026, 10), date(2026, 12, 1), False)
    assert {(t.org, t.period): t.checksum for t in totals} == CHECKSUMS_BEFORE_PRICE_BASES
    acme = next(t for t in totals if t.org == "acme")
    assert dict(acme.family_atto) == {
        "Addons": 3_832_258_064_516_129_032,
        "Compute": 31_780_222_021_944_000_000,
        "Network": 67_821_400_000_000_000_000,
    }

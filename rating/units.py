"""Price bases and invoice unit codes: what one catalog price is for, and how invoices name it.

A provider publishes a price per hour of a vCPU, per GB-month of storage, per million
requests. The catalog says so with a meter's ``per`` (its price basis), so the prices it
holds are the published numbers, exact: 0.025 per vCPU-hour rather than 0.0000069444 per
vCPU-second, which is not 0.025 / 3600 = 0.00000694444… Rating still bills every second:
a rated row's amount is ``quantity × price / basis_units``, rounded once (see
``rating.money``).

Usage is counted in the meter's rating unit (unit-seconds for interval meters, units for
counters); ``basis_units`` is how many of those one basis holds:

- interval meters: second 1, minute 60, hour 3,600, day 86,400, month 2,628,000. A month
  is 730 hours (8,760 h / 12), the average month Azure's price pages and the Google Cloud
  and AWS pricing calculators convert monthly prices with. It is a fixed length, not the
  calendar month's: a GB held for one hour costs the same in February as in March (AWS
  EBS, which prorates by the calendar month's days, is the exception, not the rule).
- counter meters: unit 1, thousand 1,000, million 1,000,000.

Unit codes are UN/ECE Recommendation 20 codes (the EN16931 unit code list, BR-CL-23),
as e-invoices carry them. ``UNIT_CODES`` holds the ones beanbill supports; a time code
(SEC … MON) measures an interval meter's usage, any other code counts a counter's units.
"""

from __future__ import annotations

from enum import StrEnum
from typing import NamedTuple

SECONDS_PER_MINUTE = 60
SECONDS_PER_HOUR = 3_600
SECONDS_PER_DAY = 86_400
SECONDS_PER_WEEK = 7 * SECONDS_PER_DAY
HOURS_PER_MONTH = 730  # 8,760 hours a year / 12
SECONDS_PER_MONTH = HOURS_PER_MONTH * SECONDS_PER_HOUR


class PriceBasis(StrEnum):
    """What one catalog price is for: one second, hour, … of a unit, or a unit, a million."""

    SECOND = "second"
    MINUTE = "minute"
    HOUR = "hour"
    DAY = "day"
    MONTH = "month"
    UNIT = "unit"
    THOUSAND = "thousand"
    MILLION = "million"


BASIS_UNITS: dict[PriceBasis, int] = {
    PriceBasis.SECOND: 1,
    PriceBasis.MINUTE: SECONDS_PER_MINUTE,
    PriceBasis.HOUR: SECONDS_PER_HOUR,
    PriceBasis.DAY: SECONDS_PER_DAY,
    PriceBasis.MONTH: SECONDS_PER_MONTH,
    PriceBasis.UNIT: 1,
    PriceBasis.THOUSAND: 1_000,
    PriceBasis.MILLION: 1_000_000,
}
INTERVAL_BASES = (
    PriceBasis.SECOND,
    PriceBasis.MINUTE,
    PriceBasis.HOUR,
    PriceBasis.DAY,
    PriceBasis.MONTH,
)
COUNTER_BASES = (PriceBasis.UNIT, PriceBasis.THOUSAND, PriceBasis.MILLION)
MAX_BASIS_UNITS = max(BASIS_UNITS.values())


class UnitCode(NamedTuple):
    """A UN/ECE Recommendation 20 code: its name, and its length when it measures time."""

    name: str
    seconds: int | None = None  # None: a quantity of things, not of time


UNIT_CODES: dict[str, UnitCode] = {
    "SEC": UnitCode("second", 1),
    "MIN": UnitCode("minute", SECONDS_PER_MINUTE),
    "HUR": UnitCode("hour", SECONDS_PER_HOUR),
    "DAY": UnitCode("day", SECONDS_PER_DAY),
    "WEE": UnitCode("week", SECONDS_PER_WEEK),
    "MON": UnitCode("month", SECONDS_PER_MONTH),
    "C62": UnitCode("one"),
    "H87": UnitCode("piece"),
    "EA": UnitCode("each"),
    "AD": UnitCode("byte"),
    "2P": UnitCode("kilobyte"),
    "4L": UnitCode("megabyte"),
    "E34": UnitCode("gigabyte"),
    "E35": UnitCode("terabyte"),
    "E36": UnitCode("petabyte"),
    "KWH": UnitCode("kilowatt hour"),
}
# The code a basis measures time in; a per-second price is invoiced per hour (HUR), as
# seconds make unreadable invoices and unit prices of more than six decimals.
TIME_UNIT_CODES: dict[PriceBasis, str] = {
    PriceBasis.SECOND: "HUR",
    PriceBasis.MINUTE: "MIN",
    PriceBasis.HOUR: "HUR",
    PriceBasis.DAY: "DAY",
    PriceBasis.MONTH: "MON",
}
# Units that measure (a size, an energy), each with its code; any other unit is counted (C62).
MEASURE_UNIT_CODES = {
    "B": "AD",
    "byte": "AD",
    "kB": "2P",
    "KB": "2P",
    "MB": "4L",
    "GB": "E34",
    "TB": "E35",
    "PB": "E36",
    "kWh": "KWH",
}
COUNT_UNIT_CODE = "C62"  # "one": a count of things
ADDON_UNIT_CODES = {"daily": "DAY", "weekly": "WEE", "monthly": "MON"}


def is_time_code(code: str) -> bool:
    return UNIT_CODES[code].seconds is not None


def default_unit_code(is_interval: bool, basis: PriceBasis, unit: str) -> str:
    """The code of an invoice line when the meter names none: its basis's time unit for an
    interval meter (vCPU per hour: HUR; GB per month: MON), its unit's for a counter."""
    if is_interval:
        return TIME_UNIT_CODES[basis]
    return MEASURE_UNIT_CODES.get(unit, COUNT_UNIT_CODE)

"""Fixed-point scales of every exact number in rating, and its one rounding point.

Rating never uses floats. Quantities, prices and amounts travel as integers of a
named scale, so the arithmetic in DuckDB (or any Ibis backend) is exact and
overflow raises instead of rounding:

- quantities in micro units (1e-6 of the meter's rating unit: unit-seconds for interval
  meters, units for counters),
- prices in pico currency units (1e-12) per price basis (``rating.units``: per second,
  hour, GB-month, million requests, ...), which holds any price of up to 10 decimals,
- amounts in atto currency units (1e-18).

Rounding point 1, the only one in rating: a rated row's amount is
``quantity_micro × price_pico / basis_units`` (basis_units = 3,600 for a price per hour,
1,000,000 for a price per million), computed exactly and rounded once, half to even, to
the atto (``amount_atto``). A per-second or per-unit price divides by 1: the product is
exact and nothing is rounded, as before price bases existed. Prorated add-ons round
their share the same way (``rounded_half_even``).

Rounding point 2, the only one that reaches money: the ledger rounds each posting's
family totals to the currency's minor unit (``ledger.rounding``).
"""

from __future__ import annotations

import functools
from decimal import Decimal
from fractions import Fraction

import babel.numbers

QUANTITY_SCALE = 6
PRICE_SCALE = 12
AMOUNT_SCALE = QUANTITY_SCALE + PRICE_SCALE
MAX_PRICE_DECIMALS = 10

QUANTITY_ONE_MICRO = 10**QUANTITY_SCALE
SECONDS_PER_DAY = 86_400
# The largest price per basis unit (10^9 currency units: a billion per vCPU-hour or per
# GB-month is no price, it is a typo); its pico form fits DECIMAL(38, 0) with room to
# multiply.
MAX_PRICE = Decimal(10**9)
# A free allowance or tier bound, in micro rating units, stays below this (4.6e12
# unit-seconds: 1,750 TB held for a 730-hour month); usage itself may go to the int64 limit.
MAX_BOUND_MICRO = 2**62


def to_scaled_integer(value: Decimal, scale: int) -> int:
    """Return ``value × 10**scale`` as an int; refuse any digit the scale cannot hold.

    Through ``Fraction``: ``Decimal.scaleb`` would round to the context's 28 digits."""
    if not value.is_finite():
        raise ValueError(f"{value} is not a finite number")
    scaled = Fraction(value) * 10**scale
    if scaled.denominator != 1:
        raise ValueError(f"{value} has more than {scale} decimal places")
    return int(scaled)


def plain_scaled(value: int, scale: int) -> Decimal:
    """``from_scaled_integer`` without trailing zeros (1500 at scale 3 → 1.5), exactly:
    ``Decimal.normalize`` would round to the context's 28 digits."""
    while scale > 0 and value % 10 == 0:
        value //= 10
        scale -= 1
    return from_scaled_integer(value, scale)


def from_scaled_integer(value: int, scale: int) -> Decimal:
    """Return the exact Decimal of an integer of the given scale, whatever its digits.

    Built from text: ``Decimal.scaleb`` would round to the context's 28 digits, and an
    amount in atto has 28 digits from 10 billion on."""
    return Decimal(f"{value}E{-scale}")


def rounded_half_even(numerator: int, denominator: int) -> int:
    """numerator / denominator rounded half to even, for a positive denominator."""
    if denominator <= 0:
        raise ValueError(f"denominator {denominator} must be positive")
    quotient, remainder = divmod(numerator, denominator)
    if 2 * remainder > denominator or (2 * remainder == denominator and quotient % 2):
        quotient += 1
    return quotient


def amount_atto(quantity_micro: int, price_pico: int, basis_units: int) -> int:
    """A rated row's amount: ``quantity × price / basis_units``, exact, then rounded once,
    half to even, to the atto. The rating engine computes the same in the backend."""
    return rounded_half_even(quantity_micro * price_pico, basis_units)


def decimal_places(value: Decimal) -> int:
    exponent = value.normalize().as_tuple().exponent
    if not isinstance(exponent, int):
        raise ValueError(f"{value} is not a finite number")
    return max(0, -exponent)


# ISO 4217 codes that name no currency an invoice can be paid in: precious metals, bond
# market units, SDR, settlement and fund codes, testing and "no currency".
NOT_INVOICEABLE = frozenset(
    {
        "XAU",
        "XAG",
        "XPD",
        "XPT",
        "XBA",
        "XBB",
        "XBC",
        "XBD",
        "XDR",
        "XSU",
        "XUA",
        "XTS",
        "XXX",
        "BOV",
        "CHE",
        "CHW",
        "CLF",
        "COU",
        "MXV",
        "USN",
        "UYI",
        "UYW",
    }
)


def is_invoiceable_currency(code: str) -> bool:
    """An ISO 4217 currency known to CLDR (through Babel) that money can be paid in."""
    return babel.numbers.is_currency(code) and code not in NOT_INVOICEABLE


@functools.cache
def currency_digits(code: str) -> int:
    """Minor units of an ISO 4217 currency (Babel's CLDR data: JPY 0, EUR 2, KWD 3)."""
    if not is_invoiceable_currency(code):
        raise ValueError(f"{code} is not an ISO 4217 currency beanbill can invoice in")
    return int(babel.numbers.get_currency_precision(code))

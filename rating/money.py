"""Fixed-point scales of every exact number in rating.

Rating never uses floats. Quantities, prices and amounts travel as integers of a
named scale, so the arithmetic in DuckDB (or any Ibis backend) is exact and
overflow raises instead of rounding:

- quantities in micro units (1e-6 of the meter's unit),
- prices in pico currency units (1e-12), which holds any price of up to 10 decimals,
- amounts in atto currency units (1e-18) = micro quantity × pico price.

Rounding to the currency's minor unit happens later, in the ledger, at a named point.
"""

from __future__ import annotations

import functools
from decimal import Decimal

import babel.numbers

QUANTITY_SCALE = 6
PRICE_SCALE = 12
AMOUNT_SCALE = QUANTITY_SCALE + PRICE_SCALE
MAX_PRICE_DECIMALS = 10

QUANTITY_ONE_MICRO = 10**QUANTITY_SCALE
SECONDS_PER_DAY = 86_400


def to_scaled_integer(value: Decimal, scale: int) -> int:
    """Return ``value × 10**scale`` as an int; refuse any digit the scale cannot hold."""
    scaled = value.scaleb(scale)
    if scaled != scaled.to_integral_value():
        raise ValueError(f"{value} has more than {scale} decimal places")
    return int(scaled)


def from_scaled_integer(value: int, scale: int) -> Decimal:
    """Return the exact Decimal of an integer of the given scale."""
    return Decimal(value).scaleb(-scale)


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

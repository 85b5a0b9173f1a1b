"""The named rounding points of beanbill.

Rated amounts keep full precision (atto currency units). They are rounded to minor
units once per ledger posting with ``POSTING_ROUNDING`` (half-even). Detail lines that
explain a posting are then allocated by largest remainder, so they sum exactly to it.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import ROUND_FLOOR, ROUND_HALF_EVEN, Decimal, localcontext

from beanbill.rating.money import AMOUNT_SCALE, from_scaled_integer, rounded_half_even

POSTING_ROUNDING = ROUND_HALF_EVEN


# Enough digits for any amount in minor units with its full fraction (38 + 18).
EXACT_PRECISION = 60


def to_minor(amount_atto: int, minor_digits: int) -> Decimal:
    """The exact amount in minor units (a Decimal, usually with a fraction)."""
    return from_scaled_integer(amount_atto, AMOUNT_SCALE - minor_digits)


def round_posting(amount_atto: int, minor_digits: int) -> int:
    """Round a posting's full-precision amount to minor units, half-even (integers only)."""
    assert POSTING_ROUNDING == ROUND_HALF_EVEN
    return rounded_half_even(amount_atto, 10 ** (AMOUNT_SCALE - minor_digits))


def allocate_largest_remainder(total_minor: int, exact_minor: Sequence[Decimal]) -> list[int]:
    """Integer shares of ``total_minor`` closest to ``exact_minor``, summing exactly to it.

    Each share starts at the floor of its exact value; the units left over go one each to
    the largest fractional remainders, ties to the earlier line. Deterministic for a given
    line order. Requires floor-sum <= total <= ceiling-sum, which rounding the exact sum
    (any mode) guarantees.
    """
    with localcontext() as context:
        context.prec = EXACT_PRECISION  # the differences below stay exact
        return _allocate(total_minor, exact_minor)


def _allocate(total_minor: int, exact_minor: Sequence[Decimal]) -> list[int]:
    floors = [int(value.to_integral_value(rounding=ROUND_FLOOR)) for value in exact_minor]
    left = total_minor - sum(floors)
    fractional = sum(1 for value, floor in zip(exact_minor, floors, strict=True) if value != floor)
    if not 0 <= left <= fractional:
        raise ValueError(f"cannot allocate {total_minor} over lines that sum to {sum(exact_minor)}")
    order = sorted(
        range(len(floors)), key=lambda index: (-(exact_minor[index] - floors[index]), index)
    )
    shares = list(floors)
    for index in order[:left]:
        shares[index] += 1
    return shares

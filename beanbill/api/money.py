"""Money and quantities in JSON: exact, never floats.

Ledger amounts travel twice: as an integer of minor units (``total_minor: 438``) for
programs, and as an exact decimal string (``total: "4.38"``) for people and for
languages whose JSON numbers are floats. Rated amounts (atto units: 18 decimals) and
quantities (micro units) are decimal strings only: their integers exceed what a double
holds exactly.
"""

from __future__ import annotations

from beanbill.ledger.entries import format_minor
from beanbill.rating.money import AMOUNT_SCALE, QUANTITY_SCALE, plain_scaled

DECIMAL_PATTERN = r"^-?\d+(\.\d+)?$"


def minor_text(amount_minor: int, currency: str) -> str:
    """``438`` EUR → ``"4.38"``; ``5`` JPY → ``"5"``."""
    return format_minor(amount_minor, currency)


def atto_text(amount_atto: int) -> str:
    """A rated amount, exactly, without trailing zeros: ``4999936000000000000`` → ``"4.999936"``."""
    return _plain(amount_atto, AMOUNT_SCALE)


def micro_text(quantity_micro: int) -> str:
    """A rated quantity, exactly: ``250500000`` → ``"250.5"``."""
    return _plain(quantity_micro, QUANTITY_SCALE)


def _plain(value: int, scale: int) -> str:
    return f"{plain_scaled(value, scale):f}"

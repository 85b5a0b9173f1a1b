"""Invoice lines from rated detail: quantities and prices in invoice units, amounts exact.

Pure functions. A posting's detail comes from the rated store as groups (one per meter,
resource, band and price); each family's groups are allocated the family's posted amount
by largest remainder, so the lines add up to the ledger exactly — and the rated detail
must still add up to the posting's ``rated-amount`` to the last digit, or the invoice is
refused (the posting would need ``post --correct`` first).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from decimal import ROUND_HALF_EVEN, Decimal
from typing import NamedTuple

from beanbill.ledger.invoicing import InvoicingError
from beanbill.ledger.invoicing.due import Consumption
from beanbill.ledger.rounding import allocate_largest_remainder, to_minor
from beanbill.rating.config import Catalog, Meter, MeterKind
from beanbill.rating.money import PRICE_SCALE, QUANTITY_SCALE
from beanbill.rating.rated_store import RatedGroup

QUANTITY_DECIMALS = Decimal("0.0001")
PRICE_DECIMALS = Decimal("0.000001")  # BR-FR-DEC-03: at most six decimals on an e-invoice
UNIT_CODES = {"GB": "E34", "vCPU": "HUR", "hour": "HUR"}  # UN/ECE Rec 20
DEFAULT_UNIT_CODE = "C62"  # "one"
HOUR_UNIT_CODE = "HUR"
SECONDS_PER_HOUR = 3600
MAX_BASE_EXPONENT = 6


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


def plain(value: Decimal) -> Decimal:
    """Without exponent or trailing zeros: 1E+2 → 100, 2.500 → 2.5 (XML decimals)."""
    return Decimal(format(value.normalize(), "f"))


def price_per_base(price: Decimal) -> tuple[Decimal, Decimal]:
    """(unit price, base quantity) with at most six decimals (BR-FR-DEC-03), exact if possible.

    0.0000004 per request becomes 0.0004 per 1,000 requests rather than 0.000000.
    """
    for exponent in range(MAX_BASE_EXPONENT + 1):
        scaled = price.scaleb(exponent)
        if scaled == scaled.quantize(PRICE_DECIMALS):
            return plain(scaled.quantize(PRICE_DECIMALS)), Decimal(10) ** exponent
    scaled = price.scaleb(MAX_BASE_EXPONENT)
    rounded = scaled.quantize(PRICE_DECIMALS, rounding=ROUND_HALF_EVEN)
    return plain(rounded), Decimal(10) ** MAX_BASE_EXPONENT


def line_quantity(
    meter: Meter | None, quantity_micro: int, price_pico: int
) -> tuple[Decimal, str, Decimal, Decimal]:
    """(quantity, unit code, unit price, base quantity); per-second meters are priced per hour."""
    quantity = Decimal(quantity_micro).scaleb(-QUANTITY_SCALE)
    price = Decimal(price_pico).scaleb(-PRICE_SCALE)
    if meter is not None and meter.kind is MeterKind.INTERVAL:
        hours = (quantity / SECONDS_PER_HOUR).quantize(QUANTITY_DECIMALS, rounding=ROUND_HALF_EVEN)
        unit_price, base = price_per_base(price * SECONDS_PER_HOUR)
        return plain(hours), HOUR_UNIT_CODE, unit_price, base
    unit = UNIT_CODES.get(meter.unit if meter else "", DEFAULT_UNIT_CODE)
    unit_price, base = price_per_base(price)
    return plain(quantity), unit, unit_price, base


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
            quantity, unit, price, base = line_quantity(
                meters.get(row.meter), row.quantity_micro, row.price_pico
            )
            label = f"{names.get(row.meter, row.meter)} - {row.resource}"
            if row.is_free:
                label += " (free allowance)"
            result.append(DetailLine(family, label, quantity, unit, price, base, share))
    return result

"""Coupons: negative lines for the discounts a customer's coupons give on one invoice."""

from __future__ import annotations

from datetime import timedelta
from decimal import ROUND_HALF_EVEN, Decimal

from beanbill.ledger.invoicing.documents import InvoiceLine
from beanbill.ledger.invoicing.due import DueInvoice
from beanbill.ledger.invoicing.lines import DEFAULT_UNIT_CODE, plain


def coupon_lines(
    due: DueInvoice,
    lines: list[InvoiceLine],
    families: list[str],
    unbilled_minor: int,
    digits: int,
) -> list[InvoiceLine]:
    """Negative lines for the customer's coupons valid in the period, in their listed order.

    A percentage is of the lines of its family (or all), rounded half-even once; a fixed
    amount is at most that base. Discounts never exceed what credits left to pay: prepaid
    credits already settled the rest.
    """
    last_day = due.period_end - timedelta(days=1)
    left = unbilled_minor
    result: list[InvoiceLine] = []
    for coupon in due.customer.coupons:
        if not coupon.applies_to(due.period_start, last_day) or left <= 0:
            continue
        base = sum(
            line.net_minor
            for line, family in zip(lines, families, strict=True)
            if coupon.family is None or coupon.family == family
        )
        if coupon.percent is not None:
            wanted = int((Decimal(base) * coupon.percent / 100).to_integral_value(ROUND_HALF_EVEN))
            label = (
                f"Discount {coupon.id}: {plain(coupon.percent)} % of {coupon.family or 'all usage'}"
            )
        else:
            wanted = min(base, int((coupon.amount or Decimal(0)).scaleb(digits)))
            label = f"Discount {coupon.id} on {coupon.family or 'all usage'}"
        amount = min(wanted, left)
        if amount <= 0:
            continue
        left -= amount
        # BR-27: a net price is never negative; a discount line has quantity -1 instead.
        price = Decimal(amount).scaleb(-digits)
        result.append(
            InvoiceLine(
                "0", label, Decimal(-1), DEFAULT_UNIT_CODE, price, Decimal(1), -amount, lines[0].vat
            )
        )
    return result

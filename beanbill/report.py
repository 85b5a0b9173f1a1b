"""Human-readable summaries of rated output (display only: the exact data is in Parquet)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from decimal import ROUND_HALF_EVEN, Decimal

from beanbill.rating.money import AMOUNT_SCALE, from_scaled_integer
from beanbill.rating.periods import Month
from beanbill.rating.rated_store import RatedStore
from beanbill.rating.workspace import Workspace

DISPLAY_QUANTUM = Decimal("0.01")
LARGEST_SHOWN = 8


def _display(amount_atto: int | Decimal | None) -> str:
    amount = from_scaled_integer(int(amount_atto or 0), AMOUNT_SCALE)
    return f"{amount.quantize(DISPLAY_QUANTUM, rounding=ROUND_HALF_EVEN):>14,}"


NUMBER = re.compile(r"^\s*-?[\d,]+(\.\d+)?$")


def _is_number(cell: str) -> bool:
    return NUMBER.fullmatch(cell) is not None


def _table(title: str, header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> str:
    """A plain-text table: numbers (and their headers) right-aligned, text left-aligned."""
    widths = [max(len(row[i].strip()) for row in [header, *rows]) for i in range(len(header))]
    numeric = [any(_is_number(row[i]) for row in rows) for i in range(len(header))]

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(
            cell.strip().rjust(width) if right else cell.strip().ljust(width)
            for cell, width, right in zip(cells, widths, numeric, strict=True)
        ).rstrip()

    separator = "  ".join("-" * width for width in widths)
    return "\n".join([title, line(header), separator, *(line(row) for row in rows)])


def render_summary(workspace: Workspace, month: Month) -> str:
    with RatedStore(workspace) as store:
        summary = store.month_summary(month, LARGEST_SHOWN)
    currency = workspace.settings.billing.currency
    grand = sum(row.amount_atto for row in summary.by_family)
    family_rows = [
        (row.label, f"{row.organizations:,}", f"{row.periods:,}", _display(row.amount_atto))
        for row in summary.by_family
    ]
    family_rows.append(("Total", "", "", _display(grand)))
    parts = [
        _table(
            f"\nRated {month.key} by product family ({currency}, rounded half-even for display)",
            ("family", "orgs", "periods", "amount"),
            family_rows,
        ),
        _table(
            "\nBy billing period",
            ("period", "orgs", "periods", "amount"),
            [
                (row.label, f"{row.organizations:,}", f"{row.periods:,}", _display(row.amount_atto))
                for row in summary.by_billing_period
            ],
        ),
        _table(
            f"\nLargest {LARGEST_SHOWN} organizations",
            ("org", "amount"),
            [(org, _display(total)) for org, total in summary.largest],
        ),
    ]
    return "\n".join(parts)

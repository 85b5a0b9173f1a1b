"""Human-readable summaries of rated output (display only: the exact data is in Parquet)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from decimal import ROUND_HALF_EVEN, Decimal

import duckdb

from beanbill.rating.errors import RatingError
from beanbill.rating.money import AMOUNT_SCALE, from_scaled_integer
from beanbill.rating.periods import Month
from beanbill.rating.workspace import Workspace

DISPLAY_QUANTUM = Decimal("0.01")
LARGEST_SHOWN = 8


def _display(amount_atto: int | Decimal | None) -> str:
    amount = from_scaled_integer(int(amount_atto or 0), AMOUNT_SCALE)
    return f"{amount.quantize(DISPLAY_QUANTUM, rounding=ROUND_HALF_EVEN):>14,}"


NUMBER = re.compile(r"^\s*-?[\d,]+(\.\d+)?$")


def _is_number(cell: str) -> bool:
    return NUMBER.match(cell) is not None


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
    totals = workspace.rated_dir / f"month={month.key}" / "totals.parquet"
    if not totals.exists():
        raise RatingError(f"{month.key} is not rated yet: run `beanbill rate --period {month.key}`")
    source = f"read_parquet('{totals}')"
    connection = duckdb.connect()
    currency = workspace.settings.billing.currency
    by_family = connection.execute(
        f"SELECT family, count(DISTINCT org), count(DISTINCT org || period), sum(amount_atto) "
        f"FROM {source} GROUP BY family ORDER BY family"
    ).fetchall()
    by_kind = connection.execute(
        "SELECT billing_period, count(DISTINCT org), count(DISTINCT org || period), "
        f"sum(amount_atto) FROM {source} GROUP BY billing_period ORDER BY billing_period"
    ).fetchall()
    largest = connection.execute(
        f"SELECT org, sum(amount_atto) AS total FROM {source} GROUP BY org "
        f"ORDER BY total DESC, org LIMIT {LARGEST_SHOWN}"
    ).fetchall()
    grand = sum((Decimal(row[3]) for row in by_family), Decimal(0))
    family_rows = [(str(f), f"{o:,}", f"{p:,}", _display(a)) for f, o, p, a in by_family]
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
            [(str(k), f"{o:,}", f"{p:,}", _display(a)) for k, o, p, a in by_kind],
        ),
        _table(
            f"\nLargest {LARGEST_SHOWN} organizations",
            ("org", "amount"),
            [(str(org), _display(total)) for org, total in largest],
        ),
    ]
    return "\n".join(parts)

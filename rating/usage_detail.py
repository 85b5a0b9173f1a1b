"""One organization's rated usage by product family, meter, resource and day (a drill-down).

Read from the rated lines of one month (``rated_store.lines_path``, through the store's
own bounded connection), for the billing periods the caller names, so that the customer
API shows closed periods exactly as they were rated. Rows are summed over pricing bands
and prices: what a customer reads is what a resource used and cost on a day.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import NamedTuple

from beanbill.rating.errors import RatingError
from beanbill.rating.periods import Month
from beanbill.rating.rated_store import RatedStore, lines_path

MAX_DETAIL_ROWS = 200_000  # one organization's month: resources × days, bounded

_DETAIL_SQL = """
SELECT period, period_start, period_end, family, meter, unit, resource, day,
       sum(quantity_micro) AS quantity_micro,
       sum(amount_atto)::HUGEINT AS amount_atto  -- a Python int, not a Decimal to convert
FROM read_parquet($path)
WHERE org = $org AND list_contains($periods, period)
GROUP BY ALL
ORDER BY period, family, meter, resource, day
LIMIT $limit
"""


class UsageDay(NamedTuple):
    """What one resource used on one meter on one day of a billing period, and its cost."""

    period: str
    period_start: date
    period_end: date  # exclusive
    family: str
    meter: str
    unit: str
    resource: str
    day: date
    quantity_micro: int  # unit-seconds for interval meters, units for counters
    amount_atto: int


def usage_days(
    store: RatedStore,
    month: Month,
    org: str,
    periods: Sequence[str],
    path: Path | None = None,
) -> list[UsageDay]:
    """``org``'s rated usage of ``periods`` (billing periods starting in ``month``), per
    family, meter, resource and day, in that order. Empty when the month is not rated.

    ``path``: another file of rated lines of ``month`` (the provisional rating of open
    periods, same schema); default the rated store's."""
    path = path or lines_path(store.workspace, month)
    if not periods or not path.is_file():
        return []
    parameters = {
        "path": str(path),
        "org": org,
        "periods": list(periods),
        "limit": MAX_DETAIL_ROWS + 1,
    }
    rows = store.connection.execute(_DETAIL_SQL, parameters).fetchall()
    if len(rows) > MAX_DETAIL_ROWS:
        raise RatingError(
            f"{org} has more than {MAX_DETAIL_ROWS:,} rated resource-days in {month.key}: "
            "ask for fewer periods"
        )
    return [
        UsageDay(
            period=str(row[0]),
            period_start=row[1],
            period_end=row[2],
            family=str(row[3]),
            meter=str(row[4]),
            unit=str(row[5]),
            resource=str(row[6]),
            day=row[7],
            quantity_micro=int(row[8]),
            amount_atto=int(row[9]),
        )
        for row in rows
    ]

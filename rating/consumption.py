"""What each organization consumed over a window of days, from rated lines: closed periods
as rated, open ones as provisionally rated (``rate --open``), never both for one period.

The CRM's "last 30 days' consumption" reads it: a figure across billing periods, so it is
read from the lines' days rather than from any invoice.
"""

from __future__ import annotations

from datetime import date

from beanbill.rating.money import AMOUNT_SCALE, rounded_half_even
from beanbill.rating.periods import Month
from beanbill.rating.provisional import provisional_lines_path
from beanbill.rating.rated_store import RatedStore, lines_path
from beanbill.rating.storage import sql_string

MAX_WINDOW_DAYS = 366

_FINAL_SQL = "SELECT org, day, period, amount_atto FROM read_parquet({path})"
_EMPTY_SQL = (
    "SELECT NULL::VARCHAR AS org, NULL::DATE AS day, NULL::VARCHAR AS period, "
    "NULL::HUGEINT AS amount_atto WHERE false"
)


def _months(first_day: date, last_day: date) -> list[Month]:
    """The months whose periods can hold a day of the window: a period starting in the
    month before the window's first day (a week, a month) may reach into it."""
    month = Month(first_day.year, first_day.month).previous()
    last = Month(last_day.year, last_day.month)
    months = []
    while month.key <= last.key:
        months.append(month)
        month = month.next()
    return months


def consumption_atto(store: RatedStore, first_day: date, last_day: date) -> dict[str, int]:
    """Organization → rated amount (atto units, VAT excluded) of the days from
    ``first_day`` to ``last_day`` included."""
    if last_day < first_day or (last_day - first_day).days >= MAX_WINDOW_DAYS:
        raise ValueError(f"a window of {first_day} to {last_day}: at most {MAX_WINDOW_DAYS} days")
    parts = []
    for month in _months(first_day, last_day):
        final = lines_path(store.workspace, month)
        provisional = provisional_lines_path(store.workspace, month)
        final_sql = _FINAL_SQL.format(path=sql_string(final)) if final.is_file() else _EMPTY_SQL
        parts.append(final_sql)
        if provisional.is_file():
            parts.append(
                f"SELECT * FROM ({_FINAL_SQL.format(path=sql_string(provisional))}) "
                f"WHERE period NOT IN (SELECT period FROM ({final_sql}) WHERE period IS NOT NULL)"
            )
    if not parts:
        return {}
    query = (
        "SELECT org, sum(amount_atto)::HUGEINT FROM ("
        + " UNION ALL ".join(parts)
        + ") WHERE day BETWEEN $first AND $last GROUP BY org ORDER BY org"
    )
    rows = store.connection.execute(query, {"first": first_day, "last": last_day}).fetchall()
    return {str(org): int(amount) for org, amount in rows}


def atto_to_minor(amount_atto: int, digits: int) -> int:
    """Rounded half to even at the currency's minor unit: the named rounding point of a
    figure shown (never posted)."""
    return rounded_half_even(amount_atto, 10 ** (AMOUNT_SCALE - digits))

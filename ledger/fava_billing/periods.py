"""The dates and months a billing page is about: its date, and the months it spans.

Every page shows the books *as at* one day (``page_date``): what is owed, held or
unbilled that day. The revenue page adds a range of calendar months, written
``YYYY-MM`` as Beancount users and the ``period`` metadata write them.
"""

from __future__ import annotations

from datetime import date, timedelta

MONTHS_SHOWN_BY_DEFAULT = 12


def page_date(argument: str | None, filter_end: date | None, today: date) -> date:
    """The date the page is as at: ``?as-of=``, else the last day of Fava's time filter,
    else today. An invoice is overdue, aged, a lot expiring, relative to it."""
    if argument:
        try:
            return date.fromisoformat(argument)
        except ValueError:
            pass
    return filter_end or today


def month_of(day: date) -> str:
    """The calendar month of ``day`` as ``YYYY-MM``."""
    return f"{day.year:04d}-{day.month:02d}"


def parse_month(text: str | None) -> str | None:
    """A ``YYYY-MM`` query parameter, or None when absent or malformed (ignored, as a
    malformed ``as-of`` is: a filter never breaks the page)."""
    if not text:
        return None
    try:
        return month_of(date.fromisoformat(f"{text}-01"))
    except ValueError:
        return None


def months_between(first: str, last: str) -> list[str]:
    """Every month from ``first`` to ``last`` inclusive (empty when ``first`` is later)."""
    year, month = (int(part) for part in first.split("-"))
    months = []
    while month_of(date(year, month, 1)) <= last:
        months.append(month_of(date(year, month, 1)))
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return months


def months_before(last: str, count: int) -> str:
    """The month ``count - 1`` months before ``last``: the first of ``count`` months."""
    year, month = (int(part) for part in last.split("-"))
    index = year * 12 + month - 1 - (count - 1)
    return month_of(date(index // 12, index % 12 + 1, 1))


def within_days(day: date, start: date, days: int) -> bool:
    """True when ``day`` falls in the ``days`` days that begin with ``start``."""
    return start <= day < start + timedelta(days=days)

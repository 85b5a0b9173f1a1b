"""Calendar arithmetic for billing periods, in the workspace's period time zone.

Everything the rating expressions need about the calendar is computed here, in plain
Python, and handed to the backend as small tables (days, zone offsets). That keeps
time-zone rules out of backend SQL: the same Ibis expression runs on DuckDB or Spark.

A billing period belongs to the calendar month in which it starts: ``--period 2026-11``
rates every monthly, weekly and daily period that starts in November 2026, even a
week that ends in December.
"""

from __future__ import annotations

import re
import zoneinfo
from datetime import UTC, date, datetime, timedelta
from typing import NamedTuple

from beanbill.rating.config import BillingPeriod
from beanbill.rating.errors import PeriodError
from beanbill.rating.money import SECONDS_PER_DAY

EPOCH_DATE = date(1970, 1, 1)
MONTH_PATTERN = re.compile(r"^(\d{4})-(\d{2})$")
MAX_MONTHS_PER_RANGE = 120


class Month(NamedTuple):
    year: int
    month: int

    @property
    def key(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"

    @property
    def first_day(self) -> date:
        return date(self.year, self.month, 1)

    def next(self) -> Month:
        return Month(self.year + self.month // 12, self.month % 12 + 1)

    def previous(self) -> Month:
        return Month(self.year - (self.month == 1), (self.month - 2) % 12 + 1)

    @classmethod
    def of(cls, day: date) -> Month:
        return cls(day.year, day.month)

    @classmethod
    def parse(cls, text: str) -> Month:
        match = MONTH_PATTERN.fullmatch(text.strip())
        if match is None or not 1 <= int(match.group(2)) <= 12:
            raise PeriodError(f"{text!r} is not a month: write YYYY-MM, e.g. 2026-11")
        return cls(int(match.group(1)), int(match.group(2)))


def parse_month_range(text: str) -> list[Month]:
    """'2026-11' or '2026-09..2026-11' (inclusive) → the months, oldest first."""
    first_text, separator, last_text = text.partition("..")
    first = Month.parse(first_text)
    last = Month.parse(last_text) if separator else first
    if last < first:
        raise PeriodError(f"{text!r}: the range ends before it starts")
    months = [first]
    while months[-1] < last:
        months.append(months[-1].next())
        if len(months) > MAX_MONTHS_PER_RANGE:
            raise PeriodError(f"{text!r}: more than {MAX_MONTHS_PER_RANGE} months at once")
    return months


class Period(NamedTuple):
    """One billing period: [start, end) in days of the period time zone."""

    kind: BillingPeriod
    key: str
    start: date
    end: date


def period_of(kind: BillingPeriod, day: date) -> Period:
    if kind is BillingPeriod.DAILY:
        return Period(kind, day.isoformat(), day, day + timedelta(days=1))
    if kind is BillingPeriod.WEEKLY:
        start = day - timedelta(days=day.weekday())
        year, week, _ = start.isocalendar()
        return Period(kind, f"{year:04d}-W{week:02d}", start, start + timedelta(days=7))
    month = Month.of(day)
    return Period(kind, month.key, month.first_day, month.next().first_day)


def periods_starting_in(kind: BillingPeriod, month: Month) -> list[Period]:
    day = month.first_day
    end = month.next().first_day
    periods: list[Period] = []
    while day < end:
        period = period_of(kind, day)
        if period.start == day:
            periods.append(period)
            day = period.end
        else:
            day = period.end
    return periods


def day_index(day: date) -> int:
    return (day - EPOCH_DATE).days


def local_midnight_epoch(day: date, zone: zoneinfo.ZoneInfo) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=zone).timestamp())


def utc_offset_seconds(epoch_seconds: int, zone: zoneinfo.ZoneInfo) -> int:
    offset = datetime.fromtimestamp(epoch_seconds, tz=UTC).astimezone(zone).utcoffset()
    return int(offset.total_seconds()) if offset is not None else 0


class OffsetChange(NamedTuple):
    """From ``since_epoch`` on, local time = UTC + ``offset_seconds``."""

    since_epoch: int
    offset_seconds: int


def offset_changes(zone: zoneinfo.ZoneInfo, first_day: date, end_day: date) -> list[OffsetChange]:
    """The zone's UTC offsets over [first_day - 1, end_day + 1], as a step function.

    The first entry starts at epoch 0 so every instant has an offset; a day on which
    the offset changes is bisected to the exact second of the change.
    """
    start = local_midnight_epoch(first_day - timedelta(days=1), zone)
    stop = local_midnight_epoch(end_day + timedelta(days=1), zone)
    changes = [OffsetChange(0, utc_offset_seconds(start, zone))]
    cursor = start
    while cursor < stop:
        following = cursor + SECONDS_PER_DAY
        if utc_offset_seconds(following, zone) != changes[-1].offset_seconds:
            low, high = cursor, following
            while high - low > 1:
                middle = (low + high) // 2
                if utc_offset_seconds(middle, zone) == changes[-1].offset_seconds:
                    low = middle
                else:
                    high = middle
            changes.append(OffsetChange(high, utc_offset_seconds(high, zone)))
        cursor = following
    return changes


class DayRow(NamedTuple):
    """One local day and the billing period it belongs to, for each kind of period."""

    day_index: int
    day: date
    start_epoch: int
    end_epoch: int
    monthly: Period
    weekly: Period
    daily: Period


def day_rows(zone: zoneinfo.ZoneInfo, first_day: date, end_day: date) -> list[DayRow]:
    rows: list[DayRow] = []
    day = first_day
    while day < end_day:
        following = day + timedelta(days=1)
        rows.append(
            DayRow(
                day_index=day_index(day),
                day=day,
                start_epoch=local_midnight_epoch(day, zone),
                end_epoch=local_midnight_epoch(following, zone),
                monthly=period_of(BillingPeriod.MONTHLY, day),
                weekly=period_of(BillingPeriod.WEEKLY, day),
                daily=period_of(BillingPeriod.DAILY, day),
            )
        )
        day = following
    return rows


def rating_window(month: Month) -> tuple[date, date]:
    """Days to rate for periods starting in ``month``: a week may run into the next month."""
    end = month.next().first_day
    last_weekly = periods_starting_in(BillingPeriod.WEEKLY, month)
    if last_weekly:
        end = max(end, last_weekly[-1].end)
    return month.first_day, end
